// Package ics is Locus's inter-node communication service (openSSI's
// ICS): every node-to-node call of the SSI subsystems goes through it.
//
// It is gRPC over TCP with mutual TLS: each node holds a certificate for
// its number and interconnect address, signed by the cluster's CA (which
// the init node creates at first boot), and trusts only that CA. A server
// learns the caller's node number from the caller's verified certificate,
// and refuses a certificate used from an address other than the one it
// names. Calls are unary (Call), asynchronous (Go, returning a Future) or
// server-streaming (Stream); each carries a deadline, and every call in
// flight to a node is cancelled, with ErrNodeDown, the moment membership
// takes that node Down (NodeDown).
//
// A duplex stream (Duplex) carries messages both ways for as long as it
// lasts, without the default deadline: a remote process's terminal. It
// ends, with ErrNodeDown, when either end's node goes Down.
//
// Messages are opaque bytes routed by method name; the wire encoding is
// JSON through gRPC's codec interface, so no generated code is needed.
package ics

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// DefaultPort is the ICS port on the interconnect.
const DefaultPort = 7474

// DefaultDeadline applies to a call whose context has none.
const DefaultDeadline = 10 * time.Second

// ErrNodeDown ends calls to a node that membership took Down.
var ErrNodeDown = errors.New("ics: node is Down")

// Handler serves a unary method: from is the caller's node number.
type Handler func(ctx context.Context, from int, req []byte) ([]byte, error)

// StreamHandler serves a server-streaming method, calling send for each
// message.
type StreamHandler func(ctx context.Context, from int, req []byte, send func([]byte) error) error

// DuplexHandler serves a bidirectional stream: recv returns the caller's
// next message (io.EOF once it closed its side), send sends one (safe
// from several goroutines). The stream ends when the handler returns.
type DuplexHandler func(ctx context.Context, from int, recv func() ([]byte, error), send func([]byte) error) error

// envelope is the one message type on the wire.
type envelope struct {
	Method string `json:"m"`
	Body   []byte `json:"b,omitempty"`
}

type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (jsonCodec) Name() string                       { return "json" }

// Identity is a node's TLS identity: its certificate and key, and the CA.
type Identity struct {
	Node    int
	CertPEM []byte
	KeyPEM  []byte
	CAPEM   []byte
	// OperatorCAPEM is the operators' CA: the node's API takes operator
	// certificates signed by it.
	OperatorCAPEM []byte
}

func (id Identity) tlsConfig() (*tls.Config, *x509.CertPool, error) {
	cert, err := tls.X509KeyPair(id.CertPEM, id.KeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("ics: node %d certificate: %w", id.Node, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(id.CAPEM) {
		return nil, nil, errors.New("ics: no CA certificate")
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}, pool, nil
}

// MutualTLS returns TLS configurations for other node-to-node channels
// (Raft) under the same trust as ICS: server requires and verifies a
// client certificate from the cluster CA; client presents this node's
// and trusts only the CA (its caller sets ServerName).
func (id Identity) MutualTLS() (server, client *tls.Config, err error) {
	tc, pool, err := id.tlsConfig()
	if err != nil {
		return nil, nil, err
	}
	server, client = tc.Clone(), tc.Clone()
	server.ClientAuth, server.ClientCAs = tls.RequireAndVerifyClientCert, pool
	client.RootCAs = pool
	return server, client, nil
}

// Config configures a node's ICS endpoint.
type Config struct {
	Identity Identity
	// Listen is the address to serve on (interconnect IP:port).
	Listen string
	// Addr maps a node number to its ICS address.
	Addr func(node int) (string, error)
	Log  *slog.Logger
}

// Node is one node's ICS endpoint: its server and its calls to others.
type Node struct {
	cfg    Config
	server *grpc.Server
	ln     net.Listener
	tls    *tls.Config
	pool   *x509.CertPool

	mu       sync.Mutex
	handlers map[string]Handler
	streams  map[string]StreamHandler
	duplexes map[string]DuplexHandler
	conns    map[int]*grpc.ClientConn
	inflight map[int]map[*inflightCall]struct{}
	// inbound are the duplex streams other nodes opened here, by node:
	// they end when that node goes Down.
	inbound map[int]map[*inflightCall]struct{}
}

type inflightCall struct{ cancel context.CancelCauseFunc }

// Start serves ICS on cfg.Listen.
func Start(cfg Config) (*Node, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	tc, pool, err := cfg.Identity.tlsConfig()
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, tls: tc, pool: pool, handlers: map[string]Handler{}, streams: map[string]StreamHandler{},
		duplexes: map[string]DuplexHandler{}, inbound: map[int]map[*inflightCall]struct{}{},
		conns: map[int]*grpc.ClientConn{}, inflight: map[int]map[*inflightCall]struct{}{}}
	stc := tc.Clone()
	stc.ClientAuth = tls.RequireAndVerifyClientCert
	stc.ClientCAs = pool
	n.server = grpc.NewServer(grpc.Creds(credentials.NewTLS(stc)), grpc.ForceServerCodec(jsonCodec{}),
		grpc.MaxRecvMsgSize(16<<20))
	n.server.RegisterService(&grpc.ServiceDesc{
		ServiceName: "locus.ics.ICS",
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Call", Handler: n.serveCall}},
		Streams: []grpc.StreamDesc{{StreamName: "Stream", Handler: n.serveStream, ServerStreams: true},
			{StreamName: "Duplex", Handler: n.serveDuplex, ServerStreams: true, ClientStreams: true}},
	}, n)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("ics: listen on %s: %w", cfg.Listen, err)
	}
	n.ln = ln
	go n.server.Serve(ln) // ends when Close stops the server
	return n, nil
}

// Addr is where this node serves.
func (n *Node) Addr() string { return n.ln.Addr().String() }

// Handle registers a unary method.
func (n *Node) Handle(method string, h Handler) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.handlers[method] = h
}

// HandleStream registers a server-streaming method.
func (n *Node) HandleStream(method string, h StreamHandler) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.streams[method] = h
}

// HandleDuplex registers a duplex method.
func (n *Node) HandleDuplex(method string, h DuplexHandler) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.duplexes[method] = h
}

// caller authenticates the peer of ctx: its verified certificate names a
// node, and the connection comes from that node's address.
func caller(ctx context.Context) (int, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return 0, status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 {
		return 0, status.Error(codes.Unauthenticated, "no verified certificate")
	}
	cert := ti.State.VerifiedChains[0][0]
	node, err := NodeOf(cert)
	if err != nil {
		return 0, status.Error(codes.PermissionDenied, err.Error())
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return 0, status.Error(codes.PermissionDenied, "peer address")
	}
	ip := net.ParseIP(host)
	for _, a := range cert.IPAddresses {
		if a.Equal(ip) {
			return node, nil
		}
	}
	return 0, status.Errorf(codes.PermissionDenied, "certificate of node %d used from %s, not from its address", node, host)
}

func (n *Node) serveCall(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	from, err := caller(ctx)
	if err != nil {
		n.cfg.Log.Warn("ics: refused call", "err", err)
		return nil, err
	}
	var req envelope
	if err := dec(&req); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "bad message: %v", err)
	}
	n.mu.Lock()
	h := n.handlers[req.Method]
	n.mu.Unlock()
	if h == nil {
		return nil, status.Errorf(codes.Unimplemented, "no method %q", req.Method)
	}
	out, err := h(ctx, from, req.Body)
	if err != nil {
		return nil, status.Error(codes.Unknown, err.Error())
	}
	return &envelope{Method: req.Method, Body: out}, nil
}

func (n *Node) serveStream(srv any, ss grpc.ServerStream) error {
	from, err := caller(ss.Context())
	if err != nil {
		n.cfg.Log.Warn("ics: refused stream", "err", err)
		return err
	}
	var req envelope
	if err := ss.RecvMsg(&req); err != nil {
		return status.Errorf(codes.InvalidArgument, "bad message: %v", err)
	}
	n.mu.Lock()
	h := n.streams[req.Method]
	n.mu.Unlock()
	if h == nil {
		return status.Errorf(codes.Unimplemented, "no stream method %q", req.Method)
	}
	err = h(ss.Context(), from, req.Body, func(b []byte) error { return ss.SendMsg(&envelope{Method: req.Method, Body: b}) })
	if err != nil {
		return status.Error(codes.Unknown, err.Error())
	}
	return nil
}

func (n *Node) serveDuplex(srv any, ss grpc.ServerStream) error {
	from, err := caller(ss.Context())
	if err != nil {
		n.cfg.Log.Warn("ics: refused duplex stream", "err", err)
		return err
	}
	var req envelope
	if err := ss.RecvMsg(&req); err != nil {
		return status.Errorf(codes.InvalidArgument, "bad message: %v", err)
	}
	n.mu.Lock()
	h := n.duplexes[req.Method]
	n.mu.Unlock()
	if h == nil {
		return status.Errorf(codes.Unimplemented, "no duplex method %q", req.Method)
	}
	ctx, cancel := context.WithCancelCause(ss.Context())
	ic := &inflightCall{cancel: cancel}
	n.mu.Lock()
	if n.inbound[from] == nil {
		n.inbound[from] = map[*inflightCall]struct{}{}
	}
	n.inbound[from][ic] = struct{}{}
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.inbound[from], ic)
		n.mu.Unlock()
		cancel(nil)
	}()
	var sendMu sync.Mutex
	send := func(b []byte) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return ss.SendMsg(&envelope{Body: b})
	}
	// The pump ends when the stream does (the handler returned, or
	// the caller went); recv also ends when the caller's node is Down.
	msgs := make(chan []byte, 1)
	var final error // set before msgs is closed
	go func() {
		defer close(msgs)
		for {
			var m envelope
			if err := ss.RecvMsg(&m); err != nil {
				final = err
				if !errors.Is(err, io.EOF) {
					if c := context.Cause(ctx); c != nil {
						final = c
					}
				}
				return
			}
			select {
			case msgs <- m.Body:
			case <-ctx.Done():
				final = context.Cause(ctx)
				return
			}
		}
	}()
	recv := func() ([]byte, error) {
		select {
		case b, ok := <-msgs:
			if !ok {
				return nil, final
			}
			return b, nil
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
	if err := h(ctx, from, recv, send); err != nil {
		return status.Error(codes.Unknown, err.Error())
	}
	return nil
}

// conn returns the connection to node to, dialing it on first use; the
// server must present node to's certificate.
func (n *Node) conn(to int) (*grpc.ClientConn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c := n.conns[to]; c != nil {
		return c, nil
	}
	addr, err := n.cfg.Addr(to)
	if err != nil {
		return nil, err
	}
	tc := n.tls.Clone()
	tc.RootCAs = n.pool
	tc.ServerName = NodeName(to)
	// Calls leave from this node's interconnect address, the one its
	// certificate names.
	var local net.Addr
	if host, _, err := net.SplitHostPort(n.cfg.Listen); err == nil && host != "" {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			local = &net.TCPAddr{IP: ip}
		}
	}
	dialer := &net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}
	c, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", a) }),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(jsonCodec{}), grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return nil, fmt.Errorf("ics: node %d at %s: %w", to, addr, err)
	}
	n.conns[to] = c
	return c, nil
}

// track registers a call to node to, so NodeDown can cancel it; the
// returned context carries the default deadline if ctx had none.
func (n *Node) track(ctx context.Context, to int) (context.Context, func()) {
	cancelTimeout := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancelTimeout = context.WithTimeout(ctx, DefaultDeadline)
	}
	c2, cancelCause := context.WithCancelCause(ctx)
	ic := &inflightCall{cancel: cancelCause}
	n.add(to, ic)
	return c2, func() { n.remove(to, ic); cancelCause(nil); cancelTimeout() }
}

func (n *Node) add(to int, ic *inflightCall) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inflight[to] == nil {
		n.inflight[to] = map[*inflightCall]struct{}{}
	}
	n.inflight[to][ic] = struct{}{}
}

func (n *Node) remove(to int, ic *inflightCall) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.inflight[to], ic)
}

// callErr turns a failed call's error into one naming the node, and
// ErrNodeDown if NodeDown cancelled it.
func callErr(ctx context.Context, to int, method string, err error) error {
	if errors.Is(context.Cause(ctx), ErrNodeDown) {
		return fmt.Errorf("ics: %s on node %d: %w", method, to, ErrNodeDown)
	}
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("ics: %s on node %d: %s: %s", method, to, st.Code(), st.Message())
	}
	return fmt.Errorf("ics: %s on node %d: %w", method, to, err)
}

// Call makes a unary call to node to.
func (n *Node) Call(ctx context.Context, to int, method string, req []byte) ([]byte, error) {
	c, err := n.conn(to)
	if err != nil {
		return nil, err
	}
	ctx, done := n.track(ctx, to)
	defer done()
	var resp envelope
	if err := c.Invoke(ctx, "/locus.ics.ICS/Call", &envelope{Method: method, Body: req}, &resp); err != nil {
		return nil, callErr(ctx, to, method, err)
	}
	return resp.Body, nil
}

// Future is the result of an asynchronous call.
type Future struct {
	done chan struct{}
	resp []byte
	err  error
}

// Go starts a call and returns at once.
func (n *Node) Go(ctx context.Context, to int, method string, req []byte) *Future {
	f := &Future{done: make(chan struct{})}
	go func() {
		defer close(f.done)
		f.resp, f.err = n.Call(ctx, to, method, req)
	}()
	return f
}

// Wait returns the call's result once it has one.
func (f *Future) Wait() ([]byte, error) {
	<-f.done
	return f.resp, f.err
}

// Done is closed when the result is ready.
func (f *Future) Done() <-chan struct{} { return f.done }

// Stream makes a server-streaming call, passing each message to recv
// until the server ends the stream (nil) or something fails.
func (n *Node) Stream(ctx context.Context, to int, method string, req []byte, recv func([]byte) error) error {
	c, err := n.conn(to)
	if err != nil {
		return err
	}
	ctx, done := n.track(ctx, to)
	defer done()
	s, err := c.NewStream(ctx, &grpc.StreamDesc{StreamName: "Stream", ServerStreams: true}, "/locus.ics.ICS/Stream")
	if err != nil {
		return callErr(ctx, to, method, err)
	}
	if err := s.SendMsg(&envelope{Method: method, Body: req}); err != nil {
		return callErr(ctx, to, method, err)
	}
	if err := s.CloseSend(); err != nil {
		return callErr(ctx, to, method, err)
	}
	for {
		var m envelope
		err := s.RecvMsg(&m)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return callErr(ctx, to, method, err)
		}
		if err := recv(m.Body); err != nil {
			return err
		}
	}
}

// Duplex is an open duplex stream to another node.
type Duplex struct {
	s      grpc.ClientStream
	ctx    context.Context
	done   func()
	to     int
	method string
	sendMu sync.Mutex
}

// OpenDuplex opens a duplex stream to method on node to. It lasts until
// ctx ends, Close, the server's handler returning, or node to going Down.
func (n *Node) OpenDuplex(ctx context.Context, to int, method string) (*Duplex, error) {
	c, err := n.conn(to)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	ic := &inflightCall{cancel: cancel}
	n.add(to, ic)
	d := &Duplex{ctx: ctx, to: to, method: method, done: func() { n.remove(to, ic); cancel(nil) }}
	d.s, err = c.NewStream(ctx, &grpc.StreamDesc{StreamName: "Duplex", ServerStreams: true, ClientStreams: true}, "/locus.ics.ICS/Duplex")
	if err == nil {
		err = d.s.SendMsg(&envelope{Method: method})
	}
	if err != nil {
		d.done()
		return nil, callErr(ctx, to, method, err)
	}
	return d, nil
}

// Send sends one message (safe from several goroutines).
func (d *Duplex) Send(b []byte) error {
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	if err := d.s.SendMsg(&envelope{Body: b}); err != nil {
		return d.err(err)
	}
	return nil
}

// CloseSend says this side sends no more; the server's recv gets io.EOF.
func (d *Duplex) CloseSend() error {
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	return d.s.CloseSend()
}

// Recv returns the server's next message, io.EOF once its handler
// returned without error.
func (d *Duplex) Recv() ([]byte, error) {
	var m envelope
	if err := d.s.RecvMsg(&m); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, d.err(err)
	}
	return m.Body, nil
}

func (d *Duplex) err(err error) error {
	// A send after the stream ended gets io.EOF; the reason is what
	// Recv returns (called from the one goroutine that receives).
	return callErr(d.ctx, d.to, d.method, err)
}

// Close ends the stream (the server's context is cancelled).
func (d *Duplex) Close() { d.done() }

// NodeDown cancels every call in flight to node, with ErrNodeDown, and
// every duplex stream node opened here, and drops the connection to it:
// membership calls it when it applies the node's Down.
func (n *Node) NodeDown(node int) {
	n.mu.Lock()
	var calls []*inflightCall
	for ic := range n.inflight[node] {
		calls = append(calls, ic)
	}
	for ic := range n.inbound[node] {
		calls = append(calls, ic)
	}
	delete(n.inflight, node)
	delete(n.inbound, node)
	c := n.conns[node]
	delete(n.conns, node)
	n.mu.Unlock()
	for _, ic := range calls {
		ic.cancel(ErrNodeDown)
	}
	if c != nil {
		c.Close()
	}
}

// Close stops serving and closes every connection.
func (n *Node) Close() {
	n.server.Stop()
	n.mu.Lock()
	defer n.mu.Unlock()
	for to, c := range n.conns {
		c.Close()
		delete(n.conns, to)
	}
}

// PortAddr is the ICS address of a host.
func PortAddr(host string) string { return net.JoinHostPort(host, strconv.Itoa(DefaultPort)) }
