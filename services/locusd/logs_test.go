package locusd_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/locus-ssi/locus/internal/testutil"
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
	// Node 1 keeps its log on "its state disk" too.
	logFile := filepath.Join(d.Dir, "node1-state", "log", "locusd.log")
	d.Extra = map[int][]string{1: {"--log-file", logFile}}
	d.StartUp(t, 3)
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
	topKeys(t, bin, cmd.Env)
	// A job run on node 2 counts in node 2's metrics, read from node 1.
	run := exec.Command(bin, "onnode", "2", "--", "true")
	run.Env = cmd.Env
	if b, err := run.CombinedOutput(); err != nil {
		t.Fatalf("onnode 2 true: %v\n%s", err, b)
	}
	met := exec.Command(bin, "metrics", "--node", "2")
	met.Env = cmd.Env
	if b, err := met.Output(); err != nil || !strings.Contains(string(b), `locus_proc_launches_total{node="2"} 1`) {
		t.Errorf("node 2's metrics after one job there: %v, no locus_proc_launches_total 1:\n%s", err, b)
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

	// Node 1 restarts: its previous boot's log, node 3's loss in it, is
	// read from its disk.
	d.Kill(1)
	d.Start(1)
	var prev []logring.Line
	for deadline := time.Now().Add(20 * time.Second); ; {
		c := exec.Command(bin, "logs", "--previous", "--node", "1", "--output", "json")
		c.Env = append(os.Environ(), "LOCUS_ENDPOINT="+d.Socket(1), "LOCUS_CONTEXT=", "HOME="+d.Dir)
		out, err := c.Output()
		if err == nil {
			prev = nil
			for _, ln := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				var l logring.Line
				if json.Unmarshal([]byte(ln), &l) == nil {
					prev = append(prev, l)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("locus logs --previous on the restarted node 1: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	found := false
	for _, l := range prev {
		found = found || (l.Node == 1 && (strings.Contains(l.Attrs, "node=3") || strings.Contains(l.Msg, "node 3")))
	}
	if !found || len(prev) < 10 {
		t.Errorf("node 1's previous boot: %d lines, none about node 3", len(prev))
	}
	c := exec.Command(bin, "logs", "--previous", "--node", "2", "--output", "json")
	c.Env = cmd.Env
	if out, err := c.CombinedOutput(); err != nil || !strings.Contains(string(out), "this node keeps no log on disk") {
		t.Errorf("locus logs --previous of node 2, which has no disk: %v\n%q", err, out)
	}
}

// topKeys runs locus top on a terminal (a pty, 100x30): it draws the
// three nodes; s sorts by memory, n shows node 1's processes only, a
// resize to 20 columns is drawn, q quits with status 0 and gives the
// terminal back (the alternate screen left).
func topKeys(t *testing.T, bin string, env []string) {
	t.Helper()
	c := exec.Command(bin, "top")
	c.Env = env
	ptmx, err := pty.StartWithSize(c, &pty.Winsize{Rows: 30, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	exited := make(chan error, 1)
	var mu sync.Mutex
	var screen strings.Builder
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() { exited <- c.Wait() }()
	t.Cleanup(func() {
		if c.ProcessState == nil {
			c.Process.Kill()
			<-exited
		}
	})
	waitFor := func(what, want string) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; {
			mu.Lock()
			got := screen.String()
			mu.Unlock()
			if strings.Contains(got, want) {
				mu.Lock()
				screen.Reset()
				mu.Unlock()
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("locus top on a terminal: no %s (%q) within 20s; last drawn:\n%s", what, want, got[max(0, len(got)-3000):])
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("view of every node's processes", "processes of every node by cpu")
	ptmx.Write([]byte("s"))
	waitFor("sort by memory after s", "processes of every node by mem")
	ptmx.Write([]byte("n"))
	waitFor("node 1's processes after n", "processes of node 1 by mem")
	ptmx.Write([]byte("\x1b[B"))
	waitFor("a selected row after down", "\r\n>")
	pty.Setsize(ptmx, &pty.Winsize{Rows: 10, Cols: 20})
	waitFor("the view at 20 columns", "processes of node 1")
	ptmx.Write([]byte("q"))
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("locus top after q: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("locus top did not quit on q")
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(screen.String(), "\x1b[?1049l") {
		t.Error("locus top quit without leaving the alternate screen")
	}
}
