package lvs

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/locus-ssi/locus/services/clms"
)

// directorKey is the record that names the director.
const directorKey = "lvs/director"

// Director says which node holds the cluster IP.
type Director struct {
	Node int    `json:"node"`
	Gen  uint64 `json:"gen"`
	// Releasing: Node is asked to give the address up (it shuts down);
	// the next director takes it once Node says it did, or is Down.
	Releasing bool `json:"releasing,omitempty"`
	// Next: the node an operator moved the address to; it takes it
	// once Node released it.
	Next  int       `json:"next,omitempty"`
	Prev  int       `json:"prev,omitempty"`
	Since time.Time `json:"since"`
	Why   string    `json:"why,omitempty"`
}

func readDirector(rs []clms.Record) (Director, uint64, bool) {
	for _, r := range rs {
		if r.Key == directorKey {
			var d Director
			if json.Unmarshal(r.Value, &d) == nil {
				return d, r.Version, true
			}
		}
	}
	return Director{}, 0, false
}

// candidates are the nodes that may direct, in order: the spec's
// directors, else every node the membership has, by number.
func candidates(directors []int, st clms.Status) []int {
	if len(directors) > 0 {
		return directors
	}
	var out []int
	for _, n := range st.Nodes {
		out = append(out, n.Node)
	}
	slices.Sort(out)
	return out
}

// planDirector is the master's decision: the record write that gives
// the cluster IP a director, or nil.
func planDirector(directors []int, cur Director, version uint64, have bool, st clms.Status, now time.Time) []clms.RecordWrite {
	state := map[int]clms.State{}
	for _, n := range st.Nodes {
		state[n.Node] = n.State
	}
	if have && cur.Node != 0 {
		switch s := state[cur.Node]; {
		case s == clms.Up && !cur.Releasing:
			return nil
		case s == clms.ShuttingDown && !cur.Releasing:
			cur.Releasing, cur.Why = true, fmt.Sprintf("node %d shutting down", cur.Node)
			return []clms.RecordWrite{put(cur, version)}
		case s == clms.Down || s == clms.NeverUp || s == "":
			cur = Director{Gen: cur.Gen, Prev: cur.Node, Why: fmt.Sprintf("node %d Down", cur.Node)}
		default:
			return nil // releasing, or GoingDown: being fenced
		}
	}
	order := candidates(directors, st)
	if cur.Next != 0 && state[cur.Next] == clms.Up && slices.Contains(order, cur.Next) {
		return []clms.RecordWrite{put(Director{Node: cur.Next, Gen: cur.Gen + 1, Prev: cur.Prev, Since: now, Why: cur.Why}, version)}
	}
	start := 0
	if i := slices.Index(order, cur.Prev); i >= 0 {
		start = i + 1 // the next one after the last director
	}
	for k := range order {
		n := order[(start+k)%len(order)]
		if state[n] == clms.Up {
			why := cur.Why
			if why == "" {
				why = "first director"
			}
			return []clms.RecordWrite{put(Director{Node: n, Gen: cur.Gen + 1, Prev: cur.Prev, Since: now, Why: why}, version)}
		}
	}
	if have && cur.Node == 0 {
		return nil
	}
	return []clms.RecordWrite{put(cur, version)} // no director can take it now
}

// planReleased: the old director gave the address up.
func planReleased(cur Director, version uint64, node int, gen uint64, now time.Time) []clms.RecordWrite {
	if cur.Node != node || cur.Gen != gen || !cur.Releasing {
		return nil
	}
	return []clms.RecordWrite{put(Director{Gen: cur.Gen, Prev: node, Next: cur.Next, Since: now, Why: cur.Why}, version)}
}

// planMove is the master's answer to an operator's move of the address
// to node to: the director releases it (its sync daemon stops as
// master, so the backups hold its connections), then to takes it.
func planMove(directors []int, cur Director, version uint64, st clms.Status, to int, why string, now time.Time) ([]clms.RecordWrite, error) {
	if !slices.Contains(candidates(directors, st), to) {
		return nil, fmt.Errorf("lvs: node %d is not one of the cluster IP's directors %v", to, candidates(directors, st))
	}
	state := map[int]clms.State{}
	for _, n := range st.Nodes {
		state[n.Node] = n.State
	}
	if state[to] != clms.Up {
		return nil, fmt.Errorf("lvs: node %d is not Up (%s): it cannot take the cluster IP", to, orNone(state[to]))
	}
	switch {
	case cur.Releasing:
		return nil, fmt.Errorf("lvs: node %d is giving the cluster IP up (%s); move it once that is done", cur.Node, cur.Why)
	case cur.Node == to:
		return nil, nil
	case cur.Node == 0 || state[cur.Node] != clms.Up:
		return []clms.RecordWrite{put(Director{Node: to, Gen: cur.Gen + 1, Prev: cur.Node, Since: now, Why: why}, version)}, nil
	}
	cur.Releasing, cur.Next, cur.Why = true, to, why
	return []clms.RecordWrite{put(cur, version)}, nil
}

func orNone(s clms.State) string {
	if s == "" {
		return "not in the membership"
	}
	return string(s)
}

func put(d Director, expect uint64) clms.RecordWrite {
	b, _ := json.Marshal(d)
	return clms.RecordWrite{Key: directorKey, Value: b, Expect: expect}
}
