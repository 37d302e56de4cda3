package ha

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/services/clms"
)

// states maps each node of st to its state.
func states(st clms.Status) map[int]clms.State {
	m := map[int]clms.State{}
	for _, n := range st.Nodes {
		m[n.Node] = n.State
	}
	return m
}

// gone says whether a node in state s runs nothing: Down (fenced, when
// the cluster fences) or never admitted.
func gone(s clms.State) bool { return s == "" || s == clms.Down || s == clms.NeverUp }

// failuresNow are the service's failure counts still in force at now,
// and the deletes of those expired.
func failuresNow(d *def, v view, now time.Time) (map[int]Failures, []clms.RecordWrite) {
	out := map[int]Failures{}
	var writes []clms.RecordWrite
	for n, f := range v.fails[d.Name] {
		if d.FailureTimeout > 0 && now.Sub(f.v.Last) > d.FailureTimeout {
			writes = append(writes, del(failKey(d.Name, n), f.version))
			continue
		}
		out[n] = f.v
	}
	return out, writes
}

func (d *def) banned(f map[int]Failures, n int) bool {
	x, ok := f[n]
	return ok && (x.Banned || x.Count >= d.MigrationThreshold)
}

// eligible are the service's nodes, in its order, that are Up and not
// banned for it.
func (d *def) eligible(st map[int]clms.State, f map[int]Failures) []int {
	var out []int
	for _, n := range d.Nodes {
		if st[n] == clms.Up && !d.banned(f, n) {
			out = append(out, n)
		}
	}
	return out
}

// plan is the master's decision for one service: the record writes
// that bring its instances where they should be. place picks the least
// loaded of some nodes (fast placement).
func plan(d *def, v view, st clms.Status, now time.Time, place func([]int) int) []clms.RecordWrite {
	ns := states(st)
	fails, writes := failuresNow(d, v, now)
	eligible := d.eligible(ns, fails)
	_, stopped := v.stopped[d.Name]
	var want []string
	if !stopped && st.RunLevel >= d.Level {
		want = d.instanceIDs(eligible)
	}
	assigns := v.assign[d.Name]
	taken := map[int]bool{}
	for _, a := range assigns {
		if a.v.Node != 0 && !gone(ns[a.v.Node]) {
			taken[a.v.Node] = true
		}
	}
	ids := map[string]bool{}
	for _, id := range want {
		ids[id] = true
	}
	for id := range assigns {
		ids[id] = true
	}
	sorted := make([]string, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	sort.Strings(sorted)
	for _, id := range sorted {
		r, have := assigns[id]
		a := r.v
		wanted := slices.Contains(want, id)
		key := assignKey(d.Name, id)
		if have && a.Node != 0 {
			s := ns[a.Node]
			switch {
			case gone(s):
				// Fenced: it runs nowhere now.
				why := fmt.Sprintf("node %d %s", a.Node, orNone(s))
				a = Assignment{Gen: a.Gen, Prev: a.Node, To: a.To, Since: now, Why: why}
				if !wanted || pinned(id) != 0 {
					writes = append(writes, del(key, r.version))
					continue
				}
				// Placed below, in the same write.
			case a.Releasing || s == clms.GoingDown:
				continue // its node stops it, or is being fenced
			case !wanted || d.banned(fails, a.Node) || s == clms.ShuttingDown || a.To != 0 && a.To != a.Node:
				a.Releasing = true
				if a.Why == "" || !wanted {
					a.Why = "stopping"
				}
				if d.banned(fails, a.Node) {
					a.Why = fmt.Sprintf("moving: banned on node %d", a.Node)
				}
				writes = append(writes, put(key, a, r.version))
				continue
			default:
				continue // where it belongs
			}
		}
		if !wanted {
			if have {
				writes = append(writes, del(key, r.version))
			}
			continue
		}
		node := choose(d, id, a, eligible, taken, place)
		if node == 0 {
			if have && r.v.Node != 0 {
				writes = append(writes, put(key, a, r.version)) // off the dead node, waiting
			}
			continue
		}
		taken[node] = true
		why := a.Why
		if why == "" {
			why = "placed"
		} else {
			why += ": started on node " + fmt.Sprint(node)
		}
		writes = append(writes, put(key, Assignment{Node: node, Gen: a.Gen + 1, Prev: a.Prev, Since: now, Why: why}, r.version))
	}
	return writes
}

func orNone(s clms.State) string {
	if s == "" {
		return "gone"
	}
	return string(s)
}

// choose picks the node for an instance that has none, by the
// service's placement: among the eligible nodes that run no other
// instance of it.
func choose(d *def, id string, a Assignment, eligible []int, taken map[int]bool, place func([]int) int) int {
	var cands []int
	for _, n := range eligible {
		if !taken[n] {
			cands = append(cands, n)
		}
	}
	if p := pinned(id); p != 0 {
		if slices.Contains(cands, p) {
			return p
		}
		return 0
	}
	if len(cands) == 0 {
		return 0
	}
	if a.To != 0 {
		if slices.Contains(cands, a.To) {
			return a.To
		}
	}
	// A move without a target goes elsewhere when it can.
	if a.Prev != 0 && len(cands) > 1 && a.Why == "moving" {
		cands = slices.DeleteFunc(cands, func(n int) bool { return n == a.Prev })
	}
	switch d.Placement {
	case clusterspec.PlaceLastNode:
		if slices.Contains(cands, a.Prev) {
			return a.Prev
		}
	case clusterspec.PlaceRoundRobin:
		if a.Prev != 0 {
			i := slices.Index(d.Nodes, a.Prev)
			for k := 1; k <= len(d.Nodes); k++ {
				if n := d.Nodes[(i+k)%len(d.Nodes)]; slices.Contains(cands, n) {
					return n
				}
			}
		}
	case clusterspec.PlaceFast:
		if place != nil {
			if n := place(cands); n != 0 && slices.Contains(cands, n) {
				return n
			}
		}
	}
	return cands[0]
}

// failureRequest is a node's report of a local failure, sent after it
// stopped the instance.
type failureRequest struct {
	Service  string   `json:"service"`
	Instance string   `json:"instance"`
	Gen      uint64   `json:"gen"`
	Node     int      `json:"node"`
	RC       int      `json:"rc"`
	Recovery Recovery `json:"recovery"`
	Reason   string   `json:"reason"`
}

// failureReply says whether the node restarts it in place.
type failureReply struct {
	Restart bool   `json:"restart"`
	Why     string `json:"why,omitempty"`
}

// onFailure counts a failure and decides: restart in place, or move.
func onFailure(d *def, v view, r failureRequest, now time.Time) ([]clms.RecordWrite, failureReply) {
	fails, writes := failuresNow(d, v, now)
	f := fails[r.Node]
	f.Count++
	f.Last, f.Reason = now, r.Reason
	if r.Recovery >= Hard {
		f.Banned = true
	}
	var expect uint64
	if old, ok := v.fails[d.Name][r.Node]; ok {
		expect = old.version
		writes = slices.DeleteFunc(writes, func(w clms.RecordWrite) bool { return w.Key == failKey(d.Name, r.Node) })
	}
	writes = append(writes, put(failKey(d.Name, r.Node), f, expect))
	reply := failureReply{Restart: true}
	move := f.Banned || f.Count >= d.MigrationThreshold
	switch {
	case r.Recovery == Fatal:
		writes = append(writes, put(stoppedPrefix+d.Name, Stopped{At: now, By: "fatal failure on node " + fmt.Sprint(r.Node) + ": " + r.Reason}, v.stopped[d.Name].version))
		reply = failureReply{Why: "stopped everywhere: the configuration is wrong (" + RCName(r.RC) + ")"}
		move = true
	case move:
		reply = failureReply{Why: fmt.Sprintf("%d failures on node %d (threshold %d): moving", f.Count, r.Node, d.MigrationThreshold)}
		if f.Banned && f.Count < d.MigrationThreshold {
			reply.Why = fmt.Sprintf("cannot run on node %d (%s): moving", r.Node, RCName(r.RC))
		}
	}
	if move {
		if a, ok := v.assign[d.Name][r.Instance]; ok && a.v.Node == r.Node && a.v.Gen == r.Gen {
			writes = append(writes, put(assignKey(d.Name, r.Instance), Assignment{Gen: a.v.Gen, Prev: r.Node, Since: now, Why: reply.Why}, a.version))
		}
	}
	return writes, reply
}

// releasedRequest is a node's word that it stopped an instance it was
// asked to let go.
type releasedRequest struct {
	Service  string `json:"service"`
	Instance string `json:"instance"`
	Gen      uint64 `json:"gen"`
	Node     int    `json:"node"`
}

func onReleased(d *def, v view, r releasedRequest, now time.Time) []clms.RecordWrite {
	a, ok := v.assign[d.Name][r.Instance]
	if !ok || a.v.Node != r.Node || a.v.Gen != r.Gen {
		return nil // moved already
	}
	why := a.v.Why
	if why == "" || why == "stopping" {
		why = fmt.Sprintf("stopped on node %d", r.Node)
	}
	return []clms.RecordWrite{put(assignKey(d.Name, r.Instance), Assignment{Gen: a.v.Gen, Prev: r.Node, To: a.v.To, Since: now, Why: why}, a.version)}
}

// controlRequest is an operator's verb on a service.
type controlRequest struct {
	Verb     string `json:"verb"` // start, stop, move
	Service  string `json:"service"`
	Instance string `json:"instance,omitempty"`
	To       int    `json:"to,omitempty"`
	By       string `json:"by"`
}

var errUnknownService = errors.New("no such HA service")

func onControl(d *def, v view, r controlRequest, st clms.Status, now time.Time) ([]clms.RecordWrite, error) {
	switch r.Verb {
	case "stop":
		if _, ok := v.stopped[d.Name]; ok {
			return nil, nil
		}
		return []clms.RecordWrite{put(stoppedPrefix+d.Name, Stopped{At: now, By: r.By}, 0)}, nil
	case "start":
		// Like Pacemaker's cleanup with it: the failure counts go.
		var ws []clms.RecordWrite
		if s, ok := v.stopped[d.Name]; ok {
			ws = append(ws, del(stoppedPrefix+d.Name, s.version))
		}
		for n, f := range v.fails[d.Name] {
			ws = append(ws, del(failKey(d.Name, n), f.version))
		}
		return ws, nil
	case "move":
		if d.All {
			return nil, fmt.Errorf("%s runs on every node (instances: all): nothing to move", d.Name)
		}
		ns := states(st)
		if r.To != 0 && (ns[r.To] != clms.Up || !slices.Contains(d.Nodes, r.To)) {
			return nil, fmt.Errorf("node %d cannot run %s (it is %s; the service's nodes are %v)", r.To, d.Name, orNone(ns[r.To]), d.Nodes)
		}
		inst := r.Instance
		if inst == "" {
			inst = "0"
		}
		a, ok := v.assign[d.Name][inst]
		if !ok || a.v.Node == 0 {
			return nil, fmt.Errorf("%s instance %s runs nowhere now", d.Name, inst)
		}
		if r.To == a.v.Node {
			return nil, fmt.Errorf("%s instance %s already runs on node %d", d.Name, inst, r.To)
		}
		x := a.v
		x.Releasing, x.To, x.Why = true, r.To, "moving"
		return []clms.RecordWrite{put(assignKey(d.Name, inst), x, a.version)}, nil
	}
	return nil, fmt.Errorf("unknown verb %q (start, stop, move)", r.Verb)
}
