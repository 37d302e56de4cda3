package clms

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

func (m *Member) startRaft(tm timing) error {
	cfg := m.cfg
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(strconv.Itoa(cfg.Node))
	rc.HeartbeatTimeout = tm.heartbeat
	rc.ElectionTimeout = tm.election
	rc.LeaderLeaseTimeout = tm.lease
	// How often the master sends followers AppendEntries with nothing
	// new, so they learn the commit index: at the heartbeat's pace, not
	// the 5 ms that kept an idle cluster's master sending 100-200 RPCs a
	// second to each follower (a third of a vCPU under TCG). A commit is
	// pushed to the followers at once instead (pushCommit).
	rc.CommitTimeout = tm.heartbeat
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Output: newLibLog(cfg.Log, "raft"), Level: hclog.Info, DisableTime: true})
	m.rc = rc
	m.raftAddr = net.JoinHostPort(cfg.Addr, strconv.Itoa(cfg.RaftPort))
	trans, err := m.newTransport()
	if err != nil {
		return err
	}
	m.trans.Store(trans)
	m.raftAddr = string(trans.LocalAddr()) // the port, if 0 picked one
	if cfg.DataDir != "" && !cfg.TwoNode {
		if err := os.MkdirAll(filepath.Join(cfg.DataDir, "wal"), 0o700); err != nil {
			return fmt.Errorf("clms: data dir: %w", err)
		}
		// raft-wal's Close leaves its meta database open (and locked):
		// hand it one we close ourselves.
		meta := &metadb.BoltMetaDB{}
		bs, err := wal.Open(filepath.Join(cfg.DataDir, "wal"), wal.WithSegmentSize(4<<20), wal.WithMetaStore(meta))
		if err != nil {
			meta.Close()
			return fmt.Errorf("clms: raft log %s: %w", cfg.DataDir, err)
		}
		m.closer = append(m.closer, bs, meta)
		m.logs, m.stable = bs, bs
		fs, err := raft.NewFileSnapshotStore(cfg.DataDir, 2, newLibLog(cfg.Log, "raft"))
		if err != nil {
			return fmt.Errorf("clms: snapshots %s: %w", cfg.DataDir, err)
		}
		m.snaps = fs
	} else {
		// Diskless, or two_node: there a node that comes back with its
		// old log would find itself the only voter and elect itself
		// beside the peer that took over; it must rejoin empty.
		ims := raft.NewInmemStore()
		m.logs, m.stable, m.snaps = ims, ims, raft.NewInmemSnapshotStore()
	}
	existing, err := raft.HasExistingState(m.logs, m.stable, m.snaps)
	if err != nil {
		return fmt.Errorf("clms: raft state: %w", err)
	}
	r, err := raft.NewRaft(rc, m.fsm, m.logs, m.stable, m.snaps, trans)
	if err != nil {
		return fmt.Errorf("clms: raft: %w", err)
	}
	m.rft.Store(r)
	m.watchHeartbeats(r)
	if cfg.Bootstrap && !existing && !cfg.TwoNode {
		if err := m.bootstrap(); err != nil {
			return err
		}
	}
	return nil
}

// bootstrap founds the cluster with this node as its only voter.
func (m *Member) bootstrap() error {
	err := m.rn().BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: m.rc.LocalID, Address: raft.ServerAddress(m.raftAddr)}}}).Error()
	if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("clms: bootstrap: %w", err)
	}
	return nil
}

// newTransport listens for Raft on this node's address.
func (m *Member) newTransport() (*raft.NetworkTransport, error) {
	if m.cfg.TLS != nil {
		ln, err := net.Listen("tcp", m.raftAddr)
		if err != nil {
			return nil, fmt.Errorf("clms: raft transport on %s: %w", m.raftAddr, err)
		}
		return raft.NewNetworkTransport(&tlsStream{Listener: ln, local: m.cfg.Addr, cfg: m.cfg.TLS, log: m.cfg.Log.Warn}, 4, 2*time.Second, newLibLog(m.cfg.Log, "raft")), nil
	}
	if m.cfg.Faults != nil {
		ln, err := net.Listen("tcp", m.raftAddr)
		if err != nil {
			return nil, fmt.Errorf("clms: raft transport on %s: %w", m.raftAddr, err)
		}
		return raft.NewNetworkTransport(&raftStream{Listener: ln, self: m.cfg.Addr, f: m.cfg.Faults}, 4, 2*time.Second, newLibLog(m.cfg.Log, "raft")), nil
	}
	t, err := raft.NewTCPTransport(m.raftAddr, nil, 4, 2*time.Second, newLibLog(m.cfg.Log, "raft"))
	if err != nil {
		return nil, fmt.Errorf("clms: raft transport on %s: %w", m.raftAddr, err)
	}
	return t, nil
}

// rn is this node's Raft instance (two_node recovery replaces it).
func (m *Member) rn() *raft.Raft { return m.rft.Load() }

func (m *Member) commit(node int, st State, expect uint64, addr, reason string) (Transition, error) {
	return m.apply(command{Node: node, State: st, Expect: expect, Addr: addr, At: time.Now().UTC(), Master: m.cfg.Node, Reason: reason})
}

func (m *Member) commitJoin(node int, expect uint64, md meta) (Transition, error) {
	return m.apply(command{Node: node, State: ComingUp, Expect: expect, Addr: addrOf(md), Gossip: md.Gossip, At: time.Now().UTC(), Master: m.cfg.Node, Reason: "joined"})
}

func (m *Member) apply(c command) (Transition, error) {
	b, _ := json.Marshal(c)
	f := m.rn().Apply(b, 2*time.Second)
	if err := m.await(f); err != nil {
		return Transition{}, err
	}
	m.pushCommit()
	switch r := f.Response().(type) {
	case error:
		return Transition{}, r
	case Transition:
		return r, nil
	}
	return Transition{}, errors.New("clms: unexpected apply response")
}

func (m *Member) raftConfig() ([]raft.Server, error) {
	f := m.rn().GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	return f.Configuration().Servers, nil
}

// addServer puts node n in the Raft configuration (as a voter while there
// are fewer than MaxVoters), replacing a stale entry of an earlier boot.
func (m *Member) addServer(n int, addr string) error {
	servers, err := m.raftConfig()
	if err != nil {
		return err
	}
	id := raft.ServerID(strconv.Itoa(n))
	voters := 0
	for _, s := range servers {
		if s.ID == id {
			if s.Address == raft.ServerAddress(addr) {
				return nil
			}
			if err := m.await(m.rn().RemoveServer(id, 0, 2*time.Second)); err != nil {
				return err
			}
			continue
		}
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	if voters < m.cfg.MaxVoters {
		return m.await(m.rn().AddVoter(id, raft.ServerAddress(addr), 0, 2*time.Second))
	}
	return m.await(m.rn().AddNonvoter(id, raft.ServerAddress(addr), 0, 2*time.Second))
}

func (m *Member) removeServer(n int) {
	id := raft.ServerID(strconv.Itoa(n))
	if err := m.await(m.rn().RemoveServer(id, 0, 2*time.Second)); err != nil {
		m.cfg.Log.Warn("remove from raft", "node", n, "err", err)
	}
}

// await is f's error, or raft.ErrRaftShutdown once this member stops.
// A Raft change taken in just as Raft shuts down may never be answered:
// under load, a goroutine dump showed the master loop blocked for 14
// minutes on RemoveServer's future after Close had shut Raft down, and
// Close waiting for that loop (TestFiveNodesJoinFailAndRejoin, the master
// killed while it took a failed node out of the configuration). In
// hashicorp/raft v1.8.0 only the snapshot and restore futures carry the
// shutdown channel; where exactly this one was dropped was not traced.
// The goroutine that waits on such a future stays blocked; it holds only
// the future.
func (m *Member) await(f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-m.stop:
		return raft.ErrRaftShutdown
	}
}

// balanceVoters promotes non-voters of Up nodes while there are fewer
// than MaxVoters voters.
func (m *Member) balanceVoters() {
	servers, err := m.raftConfig()
	if err != nil {
		return
	}
	voters := 0
	for _, s := range servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	records, _ := m.fsm.snapshot()
	up := map[raft.ServerID]bool{}
	for _, r := range records {
		if r.State == Up || r.State == ComingUp {
			up[raft.ServerID(strconv.Itoa(r.Node))] = true
		}
	}
	for _, s := range servers {
		if voters >= m.cfg.MaxVoters {
			return
		}
		if s.Suffrage != raft.Nonvoter || !up[s.ID] {
			// A node on its way out (ShuttingDown) is not made a voter.
			continue
		}
		if err := m.await(m.rn().AddVoter(s.ID, s.Address, 0, 2*time.Second)); err == nil {
			voters++
		}
	}
}

// pushCommit tells the followers now that what the master just applied
// is committed: a barrier entry is replicated at once, and its
// AppendEntries carries the commit index, so followers apply a
// transition within a round trip instead of at the next idle
// replication tick (CommitTimeout). Nothing waits for the barrier.
func (m *Member) pushCommit() { m.rn().Barrier(0) }
