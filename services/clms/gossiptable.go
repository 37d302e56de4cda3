package clms

import (
	"encoding/json"
	"net"
	"strconv"
	"sync"

	"github.com/hashicorp/memberlist"
)

// member is one live gossip member as this node last heard of it: its
// gossip address and, if it is a Locus node, what it gossips (meta).
type member struct {
	Addr string // host:port of its gossip
	Meta meta
	OK   bool // Meta parsed as a Locus node's
}

// gossipTable is this node's copy of gossip's live members, kept from
// memberlist's join, update and leave events, which memberlist sends
// holding its own table's lock. (Its Members() hands out pointers into
// that table, which it keeps writing: reading them races.) Every event
// also wakes the master (kick).
type gossipTable struct {
	wake kick
	mu   sync.Mutex
	m    map[string]member // by memberlist node name
}

func newGossipTable(wake kick) *gossipTable {
	return &gossipTable{wake: wake, m: map[string]member{}}
}

func (g *gossipTable) set(n *memberlist.Node) {
	var md meta
	ok := json.Unmarshal(n.Meta, &md) == nil && md.Node >= 1 && md.Raft != ""
	g.mu.Lock()
	g.m[n.Name] = member{Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), Meta: md, OK: ok}
	g.mu.Unlock()
	g.wake.poke()
}

// NotifyJoin implements memberlist.EventDelegate.
func (g *gossipTable) NotifyJoin(n *memberlist.Node) { g.set(n) }

// NotifyUpdate implements memberlist.EventDelegate.
func (g *gossipTable) NotifyUpdate(n *memberlist.Node) { g.set(n) }

// NotifyLeave implements memberlist.EventDelegate: the node left or
// gossip declared it dead. (A suspect node is still a member.)
func (g *gossipTable) NotifyLeave(n *memberlist.Node) {
	g.mu.Lock()
	delete(g.m, n.Name)
	g.mu.Unlock()
	g.wake.poke()
}

// members returns the live members.
func (g *gossipTable) members() []member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]member, 0, len(g.m))
	for _, m := range g.m {
		out = append(out, m)
	}
	return out
}

// nodes returns the live Locus nodes' metas by node number.
func (g *gossipTable) nodes() map[int]meta {
	out := map[int]meta{}
	for _, m := range g.members() {
		if m.OK {
			out[m.Meta.Node] = m.Meta
		}
	}
	return out
}
