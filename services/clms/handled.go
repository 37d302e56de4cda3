package clms

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/hashicorp/memberlist"
	"github.com/locus-ssi/locus/services/ics"
)

// A node that has run its nodedown handlers for a Down tells the master
// directly, in one message over gossip's TCP port, instead of gossiping
// its new mark to the whole cluster: a gossiped update costs every member
// a broadcast to every other (at 128 members, a Down made 127 updates,
// each sent to 127 members several times over, and that was most of the
// cluster's CPU). The mark is still in the node's gossiped state whenever
// that is published for another reason; the master takes the newer of
// the two. A node reports again to a new master.

// handledReport is the message: node Node, in boot Boot, has run the
// handlers of every transition up to Handled.
type handledReport struct {
	Node    int    `json:"n"`
	Boot    string `json:"b"`
	Handled uint64 `json:"h"`
}

// msgHandled is the first byte of a handled report among gossip's user
// messages.
const msgHandled = 'H'

// maxHandledReport bounds the message (a node number, a 16-digit boot id
// and a transition number take well under 100 bytes).
const maxHandledReport = 256

func encodeHandled(r handledReport) []byte {
	b, _ := json.Marshal(r)
	return append([]byte{msgHandled}, b...)
}

// decodeHandled parses a gossip user message as a handled report.
func decodeHandled(b []byte) (handledReport, error) {
	var r handledReport
	switch {
	case len(b) == 0:
		return r, errors.New("clms: gossip message: empty")
	case b[0] != msgHandled:
		return r, fmt.Errorf("clms: gossip message: kind %q, want %q", b[0], msgHandled)
	case len(b) > maxHandledReport:
		return r, fmt.Errorf("clms: handled report: %d bytes, want at most %d", len(b), maxHandledReport)
	}
	if err := json.Unmarshal(b[1:], &r); err != nil {
		return r, fmt.Errorf("clms: handled report: %w", err)
	}
	if r.Node < 1 {
		return r, fmt.Errorf("clms: handled report: node %d: want >= 1", r.Node)
	}
	if r.Boot == "" {
		return r, fmt.Errorf("clms: handled report from node %d: no boot id", r.Node)
	}
	return r, nil
}

// handledMarks is the master's record of the reports, by node, and this
// node's own record of what it last reported to whom.
type handledMarks struct {
	mu sync.Mutex
	by map[int]handledReport

	sendMu sync.Mutex // held while a report is sent
	sentTo string     // the master the last report went to
	sent   uint64     // the mark it carried
	downs  bool       // this node has run the handlers of a Down
}

// note records a report (the newer of two from the same boot).
func (h *handledMarks) note(r handledReport) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.by == nil {
		h.by = map[int]handledReport{}
	}
	if old, ok := h.by[r.Node]; ok && old.Boot == r.Boot && old.Handled >= r.Handled {
		return
	}
	h.by[r.Node] = r
}

// of is node n's reported mark in boot boot, 0 if none.
func (h *handledMarks) of(n int, boot string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r, ok := h.by[n]; ok && r.Boot == boot {
		return r.Handled
	}
	return 0
}

// handledOf is the newest mark the master knows of node n, whose gossiped
// state is md.
func (m *Member) handledOf(n int, md meta) uint64 {
	if n == m.cfg.Node {
		return m.handled.Load()
	}
	return max(md.Handled, m.marks.of(n, md.Boot))
}

// notifyMsg takes a gossip user message (memberlist's delegate; it must
// not block).
func (m *Member) notifyMsg(b []byte) {
	r, err := decodeHandled(b)
	if err != nil {
		m.cfg.Log.Warn("gossip message dropped", "err", err)
		return
	}
	m.marks.note(r)
	m.events.poke() // a rejoin may wait on it
}

// reportHandled sends this node's mark to the master, if a Down's
// handlers have run here and the master has not had the mark yet (or a
// new master has not). It is called when the dispatch queue drains after
// a Down, and every second to catch a master change or a failed send.
// down says the caller has just run a Down's handlers.
func (m *Member) reportHandled(down bool) {
	m.marks.sendMu.Lock()
	defer m.marks.sendMu.Unlock()
	m.marks.downs = m.marks.downs || down
	r := m.rn()
	if !m.marks.downs || r == nil || m.ml == nil {
		return
	}
	_, id := r.LeaderWithID()
	mark := m.handled.Load()
	if id == "" || string(id) == strconv.Itoa(m.cfg.Node) || (string(id) == m.marks.sentTo && mark <= m.marks.sent) {
		return
	}
	var to *memberlist.Node
	name := ""
	if n, err := strconv.Atoi(string(id)); err == nil {
		name = ics.NodeName(n)
	}
	for _, n := range m.ml.Members() {
		if n.Name == name {
			to = n
		}
	}
	if to == nil {
		return // not in this node's gossip yet: next second
	}
	if err := m.ml.SendReliable(to, encodeHandled(handledReport{Node: m.cfg.Node, Boot: m.bootID, Handled: mark})); err != nil {
		m.cfg.Log.Debug("report handled transitions to the master", "master", string(id), "err", err)
		return
	}
	m.marks.sentTo, m.marks.sent = string(id), mark
}
