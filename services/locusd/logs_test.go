package locusd_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/internal/testutil"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/logring"
)

// TestLogsFollowThroughANodeDown: locus logs -f, against node 1 of three
// daemons on loopback, has every node's lines; when node 3 is killed it
// says so once, and goes on with the others' lines. locus top, from the
// same node, shows the three.
func TestLogsFollowThroughANodeDown(t *testing.T) {
	bin, err := testutil.LocusBinary(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &testutil.Daemons{T: t, Bin: bin, Dir: t.TempDir(), Procs: map[int]*exec.Cmd{}, Net: "127.0.82"}
	t.Cleanup(func() {
		for n := range d.Procs {
			d.Kill(n)
		}
	})
	for n := 1; n <= 3; n++ {
		d.Start(n)
	}
	d.Wait("three daemons Up", map[int]clms.State{1: clms.Up, 2: clms.Up, 3: clms.Up})
	cmd := exec.Command(bin, "logs", "-f", "--output", "json")
	cmd.Env = append(os.Environ(), "LOCUS_ENDPOINT="+d.Socket(1), "LOCUS_CONTEXT=", "HOME="+d.Dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan logring.Line, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var l logring.Line
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				lines <- l
			}
		}
	}()
	next := func(what string, ok func(logring.Line) bool) logring.Line {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case l, open := <-lines:
				if !open {
					t.Fatalf("locus logs -f ended before %s", what)
				}
				if ok(l) {
					return l
				}
			case <-timeout:
				t.Fatalf("locus logs -f: no %s within 30s", what)
			}
		}
	}
	seen := map[int]bool{}
	next("lines from every node", func(l logring.Line) bool { seen[l.Node] = true; return seen[1] && seen[2] && seen[3] })
	// locus top, not on a terminal, prints a snapshot: the three nodes
	// and their processes.
	topCmd := exec.Command(bin, "top", "--width", "100")
	topCmd.Env = cmd.Env
	view, err := topCmd.CombinedOutput()
	if err != nil || !strings.Contains(string(view), "master node") || strings.Count(string(view), "  Up  ") < 3 || !strings.Contains(string(view), "COMMAND") {
		t.Errorf("locus top: %v\n%s", err, view)
	}
	d.Kill(3)
	killed := time.Now()
	gone := next("a line saying node 3 is gone", func(l logring.Line) bool {
		return l.Level == "WARN" && strings.Contains(l.Msg, "locus logs: node 3 ")
	})
	t.Logf("%.1fs after the kill: %s", time.Since(killed).Seconds(), gone.Msg)
	// The stream goes on: a control request to node 2 logs there.
	set := exec.Command(bin, "runlevel", "3")
	set.Env = append(os.Environ(), "LOCUS_ENDPOINT="+d.Socket(2), "LOCUS_CONTEXT=", "HOME="+d.Dir)
	if b, err := set.CombinedOutput(); err != nil {
		t.Fatalf("runlevel 3 on node 2: %v\n%s", err, b)
	}
	next("node 2's line of the request, after node 3's loss", func(l logring.Line) bool {
		return l.Node == 2 && strings.Contains(l.Msg+" "+l.Attrs, "/v1/runlevel")
	})
}
