// Package clms is Locus's cluster membership service (openSSI's CLMS): it
// decides which nodes are in the cluster, and every node holds the same
// view of it.
//
// The CLMS master is the Raft leader (github.com/hashicorp/raft). It alone
// decides node transitions (NeverUp, ComingUp, Up, ShuttingDown,
// GoingDown, Down) and commits each as a Raft log entry; the replicated
// state machine numbers them, so every node applies the same transitions
// with the same ids in the same order. A transition decided on stale
// information (the node moved since) is refused when applied.
//
// Failures are detected with SWIM gossip (github.com/hashicorp/memberlist)
// tuned for a LAN, Lifeguard included, so a node whose CPU is saturated
// is not declared dead. When gossip declares a node dead, the master
// fences it (if a fence agent is configured) and commits Down. When the
// master itself is lost, Raft elects another among the voters (at most
// five; the rest are non-voters), which reconciles the table with what
// gossip sees.
package clms

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// Ports of the membership service on the interconnect.
const (
	DefaultRaftPort   = 7472
	DefaultGossipPort = 7473
)

// Timing profiles.
const (
	// ProfileAuto is ProfileLAN, or ProfileEmulated on an emulated CPU.
	ProfileAuto = "auto"
	// ProfileLAN is Locus's tuning: sub-second detection on a quiet LAN.
	ProfileLAN = "lan"
	// ProfileEmulated stretches every timeout five to ten times, for
	// machines whose CPU is emulated (QEMU without KVM), where a guest
	// stalls for hundreds of milliseconds under load.
	ProfileEmulated = "emulated"
	// ProfileDefault is memberlist's DefaultLANConfig, for comparison.
	ProfileDefault = "default"
)

// timing is a profile's settings.
type timing struct {
	gossip                     *memberlist.Config
	heartbeat, election, lease time.Duration
}

func profileTiming(name string) (timing, error) {
	if name == ProfileAuto || name == "" {
		name = ProfileLAN
		if Emulated() {
			name = ProfileEmulated
		}
	}
	switch name {
	case ProfileLAN:
		return timing{LANGossipConfig(), 500 * time.Millisecond, 500 * time.Millisecond, 250 * time.Millisecond}, nil
	case ProfileEmulated:
		c := memberlist.DefaultLANConfig()
		c.ProbeInterval = time.Second
		c.ProbeTimeout = 500 * time.Millisecond
		c.SuspicionMult = 4
		c.GossipInterval = 200 * time.Millisecond
		return timing{c, 3 * time.Second, 3 * time.Second, 1500 * time.Millisecond}, nil
	case ProfileDefault:
		return timing{memberlist.DefaultLANConfig(), time.Second, time.Second, 500 * time.Millisecond}, nil
	}
	return timing{}, fmt.Errorf("clms: timing profile %q: want %s, %s, %s or %s", name, ProfileAuto, ProfileLAN, ProfileEmulated, ProfileDefault)
}

// Emulated reports whether this machine's CPU is emulated (QEMU's TCG
// names its CPUs so in /proc/cpuinfo).
func Emulated() bool {
	b, err := os.ReadFile("/proc/cpuinfo")
	return err == nil && strings.Contains(string(b), "QEMU TCG CPU")
}

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
	// Profile is a timing profile: ProfileAuto (default), ProfileLAN,
	// ProfileEmulated or ProfileDefault.
	Profile string
	// Fence, if set, is run by the master on a failed node before Down
	// is committed; Down waits until it succeeds.
	Fence func(ctx context.Context, node int) error
	// SelfFenceAfter, if set, calls SelfFence once this node, having had
	// quorum, has been without it that long: a node cut off from the
	// majority takes itself out before the majority fences it.
	SelfFenceAfter time.Duration
	SelfFence      func()
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
	handled    atomic.Uint64 // last transition whose handlers ran here (gossiped)
	joined     atomic.Uint64 // this boot's ComingUp transition, once dispatched
	unsent     atomic.Bool   // the last state update may not have gone out
	blocked    sync.Map      // node -> Down transition whose rejoin waits (logged once)
	leaving    atomic.Bool   // this node is shutting down (gossiped)
	waitLogged atomic.Bool   // wait_for_all: said once that it waits

	raftMu   sync.Mutex // held while the Raft instance is replaced or shut down
	mu       sync.Mutex
	handlers []func(Transition)
	subs     map[int]chan<- Transition
	nextSub  int

	stop chan struct{}
	wg   sync.WaitGroup
}

// meta is what a node gossips about itself.
type meta struct {
	Node   int    `json:"n"`
	Raft   string `json:"r"`
	Boot   string `json:"b"`
	Gossip string `json:"g"`
	// Gate, Level: the node is Up only once Level reaches the cluster's
	// run level (Config.GateUp).
	Gate  bool `json:"gt,omitempty"`
	Level int  `json:"l,omitempty"`
	// Leaving: the node is shutting down; the master takes it
	// ShuttingDown, then Down without fencing once it has left.
	Leaving bool `json:"lv,omitempty"`
	// Handled is the last transition whose handlers have run on the node
	// (they run in transition order): a node that went Down rejoins only
	// once every node has run its nodedown handlers for it.
	Handled uint64 `json:"h,omitempty"`
	// Cluster: the node follows a master or is one (two_node: a founding
	// node that comes back joins rather than founds).
	Cluster bool `json:"c,omitempty"`
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
	m := &Member{cfg: cfg, bootID: hex.EncodeToString(b), events: make(kick, 1), stop: make(chan struct{}), queue: newQueue()}
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
	m.wg.Add(5)
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

func (m *Member) startRaft(tm timing) error {
	cfg := m.cfg
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(strconv.Itoa(cfg.Node))
	rc.HeartbeatTimeout = tm.heartbeat
	rc.ElectionTimeout = tm.election
	rc.LeaderLeaseTimeout = tm.lease
	rc.CommitTimeout = 5 * time.Millisecond
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Output: io.Discard})
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
		fs, err := raft.NewFileSnapshotStore(cfg.DataDir, 2, io.Discard)
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
		return raft.NewNetworkTransport(&tlsStream{Listener: ln, local: m.cfg.Addr, cfg: m.cfg.TLS, log: m.cfg.Log.Warn}, 4, 2*time.Second, io.Discard), nil
	}
	if m.cfg.Faults != nil {
		ln, err := net.Listen("tcp", m.raftAddr)
		if err != nil {
			return nil, fmt.Errorf("clms: raft transport on %s: %w", m.raftAddr, err)
		}
		return raft.NewNetworkTransport(&raftStream{Listener: ln, self: m.cfg.Addr, f: m.cfg.Faults}, 4, 2*time.Second, io.Discard), nil
	}
	t, err := raft.NewTCPTransport(m.raftAddr, nil, 4, 2*time.Second, io.Discard)
	if err != nil {
		return nil, fmt.Errorf("clms: raft transport on %s: %w", m.raftAddr, err)
	}
	return t, nil
}

// rn is this node's Raft instance (two_node recovery replaces it).
func (m *Member) rn() *raft.Raft { return m.rft.Load() }

func (m *Member) startGossip(tm timing) error {
	cfg := m.cfg
	mc := tm.gossip
	mc.Name = fmt.Sprintf("node%d", cfg.Node)
	// A node that comes back after a failure is the same node, perhaps on
	// another port; its name is its number.
	mc.DeadNodeReclaimTime = 100 * time.Millisecond
	mc.BindAddr = cfg.Addr
	mc.BindPort = cfg.GossipPort
	mc.AdvertiseAddr = cfg.Addr
	mc.AdvertisePort = cfg.GossipPort
	m.gossip = newGossipTable(m.events)
	mc.Events = m.gossip
	mc.Delegate = &delegate{meta: func() []byte {
		b, _ := json.Marshal(meta{Node: cfg.Node, Raft: m.raftAddr, Boot: m.bootID, Gossip: m.gossipAddr,
			Gate: cfg.GateUp, Level: int(m.reached.Load()), Leaving: m.leaving.Load(), Handled: m.handled.Load(),
			Cluster: m.rn() != nil && m.rn().Leader() != ""})
		return b
	}}
	mc.Logger = log.New(io.Discard, "", 0)
	if len(cfg.GossipKey) > 0 {
		mc.SecretKey = cfg.GossipKey
	}
	if cfg.Faults != nil {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{cfg.Addr}, BindPort: cfg.GossipPort, Logger: mc.Logger})
		if err != nil {
			return fmt.Errorf("clms: gossip on %s:%d: %w", cfg.Addr, cfg.GossipPort, err)
		}
		mc.Transport = newGossipTransport(nt, cfg.Addr, cfg.Faults)
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("clms: gossip on %s:%d: %w", cfg.Addr, cfg.GossipPort, err)
	}
	m.ml = ml
	// The gossip port is known only now (0 picks one): publish it.
	m.gossipAddr = m.GossipAddr()
	if err := ml.UpdateNode(time.Second); err != nil {
		cfg.Log.Warn("publish gossip address", "err", err)
	}
	if len(cfg.Join) > 0 {
		// In the background: peers may still be booting, and an address
		// with no machine behind it costs a connect timeout.
		m.wg.Add(1)
		go m.join()
	}
	return nil
}

// join contacts the join addresses, then every second until one answers.
func (m *Member) join() {
	defer m.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if m.ml.NumMembers() > 1 {
			return
		}
		n, err := m.ml.Join(m.cfg.Join)
		if n > 0 {
			m.cfg.Log.Info("joined", "members", m.ml.NumMembers())
			return
		}
		m.cfg.Log.Info("no member answered yet; retrying", "join", strings.Join(m.cfg.Join, ","), "err", err)
		select {
		case <-m.stop:
			return
		case <-tick.C:
		}
	}
}

// LANGossipConfig is memberlist tuned for a quiet LAN: a node that stops
// answering is suspected within a probe interval and declared dead after
// a short suspicion, while Lifeguard's awareness stretches the timeouts
// of a node that is itself slow (a saturated CPU), so it is not declared
// dead and does not accuse others.
func LANGossipConfig() *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	// 60 ms / 30 ms: a silent node is probed within about a round and
	// declared dead two intervals after the failed probe, for a Down on
	// every survivor under half a second at p99 (100 ms / 50 ms gave
	// 587 ms). Lifeguard multiplies both up to 8x on a node whose own
	// acks come late, which keeps a saturated CPU from flapping.
	c.ProbeInterval = 60 * time.Millisecond
	c.ProbeTimeout = 30 * time.Millisecond
	c.SuspicionMult = 2
	c.SuspicionMaxTimeoutMult = 4
	c.GossipInterval = 20 * time.Millisecond
	c.GossipNodes = 4
	c.TCPTimeout = time.Second
	c.PushPullInterval = 10 * time.Second
	return c
}

// kick wakes the master loop on any gossip event. memberlist calls its
// event delegate with its node table locked, so the delegate must never
// block: a full channel here (the master busy reconciling, which reads
// that table) would deadlock gossip. The master reads the whole table
// when it wakes, so one pending wake-up is enough.
type kick chan struct{}

func (k kick) poke() {
	select {
	case k <- struct{}{}:
	default:
	}
}

type delegate struct{ meta func() []byte }

func (d *delegate) NodeMeta(limit int) []byte {
	b := d.meta()
	if len(b) > limit {
		return nil
	}
	return b
}
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// GossipAddr is where other members join this one.
func (m *Member) GossipAddr() string {
	n := m.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

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
	unpublished := false
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
		// the node back: gossip it once the queue is drained. (A node
		// replaying a long history would otherwise wait for one gossip
		// broadcast per Down in it.)
		unpublished = unpublished || t.State == Down
		if unpublished && m.queue.empty() {
			m.publish()
			unpublished = false
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
		if md.Handled < r.Transition {
			if prev, _ := m.blocked.Swap(r.Node, r.Transition); prev != r.Transition {
				m.cfg.Log.Info("rejoin waits for nodedown cleanup", "node", r.Node, "down", r.Transition, "on", n, "handled", md.Handled)
			}
			return false
		}
	}
	return true
}

// reconnect contacts, every two seconds, the members of the table that
// gossip has lost (as Serf does): a node that died stays silent, but the
// two sides of a healed partition find each other again.
func (m *Member) reconnect() {
	alive := map[string]bool{}
	for _, n := range m.gossip.members() {
		alive[n.Addr] = true
	}
	recs, _ := m.fsm.snapshot()
	var lost []string
	for _, r := range recs {
		if r.Node != m.cfg.Node && r.Gossip != "" && !alive[r.Gossip] {
			lost = append(lost, r.Gossip)
		}
	}
	if len(lost) > 0 {
		m.ml.Join(lost)
	}
}

// watchQuorum self-fences a node that lost quorum for SelfFenceAfter.
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
		case had && time.Since(lostAt) >= m.cfg.SelfFenceAfter:
			m.cfg.Log.Error("no quorum: self-fencing", "for", time.Since(lostAt).Round(time.Millisecond))
			m.cfg.SelfFence()
			return
		}
	}
}

// masterLoop reconciles the membership table with gossip while this node
// is the Raft leader: on every gossip event and every 100 ms.
func (m *Member) masterLoop() {
	defer m.wg.Done()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-m.events:
		case <-tick.C:
		}
		if m.rn().State() == raft.Leader {
			m.reconcile()
		}
	}
}

// reconcile makes the table match gossip: alive nodes not Up are brought
// in, Up nodes gossip has lost (or that rebooted) are taken Down.
func (m *Member) reconcile() {
	alive := m.gossip.nodes()
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
				if err := m.rn().DemoteVoter(raft.ServerID(strconv.Itoa(r.Node)), 0, 2*time.Second).Error(); err != nil {
					m.cfg.Log.Warn("demote a leaving node", "node", r.Node, "err", err)
				}
			}
			continue
		case !ok:
			reason = "failure detected"
		case r.Addr != "" && md.Boot != bootOf(r.Addr):
			reason = "rebooted"
		default:
			continue
		}
		if r.Node == m.cfg.Node {
			continue // the master does not take itself down here
		}
		if m.cfg.Fence != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := m.cfg.Fence(ctx, r.Node)
			cancel()
			if err != nil {
				m.cfg.Log.Error("fencing failed; node stays in its state until fenced", "node", r.Node, "err", err)
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
	m.balanceVoters()
}

// addrOf packs what the table keeps of a node: its raft address and boot
// id ("addr#boot").
func addrOf(md meta) string { return md.Raft + "#" + md.Boot }

func bootOf(addr string) string {
	_, b, _ := strings.Cut(addr, "#")
	return b
}

// RunLevel is the cluster's run level: the last one committed, or the
// configured one before any was.
func (m *Member) RunLevel() int {
	if l := m.fsm.runLevel(); l != 0 {
		return l
	}
	return m.cfg.RunLevel
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
	if err := f.Error(); err != nil {
		return fmt.Errorf("clms: set run level %d: %w", level, err)
	}
	if err, ok := f.Response().(error); ok {
		return err
	}
	m.events.poke() // nodes waiting for the new level may now be Up
	return nil
}

// SetReached tells the cluster (by gossip) which run level this node has
// reached.
func (m *Member) SetReached(level int) {
	if int(m.reached.Swap(int32(level))) != level {
		m.publish()
	}
}

// Leave tells the cluster this node is shutting down: the master takes it
// ShuttingDown, and Down without fencing once it has left.
func (m *Member) Leave() {
	if !m.leaving.Swap(true) {
		m.publish()
	}
}

func (m *Member) publish() {
	if err := m.ml.UpdateNode(time.Second); err != nil {
		// Queued, not yet sent as often as memberlist sends an update:
		// republish sends it again.
		m.unsent.Store(true)
		m.cfg.Log.Debug("publish node state", "err", err)
		return
	}
	m.unsent.Store(false)
}

// republish gossips this node's state again (every few gossip rounds) while the
// last update may not have reached the master (memberlist's broadcast of
// it had not gone out when publish gave up waiting, which happens on a
// busy, emulated CPU) or while the master has not acted on it: this
// node reached the cluster's run level but is still ComingUp, or it is
// leaving but still Up. A lost update otherwise waits for the next full
// state exchange (push-pull: 10-30 s).
func (m *Member) republish() {
	if m.unsent.Load() || m.waitsOnMaster() {
		m.publish()
	}
}

// waitsOnMaster reports whether this node said something in its gossiped
// state that the master has not acted on yet.
func (m *Member) waitsOnMaster() bool {
	recs, _ := m.fsm.snapshot()
	for _, r := range recs {
		if r.Node != m.cfg.Node {
			continue
		}
		switch {
		case m.leaving.Load():
			return r.State == Up
		case r.State == ComingUp:
			if m.cfg.WaitForAll > 0 && !m.fsm.isFormed() {
				return false // the master waits for other nodes
			}
			// Without GateUp being alive is all it says.
			return m.cfg.GateUp && int(m.reached.Load()) >= m.RunLevel()
		}
	}
	return false
}

func (m *Member) commit(node int, st State, expect uint64, addr, reason string) (Transition, error) {
	return m.apply(command{Node: node, State: st, Expect: expect, Addr: addr, At: time.Now().UTC(), Master: m.cfg.Node, Reason: reason})
}

func (m *Member) commitJoin(node int, expect uint64, md meta) (Transition, error) {
	return m.apply(command{Node: node, State: ComingUp, Expect: expect, Addr: addrOf(md), Gossip: md.Gossip, At: time.Now().UTC(), Master: m.cfg.Node, Reason: "joined"})
}

func (m *Member) apply(c command) (Transition, error) {
	b, _ := json.Marshal(c)
	f := m.rn().Apply(b, 2*time.Second)
	if err := f.Error(); err != nil {
		return Transition{}, err
	}
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
			if err := m.rn().RemoveServer(id, 0, 2*time.Second).Error(); err != nil {
				return err
			}
			continue
		}
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	if voters < m.cfg.MaxVoters {
		return m.rn().AddVoter(id, raft.ServerAddress(addr), 0, 2*time.Second).Error()
	}
	return m.rn().AddNonvoter(id, raft.ServerAddress(addr), 0, 2*time.Second).Error()
}

func (m *Member) removeServer(n int) {
	id := raft.ServerID(strconv.Itoa(n))
	if err := m.rn().RemoveServer(id, 0, 2*time.Second).Error(); err != nil {
		m.cfg.Log.Warn("remove from raft", "node", n, "err", err)
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
		if err := m.rn().AddVoter(s.ID, s.Address, 0, 2*time.Second).Error(); err == nil {
			voters++
		}
	}
}

// Status is this node's view of the cluster.
type Status struct {
	Self   int `json:"self"`
	Master int `json:"master"`
	// Quorum is false on a node that has no master it hears from: a
	// minority side, which grants nothing.
	Quorum         bool   `json:"quorum"`
	Term           uint64 `json:"term"`
	LastTransition uint64 `json:"last_transition"`
	// RunLevel is the cluster's run level.
	RunLevel int `json:"runlevel"`
	// Waiting, with wait_for_all, says the cluster has not yet seen every
	// node at once: it takes no node Up.
	Waiting string       `json:"waiting,omitempty"`
	Nodes   []NodeStatus `json:"nodes"`
}

// NodeStatus is one row of the status table.
type NodeStatus struct {
	NodeRecord
	Voter bool `json:"voter"`
	// Gone: the node left gossip or gossip lost it. The table may still
	// show it as it was when this side can no longer commit (no master:
	// the master itself went), so shutdown waits on this too.
	Gone bool `json:"gone,omitempty"`
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
	if err := m.rn().Apply(b, 5*time.Second).Error(); err != nil {
		m.cfg.Log.Warn("wait_for_all: commit", "err", err)
		return false
	}
	m.cfg.Log.Info("wait_for_all: every node seen at once; the cluster formed", "nodes", len(alive))
	return true
}

// ReasonFenced ends the reason of a Down transition whose node the master
// fenced (powered off through the fence agent) before committing it.
const ReasonFenced = "fenced"

// Status reports this node's view.
func (m *Member) Status() Status {
	recs, last := m.fsm.snapshot()
	st := Status{Self: m.cfg.Node, LastTransition: last, RunLevel: m.RunLevel()}
	if m.cfg.WaitForAll > 0 && !m.fsm.isFormed() {
		st.Waiting = fmt.Sprintf("wait_for_all: not yet %d nodes seen at once", m.cfg.WaitForAll)
	}
	_, id := m.rn().LeaderWithID()
	if n, err := strconv.Atoi(string(id)); err == nil {
		st.Master = n
	}
	st.Term = m.rn().CurrentTerm()
	switch m.rn().State() {
	case raft.Leader:
		st.Quorum = true
	case raft.Follower:
		st.Quorum = st.Master != 0 && time.Since(m.rn().LastContact()) < time.Second
	}
	var gossiping map[int]meta
	if m.gossip != nil {
		gossiping = m.gossip.nodes()
	}
	voters := map[int]bool{}
	if servers, err := m.raftConfig(); err == nil {
		for _, s := range servers {
			if n, err := strconv.Atoi(string(s.ID)); err == nil && s.Suffrage == raft.Voter {
				voters[n] = true
			}
		}
	}
	for _, r := range recs {
		r.Addr, _, _ = strings.Cut(r.Addr, "#")
		st.Nodes = append(st.Nodes, NodeStatus{NodeRecord: r, Voter: voters[r.Node], Gone: m.gossip != nil && !has(gossiping, r.Node)})
	}
	return st
}

func has(m map[int]meta, n int) bool {
	_, ok := m[n]
	return ok
}

// History returns the transitions this node applied (the most recent
// ones, since it joined or restored a snapshot).
func (m *Member) History() []Transition { return m.fsm.historyCopy() }

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
