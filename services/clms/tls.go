package clms

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// TLS carries Raft over mutual TLS (Config.TLS), with certificates from
// the cluster CA (ICS's).
type TLS struct {
	// Server is what this node presents and accepts: its certificate, and
	// the CA its peers' certificates must chain to (ClientCAs).
	Server *tls.Config
	// Client is what it presents when it dials: its certificate, and the
	// CA (RootCAs). ServerName is set per peer, to its IP.
	Client *tls.Config
}

// tlsStream is Raft's stream layer over mutual TLS. A peer's certificate
// must chain to the cluster CA and name the address it speaks from; a
// connection that fails either is closed at its handshake, and Raft sees
// a broken connection, never a message from it. Each request must then
// be sent as the certificate's node (rpcGuard).
type tlsStream struct {
	net.Listener
	local string // IP this node dials from: the one its certificate names
	cfg   *TLS
	log   func(msg string, args ...any)
}

func (s *tlsStream) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	from := c.RemoteAddr().String()
	host, _, _ := net.SplitHostPort(from)
	ip := net.ParseIP(host)
	cfg := s.cfg.Server.Clone()
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no client certificate")
		}
		cert := cs.PeerCertificates[0]
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			err := fmt.Errorf("certificate of %s names %v, not %s", cert.Subject.CommonName, cert.IPAddresses, ip)
			s.log("raft: refused a peer", "from", from, "err", err)
			return err
		}
		return nil
	}
	return newRPCGuard(tls.Server(c, cfg), s.log), nil
}

func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(addr))
	if err != nil {
		return nil, fmt.Errorf("clms: raft peer %q: %w", addr, err)
	}
	cfg := s.cfg.Client.Clone()
	cfg.ServerName = host // its certificate names its interconnect IP
	d := &net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(s.local)}}
	c, err := tls.DialWithDialer(d, "tcp", string(addr), cfg)
	if err != nil {
		return nil, fmt.Errorf("clms: raft peer %s: %w", addr, err)
	}
	return c, nil
}
