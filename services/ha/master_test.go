package ha

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/services/clms"
)

// table is an in-memory record store applying writes as the FSM does
// (all or none, at the version read).
type table struct {
	recs map[string]clms.Record
	next uint64
}

func newTable() *table { return &table{recs: map[string]clms.Record{}, next: 1} }

func (t *table) write(ws []clms.RecordWrite) error {
	for _, w := range ws {
		if t.recs[w.Key].Version != w.Expect {
			return fmt.Errorf("%w: %s", clms.ErrRecordChanged, w.Key)
		}
	}
	t.next++
	for _, w := range ws {
		if w.Value == nil {
			delete(t.recs, w.Key)
		} else {
			t.recs[w.Key] = clms.Record{Key: w.Key, Value: w.Value, Version: t.next}
		}
	}
	return nil
}

func (t *table) view() view {
	var rs []clms.Record
	for _, r := range t.recs {
		rs = append(rs, r)
	}
	return readView(rs)
}

func status(states map[int]clms.State) clms.Status {
	st := clms.Status{Master: 1, Quorum: true, RunLevel: 3}
	for n := 1; n <= 5; n++ {
		if s, ok := states[n]; ok {
			st.Nodes = append(st.Nodes, clms.NodeStatus{NodeRecord: clms.NodeRecord{Node: n, State: s}})
		}
	}
	return st
}

func allUp(n int) map[int]clms.State {
	m := map[int]clms.State{}
	for i := 1; i <= n; i++ {
		m[i] = clms.Up
	}
	return m
}

func mustDef(t *testing.T, sv clusterspec.Service) *def {
	t.Helper()
	if sv.Level == 0 {
		sv.Level = 3
	}
	if sv.HA == nil {
		sv.HA = &clusterspec.HA{}
	}
	if len(sv.Command) == 0 && sv.OCF == "" {
		sv.Command = []string{"sleep", "1000"}
	}
	ds, err := defs([]clusterspec.Service{sv}, []int{1, 2, 3, 4})
	if err != nil {
		t.Fatal(err)
	}
	return ds[0]
}

// settle runs the master's plan until it writes nothing more.
func settle(t *testing.T, tb *table, d *def, st clms.Status, place func([]int) int) {
	t.Helper()
	for range 10 {
		ws := plan(d, tb.view(), st, time.Now(), place)
		if len(ws) == 0 {
			return
		}
		if err := tb.write(ws); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("the plan does not settle")
}

func nodesOf(tb *table, d *def) map[string]int {
	out := map[string]int{}
	for id, a := range tb.view().assign[d.Name] {
		out[id] = a.v.Node
	}
	return out
}

// release plays the node's part: it stopped what it was asked to let go.
func release(t *testing.T, tb *table, d *def) {
	t.Helper()
	for id, a := range tb.view().assign[d.Name] {
		if a.v.Releasing {
			if err := tb.write(onReleased(d, tb.view(), releasedRequest{Service: d.Name, Instance: id, Gen: a.v.Gen, Node: a.v.Node}, time.Now())); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestPlacementPolicies(t *testing.T) {
	up := status(allUp(4))
	for _, tc := range []struct {
		name      string
		sv        clusterspec.Service
		want      map[string]int
		afterDown map[string]int // after node 2's Down
	}{
		{"prefer takes the first of the list", clusterspec.Service{Name: "web", Nodes: []int{2, 3, 4}},
			map[string]int{"0": 2}, map[string]int{"0": 3}},
		{"three instances spread, one per node", clusterspec.Service{Name: "web", Nodes: []int{2, 3, 4, 1}, HA: &clusterspec.HA{Instances: "3"}},
			map[string]int{"0": 2, "1": 3, "2": 4}, map[string]int{"0": 1, "1": 3, "2": 4}},
		{"all: one per node, none moved", clusterspec.Service{Name: "web", HA: &clusterspec.HA{Instances: "all"}},
			map[string]int{"n1": 1, "n2": 2, "n3": 3, "n4": 4}, map[string]int{"n1": 1, "n3": 3, "n4": 4}},
		{"round_robin goes to the node after", clusterspec.Service{Name: "web", Nodes: []int{2, 3, 4}, HA: &clusterspec.HA{Placement: "round_robin"}},
			map[string]int{"0": 2}, map[string]int{"0": 3}},
		{"fast asks the load", clusterspec.Service{Name: "web", Nodes: []int{2, 3, 4}, HA: &clusterspec.HA{Placement: "fast"}},
			map[string]int{"0": 4}, map[string]int{"0": 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := mustDef(t, tc.sv)
			tb := newTable()
			place := func(ns []int) int { return ns[len(ns)-1] } // "least loaded": the last
			settle(t, tb, d, up, place)
			if got := nodesOf(tb, d); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("placed %v, want %v", got, tc.want)
			}
			down := allUp(4)
			down[2] = clms.Down
			settle(t, tb, d, status(down), place)
			if got := nodesOf(tb, d); fmt.Sprint(got) != fmt.Sprint(tc.afterDown) {
				t.Fatalf("after node 2 Down: %v, want %v", got, tc.afterDown)
			}
		})
	}
}

// TestNothingMovesBeforeTheFence: an instance on a failed node stays
// assigned there while the node is GoingDown (being fenced), and moves
// only at its Down; no generation is reused.
func TestNothingMovesBeforeTheFence(t *testing.T) {
	d := mustDef(t, clusterspec.Service{Name: "db", Nodes: []int{2, 3}})
	tb := newTable()
	settle(t, tb, d, status(allUp(3)), nil)
	gen := tb.view().assign["db"]["0"].v.Gen
	st := allUp(3)
	st[2] = clms.GoingDown
	settle(t, tb, d, status(st), nil)
	if got := nodesOf(tb, d)["0"]; got != 2 {
		t.Fatalf("moved to node %d while node 2 was still being fenced", got)
	}
	st[2] = clms.Down
	settle(t, tb, d, status(st), nil)
	a := tb.view().assign["db"]["0"].v
	if a.Node != 3 || a.Gen != gen+1 || a.Prev != 2 {
		t.Fatalf("after the Down: %+v (gen before %d)", a, gen)
	}
	// Node 2 back: the instance stays (no failback).
	st[2] = clms.Up
	settle(t, tb, d, status(st), nil)
	if got := nodesOf(tb, d)["0"]; got != 3 {
		t.Errorf("failed back to node %d", got)
	}
}

// TestFailuresMoveAtTheThreshold: soft failures restart in place until
// migration_threshold, then the instance moves and the node is banned;
// a hard failure moves at once; the count expires after
// failure_timeout; a fatal one stops the service.
func TestFailuresMoveAtTheThreshold(t *testing.T) {
	d := mustDef(t, clusterspec.Service{Name: "web", Nodes: []int{2, 3}, HA: &clusterspec.HA{MigrationThreshold: 3, FailureTimeout: "1m"}})
	tb := newTable()
	up := status(allUp(3))
	settle(t, tb, d, up, nil)
	fail := func(rec Recovery) failureReply {
		a := tb.view().assign["web"]["0"].v
		ws, reply := onFailure(d, tb.view(), failureRequest{Service: "web", Instance: "0", Gen: a.Gen, Node: a.Node, RC: 1, Recovery: rec, Reason: "boom"}, time.Now())
		if err := tb.write(ws); err != nil {
			t.Fatal(err)
		}
		return reply
	}
	for i := 1; i <= 2; i++ {
		if r := fail(Soft); !r.Restart {
			t.Fatalf("failure %d of 3: not restarted in place: %+v", i, r)
		}
	}
	if r := fail(Soft); r.Restart {
		t.Fatal("the third failure restarts in place")
	}
	settle(t, tb, d, up, nil)
	if got := nodesOf(tb, d)["0"]; got != 3 {
		t.Fatalf("after 3 failures on node 2: on node %d, want 3", got)
	}
	if r := fail(Hard); r.Restart {
		t.Fatal("a hard failure restarts in place")
	}
	settle(t, tb, d, up, nil)
	if got := nodesOf(tb, d)["0"]; got != 0 {
		t.Fatalf("both nodes banned, still placed on %d", got)
	}
	// The counts expire: it runs again.
	v := tb.view()
	for n, f := range v.fails["web"] {
		f.v.Last = time.Now().Add(-2 * time.Minute)
		b, _ := json.Marshal(f.v)
		tb.recs[failKey("web", n)] = clms.Record{Key: failKey("web", n), Value: b, Version: f.version}
	}
	settle(t, tb, d, up, nil)
	if got := nodesOf(tb, d)["0"]; got != 2 {
		t.Fatalf("after failure_timeout: on node %d, want 2", got)
	}
	if r := fail(Fatal); r.Restart {
		t.Fatal("a fatal failure restarts")
	}
	settle(t, tb, d, up, nil)
	if _, ok := tb.view().stopped["web"]; !ok || nodesOf(tb, d)["0"] != 0 {
		t.Fatalf("after a fatal failure: stopped %v, placed %v", tb.view().stopped, nodesOf(tb, d))
	}
}

// TestMoveWaitsForTheStop: an operator's move (and a stop) first asks
// the node to let go; the instance is placed again only once that node
// said it stopped, or once it is Down.
func TestMoveWaitsForTheStop(t *testing.T) {
	d := mustDef(t, clusterspec.Service{Name: "web", Nodes: []int{2, 3, 4}})
	tb := newTable()
	up := status(allUp(4))
	settle(t, tb, d, up, nil)
	ws, err := onControl(d, tb.view(), controlRequest{Verb: "move", Service: "web", To: 4}, up, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.write(ws); err != nil {
		t.Fatal(err)
	}
	settle(t, tb, d, up, nil)
	if a := tb.view().assign["web"]["0"].v; a.Node != 2 || !a.Releasing {
		t.Fatalf("before node 2 stopped it: %+v", a)
	}
	release(t, tb, d)
	settle(t, tb, d, up, nil)
	if got := nodesOf(tb, d)["0"]; got != 4 {
		t.Fatalf("moved to node %d, want 4", got)
	}
	if _, err := onControl(d, tb.view(), controlRequest{Verb: "move", Service: "web", To: 9}, up, time.Now()); err == nil {
		t.Error("a move to a node not in the cluster was taken")
	}
	ws, _ = onControl(d, tb.view(), controlRequest{Verb: "stop", Service: "web", By: "op"}, up, time.Now())
	tb.write(ws)
	settle(t, tb, d, up, nil)
	release(t, tb, d)
	settle(t, tb, d, up, nil)
	if _, ok := tb.view().assign["web"]["0"]; ok {
		t.Fatalf("stopped, still assigned: %v", nodesOf(tb, d))
	}
	ws, _ = onControl(d, tb.view(), controlRequest{Verb: "start", Service: "web"}, up, time.Now())
	tb.write(ws)
	settle(t, tb, d, up, nil)
	if got := nodesOf(tb, d)["0"]; got != 2 {
		t.Fatalf("started again on %d, want 2", got)
	}
}

// TestStaleWriteRefused: two masters' plans over the same records (an
// old master still deciding): the second write is refused, nothing is
// assigned twice.
func TestStaleWriteRefused(t *testing.T) {
	d := mustDef(t, clusterspec.Service{Name: "web", Nodes: []int{2, 3}})
	tb := newTable()
	v := tb.view()
	a := plan(d, v, status(allUp(3)), time.Now(), nil)
	st := allUp(3)
	st[2] = clms.Down
	b := plan(d, v, status(st), time.Now(), nil)
	if err := tb.write(a); err != nil {
		t.Fatal(err)
	}
	if err := tb.write(b); !errors.Is(err, clms.ErrRecordChanged) {
		t.Fatalf("a plan made on the same old records applied: %v", err)
	}
}
