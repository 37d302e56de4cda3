package clms

import (
	"encoding/json"
	"fmt"
	"log"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/locus-ssi/locus/services/ics"
)

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

func (m *Member) startGossip(tm timing) error {
	cfg := m.cfg
	mc := tm.gossip
	m.deadAfter = deadAfter(mc)
	mc.Name = ics.NodeName(cfg.Node)
	// A node that comes back after a failure is the same node, perhaps on
	// another port; its name is its number.
	mc.DeadNodeReclaimTime = 100 * time.Millisecond
	mc.BindAddr = cfg.Addr
	mc.BindPort = cfg.GossipPort
	mc.AdvertiseAddr = cfg.Addr
	mc.AdvertisePort = cfg.GossipPort
	m.gossip = newGossipTable(m.events, m.cfg.CertAddr, m.cfg.Log)
	mc.Events = m.gossip
	mc.Delegate = &delegate{meta: func() []byte {
		b, _ := json.Marshal(meta{Node: cfg.Node, Raft: m.raftAddr, Boot: m.bootID, Gossip: m.gossipAddr,
			Gate: cfg.GateUp, Level: int(m.reached.Load()), Leaving: m.leaving.Load(), Handled: m.handled.Load(),
			Cluster: m.rn() != nil && m.rn().Leader() != ""})
		return b
	}, notify: m.notifyMsg}
	mc.Logger = log.New(newLibLog(cfg.Log, "memberlist"), "", 0)
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

type delegate struct {
	meta   func() []byte
	notify func([]byte)
}

func (d *delegate) NodeMeta(limit int) []byte {
	b := d.meta()
	if len(b) > limit {
		return nil
	}
	return b
}

func (d *delegate) NotifyMsg(b []byte) {
	if d.notify != nil {
		d.notify(b)
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

func (d *delegate) LocalState(join bool) []byte { return nil }

func (d *delegate) MergeRemoteState(buf []byte, join bool) {}

// GossipAddr is where other members join this one.
func (m *Member) GossipAddr() string {
	n := m.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
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

// addrOf packs what the table keeps of a node: its raft address and boot
// id ("addr#boot").
func addrOf(md meta) string { return md.Raft + "#" + md.Boot }

func bootOf(addr string) string {
	_, b, _ := strings.Cut(addr, "#")
	return b
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
