package locusd_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"

	"github.com/locus-ssi/locus/internal/testutil"
	"github.com/locus-ssi/locus/services/cfs"
	"github.com/locus-ssi/locus/services/clms"
)

// TestDownNodeCannotWrite: node 1 serves CFS; node 3, connected to it
// from its own address and a privileged port as its relay is, stops
// (SIGSTOP: alive, not answering) and is taken Down. There is no fence
// agent in this cluster, so nothing powers node 3 off: the server
// closes its connection as the Down is applied, and what node 3 sends
// after that is never written.
func TestDownNodeCannotWrite(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the CFS server serves only privileged ports")
	}
	bin, err := testutil.LocusBinary(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	export := t.TempDir()
	d := &testutil.Daemons{T: t, Bin: bin, Dir: t.TempDir(), Procs: map[int]*exec.Cmd{}}
	d.Extra = map[int][]string{1: {"--cfs-export", export, "--cfs-listen", d.Addr(1) + ":7475"}}
	t.Cleanup(func() {
		for n := range d.Procs {
			d.Procs[n].Process.Signal(syscall.SIGCONT)
			d.Kill(n)
		}
	})
	for n := 1; n <= 3; n++ {
		d.Start(n)
	}
	d.Wait("three daemons Up", map[int]clms.State{1: clms.Up, 2: clms.Up, 3: clms.Up})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := cfs.DialPrivileged(ctx, netip.MustParseAddr(d.Addr(3)), d.Addr(1)+":7475")
	if err != nil {
		t.Fatal(err)
	}
	client, err := p9.NewClient(conn, p9.WithMessageSize(64<<10))
	if err != nil {
		t.Fatalf("node 3's connection: %v", err)
	}
	defer client.Close()
	root, err := client.AttachAs("", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, dir, err := root.Walk(nil)
	if err != nil {
		t.Fatal(err)
	}
	f, _, _, err := dir.Create("log", p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("before\n"), 0); err != nil {
		t.Fatalf("node 3 writes while Up: %v", err)
	}

	p3 := d.Procs[3].Process
	p3.Signal(syscall.SIGSTOP)
	start := time.Now()
	for {
		st, err := d.Status(1)
		if s, _ := transitionOf(st, 3); err == nil && s == clms.Down {
			t.Logf("node 3, stopped, Down %v after SIGSTOP (no fence agent: it is still running)", time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("node 3 stopped for 10 s and not Down: %+v %v", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Closed as node 1 applied the Down (its handler runs right after).
	closed := time.Now()
	for {
		if _, _, _, err := root.GetAttr(p9.AttrMask{Mode: true}); err != nil {
			t.Logf("node 3's connection closed %v after node 1 showed it Down", time.Since(closed).Round(time.Millisecond))
			break
		}
		if time.Since(closed) > time.Second {
			t.Fatalf("node 3's connection still served 1 s after its Down")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := f.WriteAt([]byte("after\n"), 7); err == nil {
		t.Errorf("a write from Down node 3 succeeded")
	}
	if got, _ := os.ReadFile(filepath.Join(export, "log")); string(got) != "before\n" {
		t.Errorf("the file holds %q after node 3's Down; want only what it wrote while Up", got)
	}
	p3.Signal(syscall.SIGCONT)
}
