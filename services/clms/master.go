package clms

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
)

// watchQuorum self-fences a node that lost quorum for SelfFenceAfter and
// is cut off from the majority. Without a master is not enough: on the
// majority side, an election after the master's loss can take longer
// than SelfFenceAfter under load, and a node that fenced itself then
// would take down the side that goes on. A node whose gossip still sees
// a majority of the voters waits for the election (or for its gossip to
// lose them, which is also when the majority's gossip loses this node).
func (m *Member) watchQuorum() {
	defer m.wg.Done()
	if m.cfg.SelfFenceAfter <= 0 || m.cfg.SelfFence == nil || m.cfg.TwoNode {
		return // two_node: either side is quorate alone
	}
	tick := time.NewTicker(m.cfg.SelfFenceAfter / 10)
	defer tick.Stop()
	var had bool
	var lostAt time.Time
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
		}
		switch q := m.Status().Quorum; {
		case q:
			had, lostAt = true, time.Time{}
		case had && lostAt.IsZero():
			lostAt = time.Now()
		case had && time.Since(lostAt) >= m.cfg.SelfFenceAfter && !m.seesVoterMajority():
			m.cfg.Log.Error("no quorum: self-fencing", "for", time.Since(lostAt).Round(time.Millisecond))
			m.cfg.SelfFence()
			return
		}
	}
}

// seesVoterMajority reports whether this node's gossip has more than half
// of the Raft voters alive, itself included.
func (m *Member) seesVoterMajority() bool {
	servers, err := m.raftConfig()
	if err != nil || m.gossip == nil {
		return false
	}
	alive := m.gossip.nodes()
	voters, seen := 0, 0
	for _, s := range servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		n, err := strconv.Atoi(string(s.ID))
		if err == nil && (n == m.cfg.Node || has(alive, n)) {
			seen++
		}
	}
	return voters > 0 && seen > voters/2
}

// masterLoop reconciles the membership table with gossip while this node
// is the Raft leader: on every gossip event and every 100 ms. A node that
// is not the leader only waits to become it: Raft's state changes poke
// the loop (watchHeartbeats), and it looks once a second besides, so an
// idle follower is not woken ten times a second for nothing.
func (m *Member) masterLoop() {
	defer m.wg.Done()
	const leaderTick, followerTick = 100 * time.Millisecond, time.Second
	tick := time.NewTimer(followerTick)
	defer tick.Stop()
	was := false
	for {
		select {
		case <-m.stop:
			if was && m.cfg.OnMaster != nil {
				m.cfg.OnMaster(false)
			}
			return
		case <-m.events:
		case <-tick.C:
		}
		leader := m.rn().State() == raft.Leader
		if leader != was {
			was = leader
			if m.cfg.OnMaster != nil {
				m.cfg.OnMaster(leader)
			}
		}
		if leader {
			m.reconcile()
		}
		next := followerTick
		if leader {
			next = leaderTick
		}
		tick.Reset(next)
	}
}

// reconcile makes the table match gossip: alive nodes not Up are brought
// in, Up nodes gossip has lost (or that rebooted) are taken Down.
func (m *Member) reconcile() {
	alive := m.gossip.nodes()
	m.withoutRefused(alive)
	records, _ := m.fsm.snapshot()
	known := map[int]NodeRecord{}
	for _, r := range records {
		known[r.Node] = r
	}
	// Failures first: a node that is gone (or came back with a new boot
	// id: everything it held is lost) goes Down.
	for _, r := range records {
		if r.State == Down || r.State == NeverUp {
			continue
		}
		md, ok := alive[r.Node]
		reason := ""
		switch {
		case !ok && r.State == ShuttingDown:
			// It said it was going: nothing to fence.
			if _, err := m.commit(r.Node, Down, r.Transition, "", "shut down"); err != nil {
				m.cfg.Log.Warn("commit Down", "node", r.Node, "err", err)
				continue
			}
			m.removeServer(r.Node)
			delete(known, r.Node)
			continue
		case ok && md.Leaving && (r.State == Up || r.State == ComingUp):
			if r.State == ComingUp {
				continue // not Up yet: it goes Down once it has left
			}
			if _, err := m.commit(r.Node, ShuttingDown, r.Transition, "", "shutting down"); err != nil {
				m.cfg.Log.Warn("commit ShuttingDown", "node", r.Node, "err", err)
				continue
			}
			// It no longer counts for quorum: the nodes that stay can
			// commit its Down, and each other's, to the last one (a
			// whole-cluster shutdown). It still follows the log. The
			// master keeps its vote: it leaves last, and if it leaves
			// alone the others still have their majority.
			if r.Node != m.cfg.Node {
				if err := m.await(m.rn().DemoteVoter(raft.ServerID(strconv.Itoa(r.Node)), 0, 2*time.Second)); err != nil {
					m.cfg.Log.Warn("demote a leaving node", "node", r.Node, "err", err)
				}
			}
			continue
		case !ok:
			reason = "failure detected"
			if _, seen := m.lost[r.Node]; !seen {
				m.lost[r.Node] = time.Now()
			}
		case r.Addr != "" && md.Boot != bootOf(r.Addr):
			reason = "rebooted"
		default:
			m.forgetFence(r.Node) // alive and well: a suspicion cleared
			delete(m.lost, r.Node)
			continue
		}
		if r.Node == m.cfg.Node {
			continue // the master does not take itself down here
		}
		if m.cfg.Fence != nil {
			// Off this loop (fencing.go): until the agent has said
			// done, the node stays as it is and the loop goes on with
			// the others.
			if !m.fenced(r) {
				continue
			}
			// Subsystems that take over a dead node's resources (its
			// disk: HA-CFS) act only on a fenced node's Down.
			reason += ", " + ReasonFenced
		}
		if _, err := m.commit(r.Node, Down, r.Transition, "", reason); err != nil {
			m.cfg.Log.Warn("commit Down", "node", r.Node, "err", err)
			continue
		}
		if at, seen := m.lost[r.Node]; seen && m.cfg.FailureDown != nil {
			m.cfg.FailureDown(r.Node, time.Since(at), m.cfg.Fence != nil)
		}
		delete(m.lost, r.Node)
		m.forgetFence(r.Node)
		m.removeServer(r.Node)
		delete(known, r.Node)
	}
	// Joins: alive nodes not yet Up, the master first, then by number.
	order := make([]int, 0, len(alive))
	for n := range alive {
		order = append(order, n)
	}
	sort.Slice(order, func(i, j int) bool {
		if (order[i] == m.cfg.Node) != (order[j] == m.cfg.Node) {
			return order[i] == m.cfg.Node
		}
		return order[i] < order[j]
	})
	for _, n := range order {
		md := alive[n]
		r, ok := known[n]
		if !ok {
			r = NodeRecord{Node: n, State: NeverUp}
		}
		switch r.State {
		case Up, ShuttingDown, GoingDown:
			continue
		case NeverUp, Down:
			if r.State == Down && !m.cleanedUp(r, alive, known) {
				continue
			}
			if r.State == Down && md.Boot == bootOf(r.Addr) && !m.sameBootMayRejoin(r, len(alive)) {
				continue
			}
			if err := m.addServer(n, md.Raft); err != nil {
				m.cfg.Log.Warn("add to raft", "node", n, "err", err)
				continue
			}
			t, err := m.commitJoin(n, r.Transition, md)
			if err != nil {
				m.cfg.Log.Warn("commit ComingUp", "node", n, "err", err)
				continue
			}
			r.Transition = t.ID
			fallthrough
		case ComingUp:
			if md.Leaving {
				continue
			}
			if !m.formed(alive) {
				continue // wait_for_all: not every node seen yet
			}
			if md.Gate && md.Level < m.RunLevel() {
				continue // still climbing to the cluster's run level
			}
			if _, err := m.commit(n, Up, r.Transition, "", "reached the run level"); err != nil {
				m.cfg.Log.Warn("commit Up", "node", n, "err", err)
			}
		}
	}
	m.forgetDownsSeen(records)
	m.balanceVoters()
}

// ErrNotMaster is returned by calls that only the master can make.
var ErrNotMaster = errors.New("clms: this node is not the master")

// SetRunLevel commits the cluster's run level. Only the master can; on
// another node it returns ErrNotMaster.
func (m *Member) SetRunLevel(level int) error {
	if level < 1 || level > 5 {
		return fmt.Errorf("clms: run level %d: want 1-5", level)
	}
	if m.rn().State() != raft.Leader {
		return ErrNotMaster
	}
	b, _ := json.Marshal(command{Kind: kindRunLevel, Level: level, At: time.Now().UTC(), Master: m.cfg.Node})
	f := m.rn().Apply(b, 2*time.Second)
	if err := m.await(f); err != nil {
		return fmt.Errorf("clms: set run level %d: %w", level, err)
	}
	m.pushCommit()
	if err, ok := f.Response().(error); ok {
		return err
	}
	m.events.poke() // nodes waiting for the new level may now be Up
	return nil
}

// formed reports whether the cluster may take nodes Up: always, unless
// WaitForAll is set and not yet met; the first time alive holds every
// expected node, the master commits that the cluster formed.
func (m *Member) formed(alive map[int]meta) bool {
	if m.cfg.WaitForAll <= 0 || m.fsm.isFormed() {
		return true
	}
	if len(alive) < m.cfg.WaitForAll {
		if m.waitLogged.Swap(true) == false {
			m.cfg.Log.Info("wait_for_all: holding nodes ComingUp until every node has been seen", "seen", len(alive), "expected", m.cfg.WaitForAll)
		}
		return false
	}
	b, _ := json.Marshal(command{Kind: kindFormed, At: time.Now().UTC(), Master: m.cfg.Node})
	if err := m.await(m.rn().Apply(b, 5*time.Second)); err != nil {
		m.cfg.Log.Warn("wait_for_all: commit", "err", err)
		return false
	}
	m.pushCommit()
	m.cfg.Log.Info("wait_for_all: every node seen at once; the cluster formed", "nodes", len(alive))
	return true
}

// ReasonFenced ends the reason of a Down transition whose node the master
// fenced (powered off through the fence agent) before committing it.
const ReasonFenced = "fenced"
