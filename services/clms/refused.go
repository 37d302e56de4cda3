package clms

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// refusedProof is evidence, apart from silence, that a node's daemon is
// dead: its kernel refused a connection to the daemon's Raft port. A
// stalled daemon (stopped, starved of CPU, paused by its runtime) still
// holds its listening socket, so its kernel accepts; only a daemon that
// is gone leaves the port closed. It lets the master take a killed node
// Down at once while a node that is merely silent gets the whole
// suspicion time of the steady profile to speak again.
//
// The leader sees it first: a heartbeat to a peer whose process died
// fails at once (the peer's kernel resets the connection), and Raft
// reports the failure; the master then dials the peer's Raft port once.
type refusedProof struct {
	mu   sync.Mutex
	boot map[int]string // node -> the boot id it had when it refused
}

// watchHeartbeats follows r's failed heartbeats, and its changes of
// state for the master loop, until the member stops.
func (m *Member) watchHeartbeats(r *raft.Raft) {
	ch := make(chan raft.Observation, 32)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.RaftState:
			return true
		}
		return false
	})
	r.RegisterObserver(obs)
	go func() {
		defer r.DeregisterObserver(obs)
		for {
			select {
			case <-m.stop:
				return
			case o := <-ch:
				switch d := o.Data.(type) {
				case raft.FailedHeartbeatObservation:
					m.checkRefused(r, d.PeerID)
				case raft.RaftState:
					m.events.poke() // the master loop: leader now, or no more
				}
			}
		}
	}()
}

// checkRefused dials node id's Raft port once; refused means its daemon
// is dead, and the master is told.
func (m *Member) checkRefused(r *raft.Raft, id raft.ServerID) {
	n, err := strconv.Atoi(string(id))
	if err != nil {
		return
	}
	md, ok := m.gossip.nodes()[n]
	if !ok || md.Raft == "" {
		return // gossip already has it gone
	}
	m.refused.mu.Lock()
	seen := m.refused.boot[n] == md.Boot
	m.refused.mu.Unlock()
	if seen {
		return
	}
	c, err := net.DialTimeout("tcp", md.Raft, 300*time.Millisecond)
	if err == nil {
		c.Close()
		return // alive, if slow: silence decides
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return // no answer at all (a dead machine, a cut cable): silence decides
	}
	m.refused.mu.Lock()
	if m.refused.boot == nil {
		m.refused.boot = map[int]string{}
	}
	m.refused.boot[n] = md.Boot
	m.refused.mu.Unlock()
	m.cfg.Log.Info("membership: a node's daemon refused its Raft port: it is dead", "node", n, "raft", md.Raft)
	m.events.poke()
}

// withoutRefused removes from alive the nodes whose daemon refused while
// gossip still lists the same boot, and forgets the evidence of nodes
// gossip no longer lists so (gone, or booted again).
func (m *Member) withoutRefused(alive map[int]meta) {
	m.refused.mu.Lock()
	defer m.refused.mu.Unlock()
	for n, boot := range m.refused.boot {
		if md, ok := alive[n]; ok && md.Boot == boot {
			delete(alive, n)
			continue
		}
		delete(m.refused.boot, n)
	}
}
