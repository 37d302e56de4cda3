package clms

import "sync"

// OnTransition registers a handler run on this node for every transition,
// in transition order (nodeup and nodedown callbacks build on it).
// Handlers run one at a time; a slow handler delays the next transition's
// handlers, never the commit.
func (m *Member) OnTransition(h func(Transition)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.handlers = append(m.handlers, h)
}

// Subscribe sends every transition applied from now on to ch, dropping
// those ch has no room for (a watcher, unlike a handler, may fall behind);
// the returned func unsubscribes.
func (m *Member) Subscribe(ch chan<- Transition) (cancel func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.subs == nil {
		m.subs = map[int]chan<- Transition{}
	}
	id := m.nextSub
	m.nextSub++
	m.subs[id] = ch
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		delete(m.subs, id)
	}
}

// Live reports whether t was committed after this boot of this node
// joined (its ComingUp), rather than replayed from the log as history
// while it caught up. Handlers that act on a transition (take over a dead
// node's resources) act only on live ones. It is exact inside a handler,
// which runs in transition order.
func (m *Member) Live(t Transition) bool {
	j := m.joined.Load()
	return j != 0 && t.ID > j
}

func (m *Member) dispatch() {
	defer m.wg.Done()
	unreported := false
	for {
		select {
		case <-m.stop:
			return // a stopped node runs no more handlers
		default:
		}
		t, ok := m.queue.pop(m.stop)
		if !ok {
			return
		}
		m.mu.Lock()
		hs := append([]func(Transition){}, m.handlers...)
		for _, ch := range m.subs {
			select {
			case ch <- t:
			default:
			}
		}
		m.mu.Unlock()
		if t.Node == m.cfg.Node && t.State == ComingUp && bootOf(t.Addr) == m.bootID {
			m.joined.Store(t.ID)
		}
		for _, h := range hs {
			h(t)
		}
		m.handled.Store(t.ID)
		// The master waits for the handled mark of a Down before it lets
		// the node back: report it once the queue is drained (handled.go).
		// (A node replaying a long history would otherwise send one
		// report per Down in it.)
		unreported = unreported || t.State == Down
		if unreported && m.queue.empty() {
			m.reportHandled(true)
			unreported = false
		}
	}
}

// cleanedUp says whether every node that was in the cluster when node r
// went Down has run its nodedown handlers for it (the paper's cleanup
// before rejoin). Nodes that joined after that Down have nothing to
// clean up.
func (m *Member) cleanedUp(r NodeRecord, alive map[int]meta, known map[int]NodeRecord) bool {
	for n, md := range alive {
		k, ok := known[n]
		if n == r.Node || !ok || k.Transition > r.Transition {
			continue
		}
		if k.State != Up && k.State != ComingUp && k.State != ShuttingDown {
			continue
		}
		if h := m.handledOf(n, md); h < r.Transition {
			if prev, _ := m.blocked.Swap(r.Node, r.Transition); prev != r.Transition {
				m.cfg.Log.Info("rejoin waits for nodedown cleanup", "node", r.Node, "down", r.Transition, "on", n, "handled", h)
			}
			return false
		}
	}
	return true
}

// queue is an unbounded FIFO of transitions, so the Raft apply path never
// waits for handlers.
type queue struct {
	mu    sync.Mutex
	items []Transition
	ready chan struct{}
}

func newQueue() *queue { return &queue{ready: make(chan struct{}, 1)} }

func (q *queue) push(t Transition) {
	q.mu.Lock()
	q.items = append(q.items, t)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *queue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) == 0
}

func (q *queue) pop(stop <-chan struct{}) (Transition, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			t := q.items[0]
			q.items = q.items[1:]
			q.mu.Unlock()
			return t, true
		}
		q.mu.Unlock()
		select {
		case <-stop:
			return Transition{}, false
		case <-q.ready:
		}
	}
}
