package clms

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/locus-ssi/locus/services/ics"
)

// member is one live gossip member as this node last heard of it: its
// gossip address and, if it is a Locus node, what it gossips (meta).
type member struct {
	Addr string // host:port of its gossip
	Meta meta
	OK   bool // Meta parsed as a Locus node's, and its claims hold
	// Why says why a member that gossips a Locus node's metadata is not
	// taken for that node (its claims do not match its identity).
	Why   string
	Since time.Time // first heard of under this name
}

// gossipTable is this node's copy of gossip's live members, kept from
// memberlist's join, update and leave events, which memberlist sends
// holding its own table's lock. (Its Members() hands out pointers into
// that table, which it keeps writing: reading them races.) Every event
// also wakes the master (kick).
//
// A member counts as node N only if its claims hold: its gossip name is
// nodeN and, where certAddr says which address node N's certificate
// names, it gossips from that address and gives its Raft address there
// too. Two members that both hold as node N: the one heard of first is
// node N, the other is refused (and reported), so the master never flips
// between them.
type gossipTable struct {
	wake     kick
	certAddr func(node int) (netip.Addr, bool)
	log      *slog.Logger
	mu       sync.Mutex
	m        map[string]member // by memberlist node name
	warned   map[string]bool   // refusals logged, by name and reason
}

func newGossipTable(wake kick, certAddr func(int) (netip.Addr, bool), log *slog.Logger) *gossipTable {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &gossipTable{wake: wake, certAddr: certAddr, log: log, m: map[string]member{}, warned: map[string]bool{}}
}

// check says why md, gossiped by n, is not node md.Node's ("" if it is).
func (g *gossipTable) check(n *memberlist.Node, md meta) string {
	if n.Name != ics.NodeName(md.Node) {
		return fmt.Sprintf("it claims node %d under the name %q", md.Node, n.Name)
	}
	if g.certAddr == nil {
		return ""
	}
	want, ok := g.certAddr(md.Node)
	if !ok {
		return fmt.Sprintf("node %d has no address in the spec", md.Node)
	}
	from, _ := netip.AddrFromSlice(n.Addr.To4())
	raftHost, _, _ := net.SplitHostPort(md.Raft)
	if from != want || raftHost != want.String() {
		return fmt.Sprintf("it claims node %d from %s (Raft %s), but node %d's certificate names %s", md.Node, n.Addr, md.Raft, md.Node, want)
	}
	return ""
}

func (g *gossipTable) set(n *memberlist.Node) {
	var md meta
	ok := json.Unmarshal(n.Meta, &md) == nil && md.Node >= 1 && md.Raft != ""
	why := ""
	if ok {
		if why = g.check(n, md); why != "" {
			ok = false
		}
	}
	g.mu.Lock()
	since := time.Now()
	if old, seen := g.m[n.Name]; seen {
		since = old.Since
	}
	g.m[n.Name] = member{Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), Meta: md, OK: ok, Why: why, Since: since}
	logIt := why != "" && !g.warned[n.Name+why]
	if logIt {
		g.warned[n.Name+why] = true
	}
	g.mu.Unlock()
	if logIt {
		g.log.Warn("gossip: a member's claims do not match its identity; it is not taken for that node", "member", n.Name, "addr", n.Addr.String(), "why", why)
	}
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

// nodes returns the live Locus nodes' metas by node number: for each
// number, the member whose claims hold, the first heard of if several do.
func (g *gossipTable) nodes() map[int]meta {
	out := map[int]meta{}
	for n, m := range g.holders() {
		out[n] = m.Meta
	}
	return out
}

// holders is, by node number, the member taken for that node.
func (g *gossipTable) holders() map[int]member {
	first := map[int]member{}
	for _, m := range g.members() {
		if !m.OK {
			continue
		}
		if f, dup := first[m.Meta.Node]; dup && (f.Since.Before(m.Since) || (f.Since.Equal(m.Since) && f.Addr < m.Addr)) {
			continue
		}
		first[m.Meta.Node] = m
	}
	return first
}

// refused lists the members not taken for the node they claim, and why:
// their claims do not hold, or another member holds that number.
func (g *gossipTable) refused() []string {
	holders := g.holders()
	var out []string
	for _, m := range g.members() {
		switch {
		case m.Why != "":
			out = append(out, m.Addr+": "+m.Why)
		case m.OK && holders[m.Meta.Node].Addr != m.Addr:
			out = append(out, fmt.Sprintf("%s: claims node %d, which another member holds", m.Addr, m.Meta.Node))
		}
	}
	sort.Strings(out)
	return out
}
