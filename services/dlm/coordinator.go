package dlm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/locus-ssi/locus/services/clms"
)

// coordinator runs lockspace changes on the master. Every change is a
// round: a new epoch; stop on every old member still alive (a Down one
// is fenced and stopped for good); start on every new member with the
// new list; tell a leaver it is out. No member starts before every
// member has stopped. Rounds of one lockspace run one at a time.
type coordinator struct {
	s *Service

	mu       sync.Mutex
	term     uint64 // the term this node is master in; 0 when it is not
	seq      uint64
	known    bool                     // the table was learnt from the nodes this term
	table    map[string][]Member      // lockspace -> its members after the last round
	locks    map[string]chan struct{} // one round at a time per lockspace
	lastScan time.Time
	// plocks is the cluster's POSIX lock table, while this node is master.
	plocks *plockTable
}

func newCoordinator(s *Service) *coordinator {
	return &coordinator{s: s, table: map[string][]Member{}, locks: map[string]chan struct{}{}, plocks: newPlockTable()}
}

// resign forgets the table: another node is master (or none is).
func (c *coordinator) resign() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.term != 0 {
		c.s.log.Info("dlm coordinator: no longer the master", "term", c.term)
	}
	c.term, c.known = 0, false
	c.table = map[string][]Member{}
}

// epoch is the next epoch of this term.
func (c *coordinator) epoch() Epoch {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	return Epoch{Term: c.term, Seq: c.seq}
}

func (c *coordinator) lock(ctx context.Context, ls string) (func(), error) {
	c.mu.Lock()
	l := c.locks[ls]
	if l == nil {
		l = make(chan struct{}, 1)
		c.locks[ls] = l
	}
	c.mu.Unlock()
	select {
	case l <- struct{}{}:
		return func() { <-l }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("dlm coordinator: wait for lockspace %s's round: %w", ls, ctx.Err())
	}
}

// learn builds the table from every live node's report: the first thing
// a new master does, since its predecessor's table died with it (or
// went with its term).
func (c *coordinator) learn(ctx context.Context, st clms.Status) error {
	c.mu.Lock()
	if c.term != st.Term {
		c.term, c.known, c.seq = st.Term, false, 0
		c.table = map[string][]Member{}
	}
	known := c.known
	c.mu.Unlock()
	if known {
		return nil
	}
	table := map[string][]Member{}
	var plocks []PlockRange
	var maxSeq uint64
	for _, n := range st.Nodes {
		if !memberOf(st, n.Node) {
			continue
		}
		b, err := c.s.call(ctx, n.Node, methodState, struct{}{})
		if err != nil {
			return fmt.Errorf("dlm coordinator: state of node %d: %w", n.Node, err)
		}
		var ns NodeState
		if err := json.Unmarshal(b, &ns); err != nil {
			return fmt.Errorf("dlm coordinator: state of node %d: %w", n.Node, err)
		}
		addr, _ := st.NodeIP(n.Node)
		plocks = append(plocks, ns.Plocks...)
		for _, sp := range ns.Spaces {
			if sp.Epoch.Term == st.Term && sp.Epoch.Seq > maxSeq {
				maxSeq = sp.Epoch.Seq
			}
			if sp.Leaving {
				continue // its leave request comes again
			}
			table[sp.Name] = append(table[sp.Name], Member{Node: ns.Node, Addr: addr.String(), Boot: ns.Boot})
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.term != st.Term {
		return errors.New("dlm coordinator: the term changed while learning")
	}
	for ls, ms := range table {
		sortMembers(ms)
		table[ls] = ms
	}
	c.table, c.known = table, true
	c.plocks.load(plocks)
	c.seq = max(c.seq, maxSeq)
	c.s.log.Info("dlm coordinator: master; lockspaces learnt from the nodes", "term", st.Term, "lockspaces", len(table))
	return nil
}

func sortMembers(ms []Member) { sort.Slice(ms, func(i, j int) bool { return ms[i].Node < ms[j].Node }) }

// members is lockspace ls's member list now.
func (c *coordinator) members(ls string) []Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.table[ls])
}

// change adds m to lockspace ls, or with leave takes it out.
func (c *coordinator) change(ctx context.Context, st clms.Status, ls string, m Member, leave bool) error {
	if err := c.learn(ctx, st); err != nil {
		return err
	}
	unlock, err := c.lock(ctx, ls)
	if err != nil {
		return err
	}
	defer unlock()
	var next []Member
	for _, o := range c.members(ls) {
		if o.Node != m.Node {
			next = append(next, o)
		}
	}
	if leave {
		return c.round(ctx, ls, next, &m)
	}
	next = append(next, m)
	sortMembers(next)
	return c.round(ctx, ls, next, nil)
}

// round moves lockspace ls from its members to next (leaver, if set,
// leaves). The caller holds ls's lock.
func (c *coordinator) round(ctx context.Context, ls string, next []Member, leaver *Member) error {
	cur := c.members(ls)
	e := c.epoch()
	start := time.Now()
	st := c.s.cfg.Status()
	down := func(n int) bool { return !memberOf(c.s.cfg.Status(), n) }
	stops := slices.Clone(cur)
	if leaver != nil && !slices.ContainsFunc(stops, func(m Member) bool { return m.Node == leaver.Node }) {
		stops = append(stops, *leaver)
	}
	// Every old member stops before any member starts (the DLM's rule);
	// within each step the nodes are asked at once, so a round costs
	// two calls' time, not two per member.
	var failed, asked []Member
	for _, m := range stops {
		if !memberOf(st, m.Node) {
			// Down: fenced (when the cluster fences) and so stopped.
			failed = append(failed, m)
			continue
		}
		if slices.ContainsFunc(next, func(n Member) bool { return n.Node == m.Node && n.Boot != m.Boot }) {
			// A new boot of a member: the old one is gone with its
			// kernel; the new one has the lockspace as a joiner.
			failed = append(failed, m)
		}
		asked = append(asked, m)
	}
	errs := c.each(asked, func(m Member) error {
		_, err := c.s.call(ctx, m.Node, methodStop, stopRequest{Lockspace: ls, Epoch: e})
		return err
	})
	for i, err := range errs {
		m := asked[i]
		if err != nil && !(errors.Is(err, errNotMember) || isRemote(err, errNotMember)) {
			if down(m.Node) {
				failed = append(failed, m)
				continue
			}
			return fmt.Errorf("dlm coordinator: stop %s on node %d: %w", ls, m.Node, err)
		}
	}
	for {
		req := startRequest{Lockspace: ls, Epoch: e, Members: next, Failed: failed}
		errs := c.each(next, func(m Member) error {
			_, err := c.s.call(ctx, m.Node, methodStart, req)
			return err
		})
		var gone []int
		var started []Member
		for i, err := range errs {
			switch {
			case err == nil:
				started = append(started, next[i])
			case errors.Is(err, errNotMember) || isRemote(err, errNotMember):
				gone = append(gone, next[i].Node)
			default:
				// The members started run without the others until the
				// next round (the reconcile's, once they are Down or
				// answer).
				return fmt.Errorf("dlm coordinator: start %s on node %d: %w", ls, next[i].Node, err)
			}
		}
		if len(gone) == 0 {
			break
		}
		if len(next) == 1 {
			return fmt.Errorf("dlm coordinator: start %s on node %d: %w", ls, next[0].Node, errs[0])
		}
		// Some are leaving (their own leaves come) or gone: stop the
		// ones that started and start the rest without them, so none
		// runs with a member list it is not given now.
		errs = c.each(started, func(m Member) error {
			_, err := c.s.call(ctx, m.Node, methodStop, stopRequest{Lockspace: ls, Epoch: e})
			return err
		})
		for i, err := range errs {
			if err != nil {
				return fmt.Errorf("dlm coordinator: stop %s on node %d again: %w", ls, started[i].Node, err)
			}
		}
		next = slices.DeleteFunc(slices.Clone(next), func(m Member) bool { return slices.Contains(gone, m.Node) })
		if len(next) == 0 {
			break
		}
	}
	if leaver != nil && memberOf(c.s.cfg.Status(), leaver.Node) {
		if _, err := c.s.call(ctx, leaver.Node, methodLeft, stopRequest{Lockspace: ls, Epoch: e}); err != nil {
			return fmt.Errorf("dlm coordinator: end node %d's leave of %s: %w", leaver.Node, ls, err)
		}
	}
	c.mu.Lock()
	if len(next) == 0 {
		delete(c.table, ls)
	} else {
		c.table[ls] = next
	}
	c.mu.Unlock()
	c.s.log.Info("dlm round", "lockspace", ls, "epoch", e, "members", nodesOf(next), "failed", nodesOf(failed),
		"took", time.Since(start).Round(time.Microsecond))
	return nil
}

// each runs f for every member at once and returns their errors, in
// ms's order.
func (c *coordinator) each(ms []Member, f func(Member) error) []error {
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(m)
		}()
	}
	wg.Wait()
	return errs
}

func nodesOf(ms []Member) []int {
	out := make([]int, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.Node)
	}
	return out
}

// isRemote reports whether err, from another node, is target: ICS
// carries the message, not the value.
func isRemote(err, target error) bool {
	return err != nil && strings.Contains(err.Error(), target.Error())
}

// reconcile, run by the master's loop, drops members that went Down
// from their lockspaces and restarts lockspaces a member reports
// stopped (after a quorum loss, or a round cut short).
func (c *coordinator) reconcile(ctx context.Context, st clms.Status) {
	c.mu.Lock()
	scan := time.Since(c.lastScan) > 2*time.Second || c.term != st.Term || !c.known
	c.mu.Unlock()
	if err := c.learn(ctx, st); err != nil {
		c.s.log.Warn("dlm coordinator", "err", err)
		return
	}
	c.mu.Lock()
	names := make([]string, 0, len(c.table))
	for ls := range c.table {
		names = append(names, ls)
	}
	c.mu.Unlock()
	sort.Strings(names)
	if scan {
		c.mu.Lock()
		c.lastScan = time.Now()
		c.mu.Unlock()
	}
	// Each lockspace has a lock of its own: a round of one (a Down
	// node's recovery) does not wait for another's.
	var wg sync.WaitGroup
	for _, ls := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.reconcileOne(ctx, ls, scan)
		}()
	}
	wg.Wait()
}

// reconcileOne gives ls a round if a member is Down, gone or stopped.
// Its members, and with scan what each says of ls, are read under ls's
// lock, so a round that ran meanwhile (a join's) is not undone by a
// stale view.
func (c *coordinator) reconcileOne(ctx context.Context, ls string, scan bool) {
	unlock, err := c.lock(ctx, ls)
	if err != nil {
		return
	}
	defer unlock()
	st := c.s.cfg.Status() // not the loop's: a node may have joined since
	states := map[int]NodeState{}
	if scan {
		for _, m := range c.members(ls) {
			if !memberOf(st, m.Node) {
				continue
			}
			b, err := c.s.call(ctx, m.Node, methodState, struct{}{})
			var ns NodeState
			if err == nil && json.Unmarshal(b, &ns) == nil {
				states[m.Node] = ns
			}
		}
	}
	cur := c.members(ls)
	var next []Member
	redo := false
	for _, m := range cur {
		if !memberOf(st, m.Node) {
			redo = true // Down: out
			continue
		}
		if ns, ok := states[m.Node]; ok {
			i := slices.IndexFunc(ns.Spaces, func(sp SpaceState) bool { return sp.Name == ls })
			if i < 0 || ns.Boot != m.Boot {
				redo = true // not there any more (another boot)
				continue
			}
			if !ns.Spaces[i].Started && !ns.Spaces[i].Leaving && !ns.NoQuorum {
				redo = true // stopped: start it again
			}
		}
		next = append(next, m)
	}
	if !redo || len(cur) == 0 {
		return
	}
	if err := c.round(ctx, ls, next, nil); err != nil {
		c.s.log.Warn("dlm coordinator: reconcile", "lockspace", ls, "err", err)
	}
}
