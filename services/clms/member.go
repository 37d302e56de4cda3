package clms

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// Ports of the membership service on the interconnect.
const (
	DefaultRaftPort   = 7472
	DefaultGossipPort = 7473
)

// Config configures a member.
type Config struct {
	// Node is this node's number (>= 1).
	Node int
	// Addr is the address to bind and advertise (an interconnect IP).
	Addr string
	// RaftPort and GossipPort; 0 picks a free port (tests).
	RaftPort, GossipPort int
	// Join lists gossip addresses (host:port) of members to contact.
	Join []string
	// Bootstrap founds a new cluster with this node as its only voter,
	// unless DataDir already holds Raft state.
	Bootstrap bool
	// DataDir keeps the Raft log durable (raft-wal, HashiCorp's
	// write-ahead log store); empty keeps it in memory (a diskless node).
	DataDir string
	// MaxVoters bounds the Raft voters (default 5).
	MaxVoters int
	// TwoNode is corosync votequorum's two_node, for a cluster of two
	// nodes: either survives the other's failure alone. Raft cannot
	// commit with one of two voters, so one node votes (the master) and
	// the other follows; when the master is lost, the survivor fences it
	// and, once the fence agent confirmed it off, recovers Raft's
	// configuration with itself as the only voter (RecoverCluster) and
	// goes on as master. Without Fence there is no such recovery. The
	// Raft log is kept in memory (DataDir unused): a node that comes back
	// rejoins empty under the survivor. Self-fencing is off: each side
	// counts as quorate alone, as under corosync.
	TwoNode bool
	// WaitForAll, if above 0, is corosync votequorum's wait_for_all: at
	// first start no node is taken Up until this many nodes have been
	// alive at once (joins are committed meanwhile, so nodes can boot
	// their root); from then on the cluster runs as usual, a restart
	// of some nodes does not wait again.
	WaitForAll int
	// Profile is a timing profile: ProfileAuto (default), ProfileSteady,
	// ProfileLAN, ProfileEmulated or ProfileDefault.
	Profile string
	// Fence, if set, is run by the master on a failed node before Down
	// is committed; Down waits until it succeeds.
	Fence func(ctx context.Context, node int) error
	// SelfFenceAfter, if set, calls SelfFence once this node, having had
	// quorum, has been without it that long and no longer gossips with
	// a majority of the voters: a node cut off from the majority takes
	// itself out; one in an election waits for it.
	SelfFenceAfter time.Duration
	SelfFence      func()
	// FailureDown, if set, is told on the master of each failed node it
	// committed Down: how long after gossip lost the node (the failure
	// detector's verdict) the Down was committed, fence included, and
	// whether it was fenced first.
	FailureDown func(node int, d time.Duration, fenced bool)
	// CertAddr, if set, is the interconnect address node N's certificate
	// names (the spec's). A gossip member counts as node N only if it
	// gossips from that address and gives its Raft address there: a
	// node admitted as one number cannot pass for another, and the
	// master never fences a node because an impostor claimed its number
	// with a new boot id.
	CertAddr func(node int) (netip.Addr, bool)
	// OnMaster, if set, is called when this node becomes the master
	// (true) and when it stops being it (false), within 100 ms.
	OnMaster func(master bool)
	// Faults, in tests, cuts traffic between chosen nodes.
	Faults *Faults
	// TLS, if set, carries Raft over mutual TLS with certificates from
	// the cluster CA: a peer without one, or with one naming another
	// address, cannot connect.
	TLS *TLS
	// GossipKey, if set (16, 24 or 32 bytes), encrypts and authenticates
	// gossip (AES-GCM, memberlist's keyring): a packet not sealed with it
	// is dropped, so only nodes given the key take part.
	GossipKey []byte
	// RunLevel is the cluster's run level until one is committed with
	// SetRunLevel (the spec's).
	RunLevel int
	// GateUp keeps this node ComingUp until it reports (SetReached) that
	// it reached the cluster's run level: a node joining late stays
	// hidden until it is ready. Off, a node is Up as soon as it joined.
	GateUp bool
	// Console receives a line for every transition applied.
	Console io.Writer
	Log     *slog.Logger
}

// Member is this node's part of the membership service.
type Member struct {
	cfg        Config
	bootID     string
	gossipAddr string
	fsm        *fsm
	rft        atomic.Pointer[raft.Raft]
	trans      atomic.Pointer[raft.NetworkTransport]
	rc         *raft.Config
	raftAddr   string
	logs       raft.LogStore
	stable     raft.StableStore
	snaps      raft.SnapshotStore
	ml         *memberlist.Memberlist
	events     kick
	gossip     *gossipTable
	closer     []io.Closer

	queue *queue

	reached    atomic.Int32  // run level this node reached (gossiped)
	handled    atomic.Uint64 // last transition whose handlers ran here (reported, gossiped)
	marks      handledMarks  // handled marks reported to this node as master, and this node's reports
	joined     atomic.Uint64 // this boot's ComingUp transition, once dispatched
	unsent     atomic.Bool   // the last state update may not have gone out
	blocked    sync.Map      // node -> Down transition whose rejoin waits (logged once)
	leaving    atomic.Bool   // this node is shutting down (gossiped)
	waitLogged atomic.Bool   // wait_for_all: said once that it waits

	// lost is, on the master, when gossip lost each failed node not yet
	// Down (reconcile's own: only the master loop touches it).
	lost map[int]time.Time
	// downSeen is, on the master, when it first saw each Down transition
	// (reconcile's own), and deadAfter how long gossip may take to
	// declare a silent member dead (ghost.go).
	downSeen  map[uint64]time.Time
	deadAfter func(members int) time.Duration

	fenceMu sync.Mutex
	fences  map[int]*fenceJob // the master's fencing under way, by node

	raftMu   sync.Mutex // held while the Raft instance is replaced or shut down
	mu       sync.Mutex
	handlers []func(Transition)
	subs     map[int]chan<- Transition
	nextSub  int

	stop chan struct{}
	// refused is evidence that a node's daemon is dead (refused.go).
	refused refusedProof
	wg      sync.WaitGroup
}

// Start joins (or founds) the cluster.
func Start(cfg Config) (*Member, error) {
	if cfg.Node < 1 {
		return nil, fmt.Errorf("clms: node number %d: want >= 1", cfg.Node)
	}
	if cfg.MaxVoters == 0 {
		cfg.MaxVoters = 5
	}
	if cfg.TwoNode {
		cfg.MaxVoters = 1 // the master; the other node follows
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Console == nil {
		cfg.Console = io.Discard
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1"
	}
	b := make([]byte, 8)
	rand.Read(b)
	m := &Member{cfg: cfg, bootID: hex.EncodeToString(b), events: make(kick, 1), stop: make(chan struct{}), queue: newQueue(), lost: map[int]time.Time{}, downSeen: map[uint64]time.Time{}}
	m.fsm = newFSM(func(t Transition) {
		fmt.Fprintf(cfg.Console, "locus-clms: transition %d: node %d %s\n", t.ID, t.Node, t.State)
		m.queue.push(t)
	})
	tm, err := profileTiming(cfg.Profile)
	if err != nil {
		return nil, err
	}
	if err := m.startRaft(tm); err != nil {
		m.Close()
		return nil, err
	}
	if err := m.startGossip(tm); err != nil {
		m.Close()
		return nil, err
	}
	m.wg.Add(6)
	go m.every(time.Second, func() { m.reportHandled(false) })
	go m.dispatch()
	go m.masterLoop()
	go m.every(2*time.Second, m.reconnect)
	go m.watchQuorum()
	go m.every(max(500*time.Millisecond, 10*tm.gossip.GossipInterval), m.republish)
	if cfg.TwoNode {
		m.wg.Add(1)
		go m.every(100*time.Millisecond, m.twoNode(tm))
	}
	return m, nil
}

// Close stops this member at once, as a crash would look to the others
// (no leave message).
func (m *Member) Close() error {
	select {
	case <-m.stop:
		return nil
	default:
	}
	close(m.stop)
	var errs []error
	if m.ml != nil && m.leaving.Load() {
		// Going on purpose: say so, so peers need not wait to detect it.
		m.ml.Leave(2 * time.Second)
	}
	if m.ml != nil {
		errs = append(errs, m.ml.Shutdown())
	}
	m.raftMu.Lock() // not while two_node recovery swaps the instance
	if r := m.rn(); r != nil {
		errs = append(errs, r.Shutdown().Error())
	}
	if t := m.trans.Load(); t != nil {
		errs = append(errs, t.Close())
	}
	m.raftMu.Unlock()
	for _, c := range m.closer {
		errs = append(errs, c.Close())
	}
	m.wg.Wait()
	return errors.Join(errs...)
}

// every runs f every d until the member stops.
func (m *Member) every(d time.Duration, f func()) {
	defer m.wg.Done()
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
		}
		f()
	}
}
