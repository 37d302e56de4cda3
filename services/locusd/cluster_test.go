package locusd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/locus-ssi/locus/services/events"

	"github.com/locus-ssi/locus/internal/testutil"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/locusd"
)

// daemons is a loopback cluster of separate `locus daemon` processes,
// node N on 127.0.77.N with the real ports, as on an interconnect.
type daemons struct {
	t     *testing.T
	bin   string
	dir   string
	procs map[int]*exec.Cmd
	// profile, if set, is the daemons' timing profile (default: auto).
	profile string
	// extra are more flags for a node's daemon.
	extra map[int][]string
}

func addr(n int) string { return fmt.Sprintf("127.0.77.%d", n) }

func (d *daemons) start(n int) {
	d.t.Helper()
	nodeFile := filepath.Join(d.dir, fmt.Sprintf("node%d.json", n))
	os.WriteFile(nodeFile, []byte(fmt.Sprintf(`{"node":%d}`, n)), 0o644)
	// Each node's credential, from one CA, as the QEMU harness gives a
	// direct-booted cluster its own: membership over mutual TLS with
	// sealed gossip, as on a real cluster.
	// Written once: a daemon started earlier may be reading it (a file
	// rewritten under it reads empty, which is the default spec).
	spec := filepath.Join(d.dir, "locus.yaml")
	if _, err := os.Stat(spec); err != nil {
		os.WriteFile(spec, []byte("cluster: {name: loop}\ninterconnect: {subnet: 127.0.77.0/24}\n"), 0o644)
	}
	identity := filepath.Join(d.dir, fmt.Sprintf("node%d.identity", n))
	if err := locusd.IssueIdentityFile(filepath.Join(d.dir, "ca"), "loop", n, netip.MustParseAddr(addr(n)), identity); err != nil {
		d.t.Fatal(err)
	}
	args := []string{"daemon", "--listen", addr(n) + ":7470", "--node-file", nodeFile, "--netboot-admin", "",
		"--node", fmt.Sprint(n), "--cluster-addr", addr(n), "--join", addr(1) + ":7473," + addr(2) + ":7473",
		"--socket", d.socket(n), "--spec", spec, "--identity", identity}
	if d.profile != "" {
		args = append(args, "--profile", d.profile)
	}
	if n == 1 {
		args = append(args, "--bootstrap", "--data-dir", filepath.Join(d.dir, "node1-state"))
	}
	args = append(args, d.extra[n]...)
	cmd := exec.Command(d.bin, args...)
	log, _ := os.Create(filepath.Join(d.dir, fmt.Sprintf("node%d.log", n)))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.procs[n] = cmd
}

// socket is node n's API socket: these daemons have no certificates,
// so the test asks them as local root.
func (d *daemons) socket(n int) string {
	return filepath.Join(d.dir, "run", fmt.Sprintf("node%d.sock", n))
}

func (d *daemons) client(n int) *locusd.Client { return locusd.LocalClient(d.socket(n)) }

// kill ends node n with SIGKILL: no goodbye to the others.
func (d *daemons) kill(n int) {
	d.procs[n].Process.Signal(syscall.SIGKILL)
	d.procs[n].Wait()
	delete(d.procs, n)
}

func (d *daemons) status(n int) (clms.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var st clms.Status
	c := d.client(n)
	defer c.Close()
	err := c.Get(ctx, "/v1/cluster", &st)
	return st, err
}

// wait waits until every running daemon reports want, and returns the
// transition id each reports for each node in want (the same everywhere).
func (d *daemons) wait(what string, want map[int]clms.State) map[int]uint64 {
	d.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ids := map[int]uint64{}
		ok := true
		for n := range d.procs {
			st, err := d.status(n)
			if err != nil {
				ok, last = false, err.Error()
				break
			}
			got := map[int]clms.NodeStatus{}
			for _, r := range st.Nodes {
				got[r.Node] = r
			}
			for w, s := range want {
				r := got[w]
				if r.State != s {
					ok, last = false, fmt.Sprintf("node %d sees node %d %s", n, w, r.State)
					continue
				}
				if id, seen := ids[w]; seen && id != r.Transition {
					d.t.Fatalf("node %d sees node %d at transition %d, another node at %d", n, w, r.Transition, id)
				}
				ids[w] = r.Transition
			}
		}
		if ok {
			return ids
		}
		time.Sleep(50 * time.Millisecond)
	}
	for n := range d.procs {
		b, _ := os.ReadFile(filepath.Join(d.dir, fmt.Sprintf("node%d.log", n)))
		d.t.Logf("node %d log:\n%s", n, b)
	}
	d.t.Fatalf("%s: %s", what, last)
	return nil
}

// events reads node n's transition stream up to transition id upTo.
func (d *daemons) events(n int, upTo uint64) []clms.Transition {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := d.client(n)
	defer c.Close()
	resp, err := c.Open(ctx, "/v1/cluster/events")
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []clms.Transition
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var t clms.Transition
		if err := json.Unmarshal(sc.Bytes(), &t); err != nil {
			d.t.Fatalf("node %d events: %v", n, err)
		}
		t.At = time.Time{} // compared below: what, not when it was read
		out = append(out, t)
		if t.ID >= upTo {
			break
		}
	}
	return out
}

// feed reads node n's event feed as it stands.
func (d *daemons) feed(n int) []events.Event {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := d.client(n)
	defer c.Close()
	resp, err := c.Open(ctx, "/v1/events")
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []events.Event
	if err := events.Read(resp.Body, func(e events.Event) { out = append(out, e) }); err != nil {
		d.t.Fatalf("node %d events: %v", n, err)
	}
	return out
}

// has reports whether evs holds an event that match accepts.
func has(evs []events.Event, match func(events.Event) bool) bool {
	for _, e := range evs {
		if match(e) {
			return true
		}
	}
	return false
}

// fiveDaemons starts nodes 1-5 as separate daemon processes (killed when
// the test ends) and waits until all are Up.
func fiveDaemons(t *testing.T, profile string) (*daemons, map[int]clms.State) {
	t.Helper()
	bin, err := testutil.LocusBinary(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &daemons{t: t, bin: bin, dir: t.TempDir(), procs: map[int]*exec.Cmd{}, profile: profile}
	t.Cleanup(func() {
		for n := range d.procs {
			d.kill(n)
		}
	})
	for n := 1; n <= 5; n++ {
		d.start(n)
	}
	up := map[int]clms.State{1: clms.Up, 2: clms.Up, 3: clms.Up, 4: clms.Up, 5: clms.Up}
	d.wait("five daemons Up", up)
	return d, up
}

func TestFiveDaemonProcesses(t *testing.T) {
	d, up := fiveDaemons(t, "")

	start := time.Now()
	d.kill(3)
	up[3] = clms.Down
	ids := d.wait("node 3 Down", up)
	t.Logf("node 3 Down on every survivor (transition %d), as the API shows it, %v after SIGKILL", ids[3], time.Since(start).Round(time.Millisecond))
	// When each applied it, from its event feed: the API's answer waits
	// up to a second more for the view it gathers from every node.
	var applied time.Duration
	for _, n := range []int{1, 2, 4, 5} {
		for _, e := range d.feed(n) {
			if e.Kind == events.TransitionApplied && e.Subject == 3 && e.State == string(clms.Down) {
				applied = max(applied, e.At.Sub(start))
			}
		}
	}
	t.Logf("node 3 Down applied on every survivor %v after SIGKILL (its daemon's port refused: no suspicion to wait out)", applied.Round(time.Millisecond))
	if applied > time.Second {
		t.Errorf("a killed node's Down applied %v after the kill, want under a second", applied)
	}

	start = time.Now()
	d.kill(1)
	up[1] = clms.Down
	ids = d.wait("master node 1 Down", up)
	st, _ := d.status(2)
	t.Logf("master failover: node %d master, node 1 Down (transition %d) %v after SIGKILL", st.Master, ids[1], time.Since(start).Round(time.Millisecond))
	if st.Master == 1 || st.Master == 0 || !st.Quorum {
		t.Errorf("after the master's death: %+v", st)
	}

	// The feeds say the same as the table, as typed events.
	feed2 := d.feed(2)
	if !has(feed2, func(e events.Event) bool {
		return e.Kind == events.ServiceStarted && e.Name == events.ServiceMembership && e.Attrs[events.AttrTLS] == "true"
	}) {
		t.Errorf("node 2's feed lacks membership started over TLS:\n%v", feed2)
	}
	for _, dead := range []int{3, 1} {
		if !has(feed2, func(e events.Event) bool {
			return e.Kind == events.TransitionApplied && e.Subject == dead && e.State == string(clms.Down) && e.Transition == ids[dead]
		}) {
			t.Errorf("node 2's feed lacks transition %d: node %d Down", ids[dead], dead)
		}
	}
	if !has(d.feed(st.Master), func(e events.Event) bool { return e.Kind == events.RoleTaken && e.Name == events.RoleMaster }) {
		t.Errorf("the new master, node %d, has no master role.taken event", st.Master)
	}
	for i, e := range feed2 {
		if e.Seq != uint64(i+1) || e.Node != 2 {
			t.Fatalf("node 2's event %d = seq %d node %d, want seq %d node 2 (numbered from 1, in order)", i, e.Seq, e.Node, i+1)
		}
	}

	d.start(3)
	up[3] = clms.Up
	d.wait("node 3 back Up", up)

	// One sequence of transitions, whichever survivor is asked.
	st, _ = d.status(2)
	ref := d.events(2, st.LastTransition)
	for _, n := range []int{3, 4, 5} {
		got := d.events(n, st.LastTransition)
		// Node 3 rejoined with empty state: it has the whole log again
		// (replayed from the master), so its sequence is the same too.
		if !reflect.DeepEqual(got, ref) {
			t.Errorf("node %d applied another sequence:\n%v\nnode 2:\n%v", n, got, ref)
		}
	}
}

// TestNoFlapUnderCPUSaturation: with every core saturated for 10 s by
// busy processes (twice as many as cores, competing with the daemons),
// no node is suspected into Down: Lifeguard's awareness stretches the
// timeouts of a member that is itself slow, so the `lan` profile's
// sub-second detection does not turn a busy machine into a failed one.
func TestNoFlapUnderCPUSaturation(t *testing.T) {
	d, _ := fiveDaemons(t, clms.ProfileLAN) // the fastest: the one that could flap
	before, err := d.status(1)
	if err != nil {
		t.Fatal(err)
	}

	var hogs []*exec.Cmd
	for range 2 * runtime.NumCPU() {
		c := exec.Command("/bin/sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		hogs = append(hogs, c)
	}
	stopHogs := func() {
		for _, c := range hogs {
			c.Process.Kill()
			c.Wait()
		}
		hogs = nil
	}
	t.Cleanup(stopHogs)
	time.Sleep(10 * time.Second)
	stopHogs()
	// Let anything suspected during the load be decided.
	time.Sleep(3 * time.Second)

	after, err := d.status(1)
	if err != nil {
		t.Fatal(err)
	}
	if after.LastTransition != before.LastTransition {
		t.Errorf("transitions %d..%d happened under CPU load, none should have:\n%v", before.LastTransition+1, after.LastTransition, d.events(1, after.LastTransition))
	}
	for _, n := range after.Nodes {
		if n.State != clms.Up {
			t.Errorf("node %d is %s after 10 s of CPU saturation", n.Node, n.State)
		}
	}
	t.Logf("10 s with %d busy processes on %d cores: still transition %d, all five Up", 2*runtime.NumCPU(), runtime.NumCPU(), after.LastTransition)
}

// TestLoneStallIsNotFenced: with the default timing on real hardware
// (steady), one member stopped (SIGSTOP) for 0.3 s or 0.8 s among
// healthy ones comes back without a transition; stopped for 2 s, it is
// taken Down. Then one member starved of CPU alone (SCHED_IDLE against
// busy processes on every core) for 5 s stays Up.
func TestLoneStallIsNotFenced(t *testing.T) {
	d, up := fiveDaemons(t, "") // auto: steady on this (real) machine
	before, err := d.status(1)
	if err != nil {
		t.Fatal(err)
	}
	_, t4 := transitionOf(before, 4)
	p4 := d.procs[4].Process
	for _, stall := range []time.Duration{300 * time.Millisecond, 800 * time.Millisecond} {
		p4.Signal(syscall.SIGSTOP)
		time.Sleep(stall)
		p4.Signal(syscall.SIGCONT)
		time.Sleep(3 * time.Second)
		st, err := d.status(1)
		if err != nil {
			t.Fatal(err)
		}
		if s, id := transitionOf(st, 4); s != clms.Up || id != t4 {
			t.Errorf("node 4 stopped for %v: %s at transition %d, want still Up at %d", stall, s, id, t4)
		}
		d.wait(fmt.Sprintf("all Up after a %v stall", stall), up)
	}

	// Starved: the busy processes run at normal priority, node 4 at
	// SCHED_IDLE, the lowest there is.
	if out, err := exec.Command("chrt", "--idle", "-p", "0", strconv.Itoa(p4.Pid)).CombinedOutput(); err != nil {
		t.Fatalf("chrt: %v %s", err, out)
	}
	var hogs []*exec.Cmd
	for range runtime.NumCPU() {
		c := exec.Command("/bin/sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		hogs = append(hogs, c)
	}
	time.Sleep(5 * time.Second)
	for _, c := range hogs {
		c.Process.Kill()
		c.Wait()
	}
	exec.Command("chrt", "--other", "-p", "0", strconv.Itoa(p4.Pid)).Run()
	time.Sleep(time.Second)
	if st, err := d.status(1); err != nil {
		t.Fatal(err)
	} else if s, id := transitionOf(st, 4); s != clms.Up || id != t4 {
		t.Errorf("node 4 starved of CPU for 5 s: %s at transition %d, want still Up at %d", s, id, t4)
	}

	// Stopped for 2 s: that is a failure.
	start := time.Now()
	p4.Signal(syscall.SIGSTOP)
	defer p4.Signal(syscall.SIGCONT)
	for {
		st, err := d.status(1)
		if s, _ := transitionOf(st, 4); err == nil && s == clms.Down {
			t.Logf("node 4, stopped, Down %v after SIGSTOP", time.Since(start).Round(time.Millisecond))
			if time.Since(start) < time.Second {
				t.Errorf("node 4 Down %v after it stopped: under the second a lone stall is allowed", time.Since(start))
			}
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("node 4 stopped for 5 s and not Down: %+v %v", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// transitionOf is node n's state and transition in st.
func transitionOf(st clms.Status, n int) (clms.State, uint64) {
	for _, r := range st.Nodes {
		if r.Node == n {
			return r.State, r.Transition
		}
	}
	return clms.NeverUp, 0
}
