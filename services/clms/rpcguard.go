package clms

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	"github.com/locus-ssi/locus/services/ics"
)

// maxSnapshot bounds a snapshot the guard holds while passing it on: the
// membership's state is a table of nodes, kilobytes.
const maxSnapshot = 64 << 20

// Raft's RPC types on the wire (hashicorp/raft net_transport.go).
const (
	rpcAppendEntries uint8 = iota
	rpcRequestVote
	rpcInstallSnapshot
	rpcTimeoutNow
	rpcRequestPreVote
)

// rpcGuard is the server side of a Raft connection over mutual TLS that
// lets an RPC through to Raft only if the server id in its header is the
// node of the peer's certificate, and the addresses it claims are the
// peer's own. Raft takes the id as the sender says it (a vote is counted
// for it, a leader known by it), and its transport has no hook that sees
// both the connection and the header; so the guard decodes each request
// as the transport will, checks it, and hands the transport exactly the
// bytes it read. A request that fails closes the connection: Raft sees a
// broken connection, never the forged message.
type rpcGuard struct {
	*tls.Conn
	log  func(msg string, args ...any)
	from string

	node int    // the certificate's node, once the handshake is done
	ip   string // the peer's address
	buf  bytes.Buffer
	dec  *codec.Decoder
	err  error
}

func newRPCGuard(c *tls.Conn, log func(string, ...any)) *rpcGuard {
	return &rpcGuard{Conn: c, log: log, from: c.RemoteAddr().String()}
}

func (g *rpcGuard) Read(p []byte) (int, error) {
	for g.buf.Len() == 0 {
		if g.err != nil {
			return 0, g.err
		}
		g.err = g.next()
	}
	return g.buf.Read(p)
}

// next reads one request into buf, checked.
func (g *rpcGuard) next() error {
	if g.node == 0 {
		if err := g.Conn.Handshake(); err != nil {
			return err
		}
		certs := g.ConnectionState().PeerCertificates
		if len(certs) == 0 {
			return g.refuse("no certificate")
		}
		n, err := ics.NodeOf(certs[0])
		if err != nil {
			return g.refuse(err.Error())
		}
		g.node = n
		g.ip, _, _ = net.SplitHostPort(g.from)
		g.dec = codec.NewDecoder(nil, &codec.MsgpackHandle{})
	}
	// Read whole and checked before the transport gets a byte of it: a
	// refused request must not reach Raft even in part.
	var msg bytes.Buffer
	if why, err := readRPC(g.Conn, &msg, g.dec, g.node, g.ip); why != "" {
		return g.refuse(why)
	} else if err != nil {
		return err
	}
	g.buf.Write(msg.Bytes())
	return nil
}

// readRPC reads one Raft request from r into buf, as it came, and checks
// it was sent by node (at ip): why says what is wrong with it; err is a
// read error.
func readRPC(r io.Reader, buf *bytes.Buffer, dec *codec.Decoder, node int, ip string) (why string, err error) {
	// What the transport will read: the type, then the request, so
	// much and no more (msgpack delimits itself and the decoder reads
	// what it needs), then a snapshot's bytes.
	tee := io.TeeReader(r, buf)
	var t [1]byte
	if _, err := io.ReadFull(tee, t[:]); err != nil {
		return "", err
	}
	dec.Reset(tee)
	var hdr raft.RPCHeader
	var addrs [][]byte
	var snapshot int64
	switch t[0] {
	case rpcAppendEntries:
		var r raft.AppendEntriesRequest
		err = dec.Decode(&r)
		hdr, addrs = r.RPCHeader, [][]byte{r.Leader}
	case rpcRequestVote:
		var r raft.RequestVoteRequest
		err = dec.Decode(&r)
		hdr, addrs = r.RPCHeader, [][]byte{r.Candidate}
	case rpcRequestPreVote:
		var r raft.RequestPreVoteRequest
		err = dec.Decode(&r)
		hdr = r.RPCHeader
	case rpcInstallSnapshot:
		var r raft.InstallSnapshotRequest
		err = dec.Decode(&r)
		hdr, addrs, snapshot = r.RPCHeader, [][]byte{r.Leader}, r.Size
	case rpcTimeoutNow:
		var r raft.TimeoutNowRequest
		err = dec.Decode(&r)
		hdr = r.RPCHeader
	default:
		return fmt.Sprintf("unknown RPC type %d", t[0]), nil
	}
	if err != nil {
		return "undecodable request: " + err.Error(), nil
	}
	if id := string(hdr.ID); id != strconv.Itoa(node) {
		return fmt.Sprintf("an RPC as server %q from the certificate of node %d", id, node), nil
	}
	for _, a := range append(addrs, hdr.Addr) {
		if len(a) == 0 {
			continue
		}
		if host, _, err := net.SplitHostPort(string(a)); err != nil || host != ip {
			return fmt.Sprintf("an RPC claiming address %q from %s", a, ip), nil
		}
	}
	if snapshot < 0 || snapshot > maxSnapshot {
		return fmt.Sprintf("a snapshot of %d bytes", snapshot), nil
	}
	if snapshot > 0 {
		if _, err := io.CopyN(buf, r, snapshot); err != nil {
			return "", err
		}
	}
	return "", nil
}

func (g *rpcGuard) refuse(why string) error {
	g.log("raft: refused a peer's RPC", "from", g.from, "node", g.node, "why", why)
	g.Conn.Close()
	return fmt.Errorf("clms: raft RPC from %s refused: %s", g.from, why)
}
