package testutil

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/locusd"
)

// TB is what Daemons needs of a test (testing.T), or of a benchmark's
// main (Fatal ends it).
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
}

// Daemons is a loopback cluster of separate `locus daemon` processes,
// node N on 127.0.77.N with the real ports, as on an interconnect.
type Daemons struct {
	T     TB
	Bin   string
	Dir   string
	Procs map[int]*exec.Cmd
	// Profile, if set, is the daemons' timing profile (default: auto).
	Profile string
	// Extra are more flags for a node's daemon.
	Extra map[int][]string
	// Net is the first three octets of the nodes' addresses (default
	// 127.0.77): packages tested at once use their own.
	Net string
}

// Addr is node n's address.
func (d *Daemons) Addr(n int) string {
	if d.Net == "" {
		d.Net = "127.0.77"
	}
	return fmt.Sprintf("%s.%d", d.Net, n)
}

// Start starts node n's daemon.
func (d *Daemons) Start(n int) {
	d.T.Helper()
	nodeFile := filepath.Join(d.Dir, fmt.Sprintf("node%d.json", n))
	os.WriteFile(nodeFile, []byte(fmt.Sprintf(`{"node":%d}`, n)), 0o644)
	// Each node's credential, from one CA, as the QEMU harness gives a
	// direct-booted cluster its own: membership over mutual TLS with
	// sealed gossip, as on a real cluster.
	// Written once: a daemon started earlier may be reading it (a file
	// rewritten under it reads empty, which is the default spec).
	spec := filepath.Join(d.Dir, "locus.yaml")
	if _, err := os.Stat(spec); err != nil {
		os.WriteFile(spec, []byte("cluster: {name: loop}\ninterconnect: {subnet: "+d.Addr(0)+"/24}\n"), 0o644)
	}
	identity := filepath.Join(d.Dir, fmt.Sprintf("node%d.identity", n))
	if err := locusd.IssueIdentityFile(filepath.Join(d.Dir, "ca"), "loop", n, netip.MustParseAddr(d.Addr(n)), identity); err != nil {
		d.T.Fatal(err)
	}
	args := []string{"daemon", "--listen", d.Addr(n) + ":7470", "--node-file", nodeFile, "--netboot-admin", "",
		"--node", fmt.Sprint(n), "--cluster-addr", d.Addr(n), "--join", d.Addr(1) + ":7473," + d.Addr(2) + ":7473",
		"--socket", d.Socket(n), "--user-socket", d.UserSocket(n), "--spec", spec, "--identity", identity}
	if d.Profile != "" {
		args = append(args, "--profile", d.Profile)
	}
	if n == 1 {
		args = append(args, "--bootstrap", "--data-dir", filepath.Join(d.Dir, "node1-state"))
	}
	args = append(args, d.Extra[n]...)
	cmd := exec.Command(d.Bin, args...)
	log, _ := os.Create(filepath.Join(d.Dir, fmt.Sprintf("node%d.log", n)))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		d.T.Fatal(err)
	}
	d.Procs[n] = cmd
}

// Socket is node n's API socket: these daemons have no certificates,
// so the test asks them as local root.
func (d *Daemons) Socket(n int) string {
	return filepath.Join(d.Dir, "run", fmt.Sprintf("node%d.sock", n))
}

// Client calls node n's daemon as local root.
func (d *Daemons) Client(n int) *locusd.Client { return locusd.LocalClient(d.Socket(n)) }

// UserSocket is node n's user socket.
func (d *Daemons) UserSocket(n int) string {
	return filepath.Join(d.Dir, "users", fmt.Sprintf("node%d.sock", n))
}

// Kill ends node n with SIGKILL: no goodbye to the others.
func (d *Daemons) Kill(n int) {
	d.Procs[n].Process.Signal(syscall.SIGKILL)
	d.Procs[n].Wait()
	delete(d.Procs, n)
}

// Status is node n's membership view.
func (d *Daemons) Status(n int) (clms.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var st clms.Status
	c := d.Client(n)
	defer c.Close()
	err := c.Get(ctx, "/v1/cluster", &st)
	return st, err
}

// Wait waits until every running daemon reports want, and returns the
// transition id each reports for each node in want (the same everywhere).
func (d *Daemons) Wait(what string, want map[int]clms.State) map[int]uint64 {
	d.T.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ids := map[int]uint64{}
		ok := true
		for n := range d.Procs {
			st, err := d.Status(n)
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
					d.T.Fatalf("node %d sees node %d at transition %d, another node at %d", n, w, r.Transition, id)
				}
				ids[w] = r.Transition
			}
		}
		if ok {
			return ids
		}
		time.Sleep(50 * time.Millisecond)
	}
	for n := range d.Procs {
		b, _ := os.ReadFile(filepath.Join(d.Dir, fmt.Sprintf("node%d.log", n)))
		d.T.Logf("node %d log:\n%s", n, b)
	}
	d.T.Fatalf("%s: %s", what, last)
	return nil
}

// StartUp starts nodes 1..n, ends them all when the test does (also on
// failure), and waits until every one sees all n Up.
func (d *Daemons) StartUp(t interface{ Cleanup(func()) }, n int) {
	d.T.Helper()
	t.Cleanup(func() {
		for m := range d.Procs {
			d.Kill(m)
		}
	})
	want := map[int]clms.State{}
	for i := 1; i <= n; i++ {
		d.Start(i)
		want[i] = clms.Up
	}
	d.Wait(fmt.Sprintf("%d daemons Up", n), want)
}
