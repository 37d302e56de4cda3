package clms

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// Faults cuts traffic between chosen nodes' addresses, for partition
// tests: gossip packets and streams, and Raft connections, between two
// cut addresses are dropped (existing connections are closed at the cut).
// A nil *Faults lets everything through.
type Faults struct {
	mu    sync.Mutex
	cut   map[[2]string]layer
	conns map[*faultConn]struct{}
}

// layer is which traffic a cut drops: gossip, Raft, or both.
type layer uint8

const (
	layerGossip layer = 1 << iota
	layerRaft
)

// NewFaults makes a fault injector with nothing cut.
func NewFaults() *Faults {
	return &Faults{cut: map[[2]string]layer{}, conns: map[*faultConn]struct{}{}}
}

// Partition cuts every address in a from every address in b (IPs).
func (f *Faults) Partition(a, b []string) { f.partition(a, b, layerGossip|layerRaft) }

// PartitionRaft cuts only Raft's connections between a and b; gossip
// goes on (a node that can gossip with the others but not elect).
func (f *Faults) PartitionRaft(a, b []string) { f.partition(a, b, layerRaft) }

func (f *Faults) partition(a, b []string, l layer) {
	f.mu.Lock()
	for _, x := range a {
		for _, y := range b {
			f.cut[[2]string{x, y}] |= l
			f.cut[[2]string{y, x}] |= l
		}
	}
	var doomed []*faultConn
	for c := range f.conns {
		if f.cut[[2]string{c.local, c.remote}]&c.layer != 0 {
			doomed = append(doomed, c)
		}
	}
	f.mu.Unlock()
	for _, c := range doomed {
		c.Close()
	}
}

// Heal restores all traffic.
func (f *Faults) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut = map[[2]string]layer{}
}

func (f *Faults) blocked(a, b string, l layer) bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cut[[2]string{a, b}]&l != 0
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}

var errCut = errors.New("clms: traffic cut (fault injection)")

type faultConn struct {
	net.Conn
	f             *Faults
	local, remote string
	layer         layer
	once          sync.Once
}

func (f *Faults) track(c net.Conn, local string, l layer) net.Conn {
	fc := &faultConn{Conn: c, f: f, local: local, remote: hostOf(c.RemoteAddr().String()), layer: l}
	f.mu.Lock()
	f.conns[fc] = struct{}{}
	f.mu.Unlock()
	return fc
}

func (c *faultConn) Close() error {
	c.once.Do(func() {
		c.f.mu.Lock()
		delete(c.f.conns, c)
		c.f.mu.Unlock()
	})
	return c.Conn.Close()
}

// gossipTransport wraps memberlist's transport with the faults.
type gossipTransport struct {
	memberlist.NodeAwareTransport
	self    string
	f       *Faults
	packets chan *memberlist.Packet
	streams chan net.Conn
	stop    chan struct{}
}

func newGossipTransport(inner *memberlist.NetTransport, self string, f *Faults) *gossipTransport {
	t := &gossipTransport{NodeAwareTransport: inner, self: self, f: f,
		packets: make(chan *memberlist.Packet), streams: make(chan net.Conn), stop: make(chan struct{})}
	go func() {
		for {
			select {
			case p := <-inner.PacketCh():
				if t.f.blocked(t.self, hostOf(p.From.String()), layerGossip) {
					continue
				}
				select {
				case t.packets <- p:
				case <-t.stop:
					return
				}
			case <-t.stop:
				return
			}
		}
	}()
	go func() {
		for {
			select {
			case c := <-inner.StreamCh():
				if t.f.blocked(t.self, hostOf(c.RemoteAddr().String()), layerGossip) {
					c.Close()
					continue
				}
				select {
				case t.streams <- t.f.track(c, t.self, layerGossip):
				case <-t.stop:
					c.Close()
					return
				}
			case <-t.stop:
				return
			}
		}
	}()
	return t
}

func (t *gossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *gossipTransport) StreamCh() <-chan net.Conn           { return t.streams }

func (t *gossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.f.blocked(t.self, hostOf(addr), layerGossip) {
		return time.Now(), nil // dropped on the wire
	}
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t *gossipTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.f.blocked(t.self, hostOf(a.Addr), layerGossip) {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteToAddress(b, a)
}

func (t *gossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *gossipTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.f.blocked(t.self, hostOf(a.Addr), layerGossip) {
		time.Sleep(min(timeout, 100*time.Millisecond))
		return nil, errCut
	}
	c, err := t.NodeAwareTransport.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	return t.f.track(c, t.self, layerGossip), nil
}

// Shutdown stops the inner transport, draining its channels meanwhile:
// its listeners cannot exit while blocked handing over a packet.
func (t *gossipTransport) Shutdown() error {
	done := make(chan error, 1)
	go func() { done <- t.NodeAwareTransport.Shutdown() }()
	for {
		select {
		case <-t.NodeAwareTransport.PacketCh():
		case c := <-t.NodeAwareTransport.StreamCh():
			c.Close()
		case err := <-done:
			close(t.stop)
			return err
		}
	}
}

// raftStream is Raft's TCP stream layer with the faults.
type raftStream struct {
	net.Listener
	self string
	f    *Faults
}

func (s *raftStream) Accept() (net.Conn, error) {
	for {
		c, err := s.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if s.f.blocked(s.self, hostOf(c.RemoteAddr().String()), layerRaft) {
			c.Close()
			continue
		}
		return s.f.track(c, s.self, layerRaft), nil
	}
}

func (s *raftStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if s.f.blocked(s.self, hostOf(string(addr)), layerRaft) {
		return nil, errCut
	}
	d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(s.self)}}
	c, err := d.Dial("tcp", string(addr))
	if err != nil {
		return nil, err
	}
	return s.f.track(c, s.self, layerRaft), nil
}
