package top

import (
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/proc"
)

func snap() Snapshot {
	return Snapshot{At: time.Now(),
		Status: clms.Status{Master: 1, Quorum: true, Term: 3, RunLevel: 3, Nodes: []clms.NodeStatus{
			{NodeRecord: clms.NodeRecord{Node: 2, State: clms.Up}, Voter: true}, {NodeRecord: clms.NodeRecord{Node: 1, State: clms.Up}, Voter: true},
			{NodeRecord: clms.NodeRecord{Node: 3, State: clms.Down}}}},
		Loads: []proc.Load{{Node: 1, Mean: 0.25, RunQ: 1, NCPU: 2, MemTotal: 1000, MemFree: 250, Procs: 90}, {Node: 2, Mean: 1.5, NCPU: 1, MemTotal: 1000, MemFree: 900, Procs: 70}},
		Procs: []proc.Process{
			{CPID: proc.CPID(1, 10), Node: 1, PID: 10, User: "root", State: "S", CPU: 1, RSS: 9000, Args: []string{"/bin/locus", "daemon"}},
			{CPID: proc.CPID(2, 20), Node: 2, PID: 20, User: "alice", State: "R", CPU: 90, RSS: 100, Args: []string{"burn"}},
			{CPID: proc.CPID(2, 5), Node: 2, PID: 5, User: "root", State: "S", CPU: 0, RSS: 50, Comm: "kworker"},
		}}
}

// TestRender: the nodes in order with their role and load, a Down node
// without load, the processes busiest first; a narrow terminal gets the
// columns that fit and no longer lines.
func TestRender(t *testing.T) {
	out := Render(snap(), View{}, 100, 0)
	for _, want := range []string{"master node 1, term 3, run level 3", "1    Up           master 0.25", "2    Up           voter  1.50", "3    Down         member -",
		"75%", "alice", "[kworker]"} {
		if !strings.Contains(out, want) {
			t.Errorf("the view lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "burn") > strings.Index(out, "/bin/locus daemon") {
		t.Errorf("not busiest first:\n%s", out)
	}
	for _, w := range []int{20, 1} {
		for _, l := range strings.Split(Render(snap(), View{}, w, 0), "\n") {
			if utf8.RuneCountInString(l) > w {
				t.Errorf("at %d columns, a line of %d: %q", w, utf8.RuneCountInString(l), l)
			}
		}
	}
	if got := strings.Count(Render(snap(), View{}, 100, 9), "\n"); got > 9 {
		t.Errorf("9 lines high: %d lines", got)
	}
}

// TestViewSortsAndFilters: by memory, then cluster PID; one node's.
func TestViewSortsAndFilters(t *testing.T) {
	if got := (View{Sort: SortMem}).Shown(snap()); got[0].PID != 10 || got[2].PID != 5 {
		t.Errorf("by memory: %+v", got)
	}
	if got := (View{Sort: SortPID}).Shown(snap()); got[0].Node != 1 {
		t.Errorf("by cluster PID: %+v", got)
	}
	if got := (View{Node: 2}).Shown(snap()); len(got) != 2 || got[0].PID != 20 {
		t.Errorf("node 2's: %+v", got)
	}
}

// TestKeys: what a raw terminal sends becomes keys; s cycles the sort,
// n the node filter, the arrows move the selection within what is shown,
// k and K name the selected process with SIGTERM and SIGKILL, q quits.
func TestKeys(t *testing.T) {
	if got := strings.Join(ParseKeys([]byte("s\x1b[B\x1b[Ank\x1bK\x03\x1bOB\r")), ","); got != "s,down,up,n,k,q,K,q,down" {
		t.Errorf("ParseKeys: %s", got)
	}
	s := snap()
	v := View{Selected: 0}
	for _, want := range []string{SortMem, SortPID, SortCPU} {
		v, _ = v.Key("s", s)
		if v.Sort != want {
			t.Errorf("s: sort %q, want %q", v.Sort, want)
		}
	}
	for _, want := range []int{1, 2, 3, 0} {
		v, _ = v.Key("n", s)
		if v.Node != want {
			t.Errorf("n: node %d, want %d", v.Node, want)
		}
	}
	v, _ = v.Key(KeyDown, s)
	v, _ = v.Key(KeyDown, s)
	v, _ = v.Key(KeyDown, s)
	if v.Selected != 2 {
		t.Errorf("down past the last row: selected %d, want 2", v.Selected)
	}
	v, a := v.Key("K", s)
	if a.Target == nil || a.Target.Comm != "kworker" || a.Signal != syscall.SIGKILL {
		t.Errorf("K on the third row (least busy, kworker): %+v", a)
	}
	v, _ = v.Key(KeyUp, s)
	v, _ = v.Key(KeyUp, s)
	v, _ = v.Key(KeyUp, s)
	if v, a = v.Key("k", s); v.Selected != 0 || a.Target == nil || a.Target.PID != 20 || a.Signal != syscall.SIGTERM {
		t.Errorf("k on the top row (burn, pid 20): selected %d, %+v", v.Selected, a)
	}
	v, _ = v.Key("n", s)
	v, _ = v.Key("n", s) // node 2: two processes
	v.Selected = 5
	if v = v.Fit(s); v.Selected != 1 {
		t.Errorf("Fit: selected %d of node 2's two rows", v.Selected)
	}
	if _, a = v.Key(KeyQuit, s); !a.Quit {
		t.Error("q does not quit")
	}
}
