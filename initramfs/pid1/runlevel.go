package pid1

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/locus-ssi/locus/services/events"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/locusd"
)

// service is a daemon init started for a run level, so it can be stopped
// when the node comes down through that level.
type service struct {
	level  int
	name   string
	cancel context.CancelFunc
	done   chan struct{}
}

// localStatus asks this node's daemon for its membership view (the
// status alone: the whole cluster view would have the daemon ask every
// node for its own, every second).
func (n *Node) localStatus(ctx context.Context) (clms.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var st clms.Status
	err := n.daemon.Get(ctx, "/v1/cluster/status", &st)
	return st, err
}

// clusterRunLevel asks this node's daemon for the cluster's run level.
func (n *Node) clusterRunLevel(ctx context.Context) (int, bool) {
	st, err := n.localStatus(ctx)
	if err != nil || st.RunLevel < 1 || st.RunLevel > 5 {
		return 0, false
	}
	return st.RunLevel, true
}

// climbToRunLevel brings the node to the cluster's run level (the spec's
// when the node has no membership): every node climbs on its own, in
// parallel with the others; the master counts it Up once it got there.
func (n *Node) climbToRunLevel(ctx context.Context) error {
	target, ok := n.clusterRunLevel(ctx)
	if !ok {
		target = n.spec.RunLevel
	}
	return n.changeLevel(ctx, target)
}

// changeLevel climbs (starting each level's services in order: oneshots
// must exit 0, daemons are kept running) or comes down (stopping the
// daemons of each level above target, the last started first).
func (n *Node) changeLevel(ctx context.Context, target int) error {
	for level := n.RunLevel() + 1; level <= target; level++ {
		for _, sv := range n.spec.ServicesFor(n.Number(), level) {
			if err := n.startService(ctx, level, sv); err != nil {
				return err
			}
		}
		n.setRunLevel(level)
	}
	for level := n.RunLevel(); level > target; level-- {
		n.stopServices(level)
		n.setRunLevel(level - 1)
	}
	return nil
}

func (n *Node) startService(ctx context.Context, level int, sv clusterspec.Service) error {
	if sv.Oneshot {
		cmd := commandIn(ctx, n.Root(), sv.Command)
		cmd.Env = Env()
		con := consoleFile()
		cmd.Stdout, cmd.Stderr = con, con
		err := n.procs.Run(cmd)
		con.Close()
		if err != nil {
			return fmt.Errorf("run level %d: service %s: %w", level, sv.Name, err)
		}
		n.publish(events.Event{Kind: events.ServiceStopped, Name: sv.Name, Level: level, Detail: "oneshot done"})
		n.log.Info("service done", "service", sv.Name, "level", level)
		return nil
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := service{level: level, name: sv.Name, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		n.procs.Daemon(sctx, n.log, sv.Name, n.Root(), sv.Command, Env())
	}()
	n.mu.Lock()
	n.services = append(n.services, s)
	n.mu.Unlock()
	n.publish(events.Event{Kind: events.ServiceStarted, Name: sv.Name, Level: level})
	n.log.Info("service started", "service", sv.Name, "level", level)
	return nil
}

// stopServices stops the daemons of level, the last started first, each
// with SIGTERM and, after 5 s, SIGKILL.
func (n *Node) stopServices(level int) {
	n.mu.Lock()
	var stop []service
	keep := n.services[:0]
	for _, s := range n.services {
		if s.level == level {
			stop = append(stop, s)
		} else {
			keep = append(keep, s)
		}
	}
	n.services = keep
	n.mu.Unlock()
	for i := len(stop) - 1; i >= 0; i-- {
		stop[i].cancel()
		<-stop[i].done
		n.publish(events.Event{Kind: events.ServiceStopped, Name: stop[i].name, Level: level})
		n.log.Info("service stopped", "service", stop[i].name, "level", level)
	}
}

func (n *Node) setRunLevel(level int) {
	n.mu.Lock()
	n.runLevel = level
	n.mu.Unlock()
	n.writeNodeFile()
}

// follow keeps the node at the cluster's run level once it is Up, and
// carries out what the daemon asks of init (shutdown, reboot). It returns
// only when the machine is going down.
func (n *Node) follow(ctx context.Context) {
	reqFile := locusd.RequestFile(NodeFile)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		if b, err := os.ReadFile(reqFile); err == nil {
			os.Remove(reqFile)
			var r locusd.Request
			if err := json.Unmarshal(b, &r); err != nil {
				n.log.Warn("bad request from the daemon", "err", err)
				continue
			}
			n.shutdown(ctx, r)
			return
		}
		if target, ok := n.clusterRunLevel(ctx); ok && target != n.RunLevel() {
			fmt.Fprintf(n.console, "locus-init: cluster run level %d: node %d goes from %d to %d\n", target, n.Number(), n.RunLevel(), target)
			if err := n.changeLevel(ctx, target); err != nil {
				n.log.Error("run level change", "target", target, "err", err)
				continue
			}
			fmt.Fprintf(n.console, "locus-init: node %d reached run level %d\n", n.Number(), n.RunLevel())
		}
	}
}

// shutdown takes the node down in order: ShuttingDown in the cluster,
// services stopped (reverse order), the shared root left cleanly, the
// daemon gone from the membership, then power off or reboot.
func (n *Node) shutdown(ctx context.Context, r locusd.Request) {
	start := time.Now()
	fmt.Fprintf(n.console, "locus-init: %s asked by node %d: stopping services\n", r.Action, r.From)
	n.setState("ShuttingDown")
	n.waitOwnState(ctx, clms.ShuttingDown, 10*time.Second)
	n.changeLevel(ctx, 0)
	if n.spec.Root.Shared() {
		if err := n.releaseRoot(ctx); err != nil {
			fmt.Fprintf(n.console, "locus-init: shared root: %v\n", err)
		}
	} else {
		n.stopLocusd()
	}
	unix.Sync()
	// Quiet the NICs before the kernel shuts its devices down: under QEMU
	// TCG a virtio-net still handling traffic at power-off was seen to
	// spin in its softirq (soft lockup) and never power off.
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			netlink.LinkSetDown(l)
		}
	}
	fmt.Fprintf(n.console, "locus-init: node %d down in %.1fs: %s\n", n.Number(), time.Since(start).Seconds(), r.Action)
	n.publish(events.Event{Kind: events.StateChanged, State: "Down", Detail: string(r.Action), Millis: time.Since(start).Milliseconds()})
	n.flushEvents(2 * time.Second)
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if r.Action == locusd.ActionReboot {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	if err := unix.Reboot(cmd); err != nil {
		fmt.Fprintf(n.console, "locus-init: %s: %v\n", r.Action, err)
	}
}

// waitOwnState waits until the membership shows this node in state, so
// every node has seen it going before it goes (a node without membership
// does not wait).
func (n *Node) waitOwnState(ctx context.Context, state clms.State, wait time.Duration) {
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		st, err := n.localStatus(ctx)
		if err != nil {
			return
		}
		for _, r := range st.Nodes {
			if r.Node == n.Number() && r.State == state {
				return
			}
		}
	}
}

// stopLocusd stops the node daemon; a node that is leaving tells the
// membership it goes, so the master takes it Down at once, unfenced.
func (n *Node) stopLocusd() {
	n.mu.Lock()
	cancel, done := n.locusdCancel, n.locusdDone
	n.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

// releaseRoot leaves the shared root with nothing unwritten. The node
// serving it (CFS) waits until every other node is Down, so none is still
// writing, then stops serving and remounts it read-only: the filesystem
// is clean. A client kills what still runs in it and unmounts it.
func (n *Node) releaseRoot(ctx context.Context) error {
	dir := n.Root()
	server := n.spec.Root.Source == clusterspec.RootCFS && n.cmdline.Role == "init"
	// A node whose daemon took the root over from node 1 (HA-CFS) leaves
	// the root as a client, then keeps serving it until every other node
	// is Down; the daemon leaves the partition clean when it stops.
	_, err := os.Stat(locusd.ServingFile(NodeFile))
	serving := err == nil && !server
	if server {
		// Clients first: once they are Down none writes any more; then
		// stop serving.
		n.waitOthersDown(ctx, 90*time.Second)
		n.stopLocusd()
	} else {
		// Leave the membership only once unmounted: when the server sees
		// this node Down, nothing of it is in flight.
		defer func() {
			if serving {
				n.waitOthersDown(ctx, 90*time.Second)
				fmt.Fprintf(n.console, "locus-init: this node serves the shared root since a failover; every other node is Down: stopping\n")
			}
			n.stopLocusd()
			if serving {
				n.releaseTakenOver()
			}
		}()
	}
	killIn(dir)
	mounts := mountsUnder(dir)
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mounts[i], 0); err != nil {
			unix.Unmount(mounts[i], unix.MNT_DETACH)
		}
	}
	unix.Sync()
	if server {
		if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remount %s read-only: %w", dir, err)
		}
		n.publish(events.Event{Kind: events.RootUnmounted, Name: dir, Detail: "remounted read-only", Attrs: map[string]string{events.AttrClean: "true"}})
		fmt.Fprintf(n.console, "locus-init: shared root %s remounted read-only: clean\n", dir)
		return nil
	}
	if err := unix.Unmount(dir, 0); err != nil {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	fmt.Fprintf(n.console, "locus-init: shared root %s unmounted\n", dir)
	return nil
}

// releaseTakenOver leaves the partition this node's daemon took over
// clean. The daemon unmounts it when it stops; if it could not (or was
// killed first), init does.
func (n *Node) releaseTakenOver() {
	unix.Sync()
	if !mounted(diskRootMount) {
		n.publish(events.Event{Kind: events.RootUnmounted, Name: diskRootMount, Attrs: map[string]string{events.AttrClean: "true"}})
		fmt.Fprintf(n.console, "locus-init: the shared root's partition is unmounted: clean\n")
		return
	}
	how := "unmounted"
	if err := unix.Unmount(diskRootMount, 0); err != nil {
		how = "remounted read-only"
		if err := unix.Mount("", diskRootMount, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			n.publish(events.Event{Kind: events.RootUnmounted, Name: diskRootMount, Error: err.Error(), Attrs: map[string]string{events.AttrClean: "false"}})
			fmt.Fprintf(n.console, "locus-init: the shared root's partition is still mounted read-write: %v\n", err)
			return
		}
	}
	n.publish(events.Event{Kind: events.RootUnmounted, Name: diskRootMount, Detail: how, Attrs: map[string]string{events.AttrClean: "true"}})
	fmt.Fprintf(n.console, "locus-init: the shared root's partition %s: clean\n", how)
}

// waitOthersDown waits until every other node in the membership table is
// Down (or never came up), at most wait.
func (n *Node) waitOthersDown(ctx context.Context, wait time.Duration) {
	deadline := time.Now().Add(wait)
	for last := ""; ; {
		st, err := n.localStatus(ctx)
		var up []string
		for _, r := range st.Nodes {
			// A node that left while shutting down is gone even when this
			// side can no longer commit its Down (the master went first).
			left := r.State == clms.ShuttingDown && r.Gone
			if r.Node != n.Number() && r.State != clms.Down && r.State != clms.NeverUp && !left {
				up = append(up, strconv.Itoa(r.Node))
			}
		}
		if err == nil && len(up) == 0 {
			return
		}
		if now := strings.Join(up, " "); now != last {
			fmt.Fprintf(n.console, "locus-init: shared root: waiting for nodes %s to go Down before unmounting\n", now)
			last = now
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(n.console, "locus-init: shared root: nodes %v still not Down after %s; going on\n", up, wait)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// killIn ends every process whose root is dir (what runs in the shared
// root): SIGTERM, and SIGKILL for those still there after 3 s.
func killIn(dir string) {
	if dir == "" {
		return
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		pids := procsIn(dir)
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			syscall.Kill(p, sig)
		}
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && len(procsIn(dir)) > 0; {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func procsIn(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 || pid == os.Getpid() {
			continue
		}
		if root, err := os.Readlink(filepath.Join("/proc", e.Name(), "root")); err == nil && root == dir {
			out = append(out, pid)
		}
	}
	return out
}

// mountsUnder lists the mount points below dir, parents before children.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	sort.Slice(out, func(i, j int) bool { return strings.Count(out[i], "/") < strings.Count(out[j], "/") })
	return out
}
