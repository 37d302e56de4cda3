package pid1

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/services/events"

	"golang.org/x/sys/unix"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/locusd"
	"github.com/locus-ssi/locus/services/proc"
)

// startLocusd starts the node daemon and waits until it answers.
func (n *Node) startLocusd(ctx context.Context) error {
	listen := net.JoinHostPort("0.0.0.0", strconv.Itoa(locusd.DefaultPort))
	ln, err := events.Listen(events.SocketPath)
	if err != nil {
		return err
	}
	go events.Serve(context.Background(), ln, n.feed, n.log) // for the node's life
	argv := []string{"/bin/locus", "daemon", "--listen", listen, "--node-file", NodeFile, "--events", events.SocketPath, "--socket", locusd.SocketPath, "--user-socket", locusd.UserSocketPath, "--proc-socket", proc.ProcSocket}
	argv = append(argv, n.membershipArgs()...)
	if id, err := givenIdentity(); err != nil {
		return err
	} else if id != "" {
		argv = append(argv, "--identity", id)
	}
	argv = append(argv, n.cfsExportArgs()...)
	if _, err := os.Stat("/sys/module/dlm"); err == nil && len(n.membershipArgs()) > 0 {
		// The kernel's DLM is configured by this node's daemon, driven
		// by the membership.
		argv = append(argv, "--dlm")
	}
	env := Env()
	if n.cmdline.Secret != "" {
		// The secret goes in the environment, not argv (ps shows argv).
		env = append(env, "LOCUS_SECRET="+n.cmdline.Secret)
	}
	if n.cmdline.CAPin != "" {
		argv = append(argv, "--ca-pin", n.cmdline.CAPin)
	}
	dctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	n.mu.Lock()
	n.locusdCancel, n.locusdDone = cancel, done
	n.mu.Unlock()
	go func() {
		defer close(done)
		n.procs.Daemon(dctx, n.log, "locusd", "", argv, env)
	}()
	deadline := time.Now().Add(15 * time.Second)
	local := net.JoinHostPort("127.0.0.1", strconv.Itoa(locusd.DefaultPort))
	for {
		c, err := net.DialTimeout("tcp", local, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("locusd did not answer on %s within 15s: %w", local, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Where a node that is not netbooted finds the credential it was given:
// QEMU's fw_cfg (qemu.IdentityFwCfg), root-only in sysfs; init keeps a
// copy in a root-only directory for the daemon.
const (
	fwCfgIdentity = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.locus/identity/raw"
	identityCopy  = "/run/locus/private/identity.json"
)

// givenIdentity copies the node's given credential where the daemon
// reads it, and returns that path ("" if the node was given none).
func givenIdentity() (string, error) {
	b, err := os.ReadFile(fwCfgIdentity)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("identity from fw_cfg: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(identityCopy), 0o700); err != nil {
		return "", fmt.Errorf("identity: %w", err)
	}
	if err := os.WriteFile(identityCopy, b, 0o600); err != nil {
		return "", fmt.Errorf("identity: %w", err)
	}
	return identityCopy, nil
}

// membershipArgs are the daemon's flags for this node's part in the
// membership service: node 1 founds the cluster (and keeps its Raft log
// on the state partition when it has one); the others join through the
// first nodes of the spec.
func (n *Node) membershipArgs() []string {
	n.mu.Lock()
	number, addr, stateDev, iface := n.number, n.addr, n.stateDev, n.iface
	n.mu.Unlock()
	if number == 0 || !addr.IsValid() {
		return nil
	}
	args := []string{"--node", strconv.Itoa(number), "--cluster-addr", addr.Addr().String(), "--profile", n.spec.Membership.Profile, "--gate-up"}
	if number == 1 {
		args = append(args, "--bootstrap")
	}
	if stateDev != "" {
		args = append(args, "--data-dir", filepath.Join(stateMount, "clms"), "--ca-dir", layout.CADir,
			"--log-file", filepath.Join(stateMount, "log", "locusd.log"))
	}
	if iface != "" {
		if link, err := net.InterfaceByName(iface); err == nil {
			args = append(args, "--mac", link.HardwareAddr.String())
		}
	}
	var join []string
	for i := 1; i <= 5; i++ {
		if i == number {
			continue
		}
		if p, err := n.spec.NodeAddr(i); err == nil {
			join = append(join, net.JoinHostPort(p.Addr().String(), strconv.Itoa(clms.DefaultGossipPort)))
		}
	}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	return args
}

// joinCluster reaches the cluster endpoint given with locus.join=, if any.
// Membership and admission come with the clms service; this checks only
// that the endpoint answers its health (all it answers without a
// credential) and which cluster it is of.
func (n *Node) joinCluster(ctx context.Context) error {
	if n.cmdline.Join == "" {
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := locusd.FetchHealth(rctx, n.cmdline.Join)
		cancel()
		if err == nil {
			if info.Cluster != n.spec.Cluster.Name {
				return fmt.Errorf("join %s: it belongs to cluster %q, this node to %q", n.cmdline.Join, info.Cluster, n.spec.Cluster.Name)
			}
			n.log.Info("reached cluster", "via", n.cmdline.Join, "peer", info.Node)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("join %s: no answer within 30s: %w", n.cmdline.Join, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// consoleShell keeps a shell on the console, restarting it when it exits.
func (n *Node) consoleShell(ctx context.Context) {
	dev := "/dev/console"
	if n.cmdline.Console != "" {
		dev = "/dev/" + n.cmdline.Console
	}
	for {
		err := n.shellOnce(dev)
		n.mu.Lock()
		leaving := n.state == "ShuttingDown"
		n.mu.Unlock()
		if leaving {
			// The node is going down (its root may be gone already):
			// no shell to come back to. PID 1 must not return; the
			// shutdown powers the node off.
			<-ctx.Done()
			return
		}
		if err != nil {
			fmt.Fprintf(n.console, "locus-init: console shell: %v\n", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (n *Node) shellOnce(dev string) error {
	tty, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		tty, err = os.OpenFile("/dev/console", os.O_RDWR, 0)
		if err != nil {
			return err
		}
	}
	defer tty.Close()
	cmd := commandIn(context.Background(), n.Root(), []string{"/bin/sh"})
	// A serial console answers no terminal queries: TERM=dumb keeps the
	// shell's line editor from asking (and waiting for answers that
	// never come, swallowing what is typed meanwhile).
	cmd.Env = append(Env(), "TERM=dumb")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr.Setsid, cmd.SysProcAttr.Setctty, cmd.SysProcAttr.Ctty = true, true, 0
	return n.procs.Run(cmd)
}

// powerOff syncs and powers the machine off (locus.poweroff=1).
func (n *Node) powerOff() {
	fmt.Fprintln(n.console, "locus-init: powering off (locus.poweroff)")
	n.publish(events.Event{Kind: events.StateChanged, State: "PoweringOff"})
	n.flushEvents(2 * time.Second)
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Fprintf(n.console, "locus-init: power off: %v\n", err)
	}
}
