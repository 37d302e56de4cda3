package cfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hugelgupf/p9/p9"
)

// DefaultPort is the CFS port on the interconnect.
const DefaultPort = 7475

// Server serves an Export over TCP to the nodes Allow admits.
type Server struct {
	export *Export
	p9     *p9.Server
	allow  func(netip.Addr) bool
	log    *slog.Logger

	// privPort: only connections from a privileged source port (below
	// 1024, which only root can bind) are served, as NFS's "secure"
	// export: a local user on an admitted node cannot reach the root.
	privPort bool

	// metrics, if set (SetMetrics), counts the requests.
	metrics atomic.Pointer[Metrics]

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// SetMetrics has m count the server's requests and clients (those
// connected from then on).
func (s *Server) SetMetrics(m *Metrics) { s.metrics.Store(m) }

// RequirePrivilegedPort makes the server refuse connections whose source
// port is 1024 or above: only root on an admitted node (the kernel client
// mounting with privport, or a node's relay) reaches the shared root, not
// any process there. Call before Serve.
func (s *Server) RequirePrivilegedPort() { s.privPort = true }

// NewServer serves export. allow is asked about every connection's
// source address before anything is read from it; nil admits all (tests,
// and a loopback-only listener).
func NewServer(export *Export, allow func(netip.Addr) bool, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{export: export, allow: allow, log: log, conns: map[net.Conn]struct{}{}}
	s.p9 = p9.NewServer(export, p9.WithServerLogger(slogPrintf{log}), p9.WithServerObserver(func(op string, d time.Duration, failed bool) {
		if m := s.metrics.Load(); m != nil {
			m.observe(op, d, failed)
		}
	}))
	return s
}

// Serve accepts connections on ln until ctx ends, then closes ln and every
// connection and returns once their requests are done.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	defer stop()
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("cfs: accept on %s: %w", ln.Addr(), err)
		}
		from := remoteAddrPort(c)
		if s.allow != nil && !s.allow(from.Addr()) {
			s.log.Warn("cfs: refused a connection from a node not in the cluster", "from", c.RemoteAddr().String())
			c.Close()
			continue
		}
		if s.privPort && from.Port() >= 1024 {
			s.log.Warn("cfs: refused a connection from an unprivileged port (not the node's root)", "from", c.RemoteAddr().String())
			c.Close()
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok {
			// A client that vanishes (power loss) is noticed within a
			// minute and its fids released.
			tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 6})
			tc.SetNoDelay(true)
		}
		s.mu.Lock()
		if ctx.Err() != nil {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.log.Info("cfs: client connected", "from", c.RemoteAddr().String())
			if m := s.metrics.Load(); m != nil {
				m.clients.Inc()
				defer m.clients.Dec()
			}
			s.p9.Handle(guard(c), c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			s.log.Info("cfs: client gone", "from", c.RemoteAddr().String())
		}()
	}
}

// DropFrom closes every connection from addr: a node taken Down (fenced
// or not) loses its connections at once, so nothing more it sends is
// written; its requests in flight end with the connection. It returns
// how many it closed.
func (s *Server) DropFrom(addr netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		if remoteAddrPort(c).Addr() == addr.Unmap() {
			c.Close()
			delete(s.conns, c)
			n++
		}
	}
	return n
}

// Clients is the number of connected clients.
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func remoteAddrPort(c net.Conn) netip.AddrPort {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// slogPrintf carries the p9 server's messages (a handler that panicked, a
// client that sent garbage) to slog.
type slogPrintf struct{ log *slog.Logger }

func (l slogPrintf) Printf(format string, v ...any) {
	// The p9 server traces every message: format only when asked to.
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug("cfs: 9p: " + fmt.Sprintf(format, v...))
	}
}

// maxMessage bounds one 9P message; the kernel client's msize is at most
// 512 KiB and the p9 server's own limit is lower still.
const maxMessage = 4 << 20

// frameGuard passes a client's byte stream to the p9 server, checking the
// framing of each message on the way: a size that cannot be a message, or
// a Tflush naming its own tag (the p9 server would wait forever for the
// flush to finish, holding the connection and its fids), ends the
// connection.
type frameGuard struct {
	c         net.Conn
	remaining int // bytes of the current message still to pass on
	hdr       [9]byte
	pending   []byte // header bytes read ahead, not yet passed on
}

func guard(c net.Conn) *frameGuard { return &frameGuard{c: c} }

// errBadFrame ends a connection whose framing is wrong.
var errBadFrame = errors.New("cfs: malformed 9P message")

func (g *frameGuard) Read(p []byte) (int, error) {
	if len(g.pending) > 0 {
		n := copy(p, g.pending)
		g.pending = g.pending[n:]
		return n, nil
	}
	if g.remaining == 0 {
		// size[4] type[1] tag[2], and for Tflush oldtag[2].
		if _, err := io.ReadFull(g.c, g.hdr[:7]); err != nil {
			return 0, err
		}
		size := int(binary.LittleEndian.Uint32(g.hdr[:4]))
		if size < 7 || size > maxMessage {
			return 0, fmt.Errorf("%w: size %d", errBadFrame, size)
		}
		head := 7
		if g.hdr[4] == msgTflush {
			if size != 9 {
				return 0, fmt.Errorf("%w: Tflush of size %d", errBadFrame, size)
			}
			if _, err := io.ReadFull(g.c, g.hdr[7:9]); err != nil {
				return 0, err
			}
			if g.hdr[5] == g.hdr[7] && g.hdr[6] == g.hdr[8] {
				return 0, fmt.Errorf("%w: Tflush of its own tag", errBadFrame)
			}
			head = 9
		}
		g.remaining = size - head
		g.pending = g.hdr[:head]
		n := copy(p, g.pending)
		g.pending = g.pending[n:]
		return n, nil
	}
	if len(p) > g.remaining {
		p = p[:g.remaining]
	}
	n, err := g.c.Read(p)
	g.remaining -= n
	return n, err
}

func (g *frameGuard) Close() error { return g.c.Close() }

// msgTflush is the 9P message type of Tflush.
const msgTflush = 108

// Reserved ports a privileged client binds, as the kernel's 9P client does
// with privport (and NFS's with resvport).
const (
	minPrivPort = 665
	maxPrivPort = 1023
)

// DialPrivileged dials addr over TCP from local (if valid) and a
// privileged source port, trying the reserved ports from the top until
// one is free. Only root may bind them.
func DialPrivileged(ctx context.Context, local netip.Addr, addr string) (net.Conn, error) {
	var lastErr error
	for port := maxPrivPort; port >= minPrivPort; port-- {
		la := &net.TCPAddr{Port: port}
		if local.IsValid() {
			la.IP = local.AsSlice()
		}
		d := net.Dialer{LocalAddr: la}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c, nil
		}
		lastErr = err
		if !errors.Is(err, syscall.EADDRINUSE) && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("cfs: no free privileged port to dial %s from: %w", addr, lastErr)
}
