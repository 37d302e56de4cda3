package clms

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// RunLevel is the cluster's run level: the last one committed, or the
// configured one before any was.
func (m *Member) RunLevel() int {
	if l := m.fsm.runLevel(); l != 0 {
		return l
	}
	return m.cfg.RunLevel
}

// SetReached tells the cluster (by gossip) which run level this node has
// reached.
func (m *Member) SetReached(level int) {
	if int(m.reached.Swap(int32(level))) != level {
		m.publish()
	}
}

// Status is this node's view of the cluster.
type Status struct {
	Self   int `json:"self"`
	Master int `json:"master"`
	// Quorum is false on a node that has no master it hears from: a
	// minority side, which grants nothing.
	Quorum         bool   `json:"quorum"`
	Term           uint64 `json:"term"`
	LastTransition uint64 `json:"last_transition"`
	// RunLevel is the cluster's run level.
	RunLevel int `json:"runlevel"`
	// Waiting, with wait_for_all, says the cluster has not yet seen every
	// node at once: it takes no node Up.
	Waiting string `json:"waiting,omitempty"`
	// Refused lists gossip members not taken for the node they claim,
	// and why (docs/trust.md).
	Refused []string `json:"refused,omitempty"`
	// Leaving: this node has told the cluster it is shutting down. Its
	// own row may not say so yet (or ever, in a whole-cluster shutdown,
	// when the master goes first).
	Leaving bool         `json:"leaving,omitempty"`
	Nodes   []NodeStatus `json:"nodes"`
}

// NodeStatus is one row of the status table.
type NodeStatus struct {
	NodeRecord
	Voter bool `json:"voter"`
	// Gone: the node left gossip or gossip lost it. The table may still
	// show it as it was when this side can no longer commit (no master:
	// the master itself went), so shutdown waits on this too.
	Gone bool `json:"gone,omitempty"`
	// Fence, on the master, says where the fencing of a failed node
	// stands while its Down waits for it (empty: none under way).
	Fence string `json:"fence,omitempty"`
}

// Status reports this node's view.
func (m *Member) Status() Status {
	recs, last := m.fsm.snapshot()
	st := Status{Self: m.cfg.Node, LastTransition: last, RunLevel: m.RunLevel(), Leaving: m.leaving.Load()}
	if m.cfg.WaitForAll > 0 && !m.fsm.isFormed() {
		st.Waiting = fmt.Sprintf("wait_for_all: not yet %d nodes seen at once", m.cfg.WaitForAll)
	}
	_, id := m.rn().LeaderWithID()
	if n, err := strconv.Atoi(string(id)); err == nil {
		st.Master = n
	}
	st.Term = m.rn().CurrentTerm()
	switch m.rn().State() {
	case raft.Leader:
		st.Quorum = true
	case raft.Follower:
		st.Quorum = st.Master != 0 && time.Since(m.rn().LastContact()) < time.Second
	}
	var gossiping map[int]meta
	if m.gossip != nil {
		gossiping = m.gossip.nodes()
		st.Refused = m.gossip.refused()
	}
	voters := map[int]bool{}
	if servers, err := m.raftConfig(); err == nil {
		for _, s := range servers {
			if n, err := strconv.Atoi(string(s.ID)); err == nil && s.Suffrage == raft.Voter {
				voters[n] = true
			}
		}
	}
	for _, r := range recs {
		r.Addr, _, _ = strings.Cut(r.Addr, "#")
		st.Nodes = append(st.Nodes, NodeStatus{NodeRecord: r, Voter: voters[r.Node], Gone: m.gossip != nil && !has(gossiping, r.Node), Fence: m.fenceStatus(r.Node)})
	}
	return st
}

func has(m map[int]meta, n int) bool {
	_, ok := m[n]
	return ok
}

// History returns the transitions this node applied (the most recent
// ones, since it joined or restored a snapshot).
func (m *Member) History() []Transition { return m.fsm.historyCopy() }

// Up lists the nodes that are Up in this node's copy of the membership
// table, in order: cheap enough to ask on every request.
func (m *Member) Up() []int {
	recs, _ := m.fsm.snapshot()
	var out []int
	for _, r := range recs {
		if r.State == Up {
			out = append(out, r.Node)
		}
	}
	return out
}

// IP is the node's interconnect address: Addr without its port.
func (r NodeRecord) IP() (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(r.Addr)
	if err != nil {
		host = r.Addr
	}
	a, err := netip.ParseAddr(host)
	return a, err == nil
}

// NodeIP is node's interconnect address in the table.
func (st Status) NodeIP(node int) (netip.Addr, bool) {
	for _, n := range st.Nodes {
		if n.Node == node {
			return n.IP()
		}
	}
	return netip.Addr{}, false
}
