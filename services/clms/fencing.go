package clms

import (
	"context"
	"fmt"
	"time"
)

// Fencing runs off the master's reconcile loop: each fence in its own
// goroutine with a deadline, so a hung agent delays only its own node's
// Down, never the other nodes' transitions; a failed one is tried again
// after a pause that doubles up to a minute (not at the loop's 10 Hz), and
// the node stays in its state meanwhile (as Pacemaker keeps a node it
// could not fence UNCLEAN), with the failure in the master's status.

// Fencing's timing.
const (
	fenceTimeout    = 30 * time.Second
	fenceRetryFirst = time.Second
	fenceRetryMax   = time.Minute
)

// fenceJob is the fencing of one incarnation of a node (its record's
// transition when the master decided it must go Down).
type fenceJob struct {
	transition uint64
	running    bool
	done       bool // fenced: its Down may be committed
	attempts   int
	err        error
	next       time.Time // no new attempt before this, after a failure
}

// fenced reports whether node r (decided Down at its current transition)
// has been fenced. If not, it starts a fence, unless one is running or
// the last one failed too recently; the master's loop is woken when it
// ends.
func (m *Member) fenced(r NodeRecord) bool {
	m.fenceMu.Lock()
	defer m.fenceMu.Unlock()
	if m.fences == nil {
		m.fences = map[int]*fenceJob{}
	}
	j := m.fences[r.Node]
	if j == nil || j.transition != r.Transition {
		j = &fenceJob{transition: r.Transition}
		m.fences[r.Node] = j
	}
	switch {
	case j.done:
		return true
	case j.running, time.Now().Before(j.next):
		return false
	}
	j.running = true
	j.attempts++
	node, attempt := r.Node, j.attempts
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), fenceTimeout)
		defer cancel()
		go func() {
			select {
			case <-m.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		start := time.Now()
		err := m.cfg.Fence(ctx, node)
		retry := min(fenceRetryFirst<<min(attempt-1, 10), fenceRetryMax)
		m.fenceMu.Lock()
		j.running = false
		if err == nil {
			j.done, j.err = true, nil
		} else {
			j.err, j.next = err, time.Now().Add(retry)
		}
		m.fenceMu.Unlock()
		if err != nil {
			m.cfg.Log.Error("fencing failed; the node stays in its state until fenced", "node", node, "attempt", attempt,
				"took", time.Since(start).Round(time.Millisecond), "retry_in", retry, "err", err)
		} else {
			m.cfg.Log.Info("fenced", "node", node, "attempt", attempt, "took", time.Since(start).Round(time.Millisecond))
		}
		m.events.poke()
	}()
	return false
}

// markFenced records that node was fenced in the incarnation the table
// holds now (two_node's fence of a lost master), so the reconcile that
// then commits its Down does not power it off a second time: with a
// reboot agent that second fence would hit the node's new boot.
func (m *Member) markFenced(node int) {
	r, ok := m.fsm.record(node)
	if !ok {
		return
	}
	m.fenceMu.Lock()
	defer m.fenceMu.Unlock()
	if m.fences == nil {
		m.fences = map[int]*fenceJob{}
	}
	m.fences[node] = &fenceJob{transition: r.Transition, done: true, attempts: 1}
}

// forgetFence drops node's fencing: it went Down, or it is alive and
// well again in the same incarnation (a suspicion that cleared).
func (m *Member) forgetFence(node int) {
	m.fenceMu.Lock()
	defer m.fenceMu.Unlock()
	delete(m.fences, node)
}

// fenceStatus says, for the status table, where node's fencing stands
// ("" when none is under way).
func (m *Member) fenceStatus(node int) string {
	m.fenceMu.Lock()
	defer m.fenceMu.Unlock()
	j := m.fences[node]
	switch {
	case j == nil || j.done:
		return ""
	case j.running && j.attempts == 1:
		return "fencing"
	case j.running:
		return fmt.Sprintf("fencing (attempt %d; the last failed: %v)", j.attempts, j.err)
	default:
		return fmt.Sprintf("not fenced: %d attempt(s) failed, the last: %v; next in %s", j.attempts, j.err, time.Until(j.next).Round(time.Second))
	}
}
