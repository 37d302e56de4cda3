package clms

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// State is a node's membership state, as in openSSI's CLMS.
type State string

// Node states.
const (
	NeverUp      State = "NeverUp"
	ComingUp     State = "ComingUp"
	Up           State = "Up"
	ShuttingDown State = "ShuttingDown"
	GoingDown    State = "GoingDown"
	Down         State = "Down"
)

// canMove says whether the master may commit from -> to.
func canMove(from, to State) bool {
	switch from {
	case NeverUp, Down:
		return to == ComingUp
	case ComingUp:
		return to == Up || to == GoingDown || to == Down
	case Up:
		return to == ShuttingDown || to == GoingDown || to == Down
	case ShuttingDown:
		return to == Down || to == GoingDown
	case GoingDown:
		return to == Down
	}
	return false
}

// Transition is one committed change of one node's state. IDs increase by
// one with every transition, cluster-wide, so every node applies the same
// sequence.
type Transition struct {
	ID    uint64    `json:"id"`
	Node  int       `json:"node"`
	State State     `json:"state"`
	Addr  string    `json:"addr,omitempty"`
	At    time.Time `json:"at"`
	// Master is the node that committed it.
	Master int `json:"master"`
	// Reason says why (join, failure detected, shutdown, ...).
	Reason string `json:"reason,omitempty"`
}

// NodeRecord is the cluster's view of one node.
type NodeRecord struct {
	Node       int    `json:"node"`
	State      State  `json:"state"`
	Transition uint64 `json:"transition"`
	Addr       string `json:"addr,omitempty"`
	// Gossip is where the node's gossip listens, for reconnecting after a
	// partition heals.
	Gossip string    `json:"gossip,omitempty"`
	Since  time.Time `json:"since"`
}

// command is a raft log entry: a proposed transition. Expect is the
// transition id the master saw for the node when it decided; a command
// decided on stale information is refused when applied.
type command struct {
	// Kind is "" for a node transition, or kindRunLevel: the cluster's
	// target run level becomes Level.
	Kind   string    `json:"kind,omitempty"`
	Level  int       `json:"level,omitempty"`
	Node   int       `json:"node"`
	State  State     `json:"state"`
	Expect uint64    `json:"expect"`
	Addr   string    `json:"addr,omitempty"`
	Gossip string    `json:"gossip,omitempty"`
	At     time.Time `json:"at"`
	Master int       `json:"master"`
	Reason string    `json:"reason,omitempty"`
	// Writes are the record writes of a kindRecords command.
	Writes []RecordWrite `json:"writes,omitempty"`
}

// kindRunLevel is the command that sets the cluster's run level.
const kindRunLevel = "runlevel"

// kindFormed records that every expected node has been seen at once
// (wait_for_all): from then on the cluster grants Up as usual.
const kindFormed = "formed"

// RunLevelSet is what applying a run-level command returns.
type RunLevelSet struct{ Level int }

// errStale is what Apply returns for a refused command.
var errStale = errors.New("stale or invalid transition")

// fsm is the replicated membership table.
type fsm struct {
	mu      sync.Mutex
	nodes   map[int]*NodeRecord
	last    uint64
	target  int // the cluster's run level; 0 until first set
	formed  bool
	history []Transition
	records map[string]Record
	// watchers are poked when records change.
	watchers  map[int]chan<- struct{}
	nextWatch int
	// applied receives every transition in order (never blocks: the
	// member drains it).
	applied func(Transition)
}

func newFSM(applied func(Transition)) *fsm {
	return &fsm{nodes: map[int]*NodeRecord{}, records: map[string]Record{}, watchers: map[int]chan<- struct{}{}, applied: applied}
}

// maxHistory bounds the transitions kept in memory.
const maxHistory = 4096

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any {
	var c command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return fmt.Errorf("clms: log entry %d: %w", l.Index, err)
	}
	if c.Kind == kindRunLevel {
		if c.Level < 1 || c.Level > 5 {
			return fmt.Errorf("%w: run level %d", errStale, c.Level)
		}
		f.mu.Lock()
		f.target = c.Level
		f.mu.Unlock()
		return RunLevelSet{Level: c.Level}
	}
	if c.Kind == kindFormed {
		f.mu.Lock()
		f.formed = true
		f.mu.Unlock()
		return nil
	}
	if c.Kind == kindRecords {
		f.mu.Lock()
		defer f.mu.Unlock()
		if err := f.applyRecords(c.Writes, l.Index); err != nil {
			return err
		}
		f.pokeWatchers()
		return RecordsWritten{Version: l.Index}
	}
	if c.Kind != "" {
		return fmt.Errorf("%w: unknown command kind %q", errStale, c.Kind)
	}
	f.mu.Lock()
	t, err := f.applyLocked(c)
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if f.applied != nil {
		f.applied(t)
	}
	return t
}

func (f *fsm) applyLocked(c command) (Transition, error) {
	if c.Node < 1 {
		return Transition{}, fmt.Errorf("%w: node %d", errStale, c.Node)
	}
	cur := f.nodes[c.Node]
	from, seen := NeverUp, uint64(0)
	if cur != nil {
		from, seen = cur.State, cur.Transition
	}
	if c.Expect != seen {
		return Transition{}, fmt.Errorf("%w: node %d is at transition %d, the command expected %d", errStale, c.Node, seen, c.Expect)
	}
	if !canMove(from, c.State) {
		return Transition{}, fmt.Errorf("%w: node %d %s -> %s", errStale, c.Node, from, c.State)
	}
	f.last++
	t := Transition{ID: f.last, Node: c.Node, State: c.State, Addr: c.Addr, At: c.At, Master: c.Master, Reason: c.Reason}
	if cur == nil {
		cur = &NodeRecord{Node: c.Node}
		f.nodes[c.Node] = cur
	}
	cur.State, cur.Transition, cur.Since = c.State, t.ID, c.At
	if c.Addr != "" {
		cur.Addr = c.Addr
	}
	if c.Gossip != "" {
		cur.Gossip = c.Gossip
	}
	f.history = append(f.history, t)
	if len(f.history) > maxHistory {
		f.history = f.history[len(f.history)-maxHistory:]
	}
	return t, nil
}

func (f *fsm) snapshot() ([]NodeRecord, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]NodeRecord, 0, len(f.nodes))
	for _, n := range f.nodes {
		out = append(out, *n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, f.last
}

func (f *fsm) record(n int) (NodeRecord, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.nodes[n]
	if !ok {
		return NodeRecord{Node: n, State: NeverUp}, false
	}
	return *r, true
}

func (f *fsm) historyCopy() []Transition {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Transition(nil), f.history...)
}

type fsmState struct {
	Nodes   []NodeRecord `json:"nodes"`
	Last    uint64       `json:"last"`
	Target  int          `json:"target,omitempty"`
	Formed  bool         `json:"formed,omitempty"`
	Records []Record     `json:"records,omitempty"`
}

func (f *fsm) isFormed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.formed
}

func (f *fsm) runLevel() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.target
}

// Snapshot implements raft.FSM.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	nodes, last := f.snapshot()
	f.mu.Lock()
	formed := f.formed
	f.mu.Unlock()
	b, err := json.Marshal(fsmState{Nodes: nodes, Last: last, Target: f.runLevel(), Formed: formed, Records: f.recordsWith("")})
	if err != nil {
		return nil, err
	}
	return snapshot(b), nil
}

// Restore implements raft.FSM.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var st fsmState
	if err := json.NewDecoder(io.LimitReader(rc, 64<<20)).Decode(&st); err != nil {
		return fmt.Errorf("clms: restore snapshot: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes = map[int]*NodeRecord{}
	for i := range st.Nodes {
		n := st.Nodes[i]
		f.nodes[n.Node] = &n
	}
	f.last = st.Last
	f.target = st.Target
	f.formed = st.Formed
	f.history = nil
	f.records = map[string]Record{}
	for _, r := range st.Records {
		f.records[r.Key] = r
	}
	f.pokeWatchers()
	return nil
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s snapshot) Release() {}
