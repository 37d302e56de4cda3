package clms

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
)

// twoNode runs corosync's two_node on Raft (Config.TwoNode): one node
// votes and is master, the other follows. The founding node founds the
// cluster only if no peer already holds one (it may be coming back after
// the peer took over). When the master is lost, the follower waits
// fenceDelay (in a split, the master fences first and wins the race, as
// Pacemaker's fencing delay arranges), fences it, and recovers Raft's
// configuration with itself as the only voter. It returns the check run
// every 100 ms.
func (m *Member) twoNode(tm timing) func() {
	fenceDelay := 2 * tm.election
	foundWait := 5 * tm.election
	founded := !m.cfg.Bootstrap
	start := time.Now()
	inCluster := false
	var lostAt time.Time
	return func() {
		if in := m.rn().Leader() != ""; in != inCluster {
			inCluster = in
			m.publish() // a founding node that comes back looks for this
		}
		if !founded {
			switch {
			case inCluster || m.peerInCluster():
				founded = true // the peer's master takes this node in
			case time.Since(start) >= foundWait:
				m.cfg.Log.Info("two_node: no peer holds a cluster; founding it", "waited", foundWait)
				if err := m.bootstrap(); err != nil {
					m.cfg.Log.Error("two_node: found the cluster", "err", err)
				}
				founded = true
			}
			return
		}
		master := m.lostMaster(tm)
		switch {
		case master == 0:
			lostAt = time.Time{}
		case lostAt.IsZero():
			lostAt = time.Now()
			m.cfg.Log.Warn("two_node: the master is gone; fencing it to go on alone", "master", master, "in", fenceDelay)
		case time.Since(lostAt) >= fenceDelay:
			if err := m.goOnAlone(master); err != nil {
				m.cfg.Log.Error("two_node: cannot go on alone; retrying", "master", master, "err", err)
			}
			lostAt = time.Time{}
		}
	}
}

// peerInCluster reports whether another live member gossips that it
// follows or is a master.
func (m *Member) peerInCluster() bool {
	for n, md := range m.gossip.nodes() {
		if n != m.cfg.Node && md.Cluster {
			return true
		}
	}
	return false
}

// lostMaster returns the master this node followed, if gossip has lost it
// and Raft has not heard from it for an election timeout (0 otherwise).
func (m *Member) lostMaster(tm timing) int {
	r := m.rn()
	if r.State() == raft.Leader {
		return 0
	}
	servers, err := m.raftConfig()
	if err != nil {
		return 0
	}
	master := 0
	for _, s := range servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		n, err := strconv.Atoi(string(s.ID))
		if err != nil || n == m.cfg.Node || master != 0 {
			return 0 // this node votes, or more than one other does
		}
		master = n
	}
	if master == 0 || time.Since(r.LastContact()) < tm.election {
		return 0
	}
	if has(m.gossip.nodes(), master) {
		return 0
	}
	return master
}

// goOnAlone fences the lost master and, once the fence agent confirmed
// it, makes this node the cluster's only voter: Raft is stopped, its
// configuration recovered to this node alone, and started again on the
// same log and table. Its election makes it master, and its reconcile
// commits the old master Down (fenced).
func (m *Member) goOnAlone(master int) error {
	if m.cfg.Fence == nil {
		return fmt.Errorf("no fence agent: node %d may still be running, so this node does not take the cluster over", master)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err := m.cfg.Fence(ctx, master)
	cancel()
	if err != nil {
		return fmt.Errorf("fence node %d: %w", master, err)
	}
	m.markFenced(master)
	m.raftMu.Lock()
	defer m.raftMu.Unlock()
	select {
	case <-m.stop:
		return nil
	default:
	}
	start := time.Now()
	m.rn().Shutdown().Error() // closes the transport too
	trans, err := m.newTransport()
	if err != nil {
		return err
	}
	m.trans.Store(trans)
	alone := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: m.rc.LocalID, Address: raft.ServerAddress(m.raftAddr)}}}
	// RecoverCluster replays the log into a scratch table; the live one
	// is restored from the snapshot it writes, the same state.
	recoverErr := raft.RecoverCluster(m.rc, newFSM(nil), m.logs, m.stable, m.snaps, trans, alone)
	r, err := raft.NewRaft(m.rc, m.fsm, m.logs, m.stable, m.snaps, trans)
	if err != nil {
		return fmt.Errorf("restart raft after recovery (%v): %w", recoverErr, err)
	}
	m.rft.Store(r)
	m.watchHeartbeats(r)
	if recoverErr != nil {
		return fmt.Errorf("recover the raft configuration: %w", recoverErr)
	}
	m.cfg.Log.Warn("two_node: fenced the master; this node holds the cluster alone", "master", master, "recovered_in", time.Since(start).Round(time.Millisecond))
	m.events.poke()
	return nil
}
