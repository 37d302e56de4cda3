package locusd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/internal/privsock"
	"github.com/locus-ssi/locus/services/ics"
	"golang.org/x/time/rate"
)

// ICSConfig gives a node its ICS identity and endpoint. The init node
// keeps the cluster CA (CADir) and issues its own certificate; every
// other node redeems the one-time secret from its boot script (Secret,
// with its MAC) at the init node's daemon (Admitter) for a certificate.
type ICSConfig struct {
	Node int
	// Addr is the node's interconnect address; ICS listens on it.
	Addr string
	MAC  string
	// Secret is the bootstrap secret (from locus.secret=).
	Secret string
	// CADir holds the cluster CA (init node only).
	CADir string
	// IdentityFile, if set, is the node's credential given to it (see
	// IdentityFile): no admission.
	IdentityFile string
	// CAPin, if set, is the cluster CA (sha256:<hex> of its DER) the
	// admitter's certificate chain must end at, checked before the
	// secret is sent; its script carried it with the secret.
	CAPin string
	// Admitter is host:port of the init node's daemon.
	Admitter string
	// NetbootAdmin redeems secrets (init node only).
	NetbootAdmin string
	Spec         *clusterspec.Spec
}

// admissionRequest is POST /v1/admission.
type admissionRequest struct {
	Node   int    `json:"node"`
	MAC    string `json:"mac"`
	Secret string `json:"secret"`
	CSR    []byte `json:"csr"`
}

type admissionReply struct {
	Node int    `json:"node"`
	Cert []byte `json:"cert"`
	CA   []byte `json:"ca"`
	// OperatorCA is the operators' CA, whose certificates the node's
	// API takes.
	OperatorCA []byte `json:"operator_ca"`
}

// certTTL is how long a node certificate is valid.
const certTTL = 365 * 24 * time.Hour

// admissionHandler serves POST /v1/admission on the init node: a secret
// redeemed at the netboot service buys a certificate for the node number
// it was issued for, at that node's address in the spec.
func admissionHandler(ca *cas, c ICSConfig, log *slog.Logger) http.HandlerFunc {
	client, base := privsock.HTTPClient(c.NetbootAdmin, 5*time.Second)
	limit := newAdmissionLimiter()
	return func(w http.ResponseWriter, r *http.Request) {
		if !limit.allow(r.RemoteAddr) {
			log.Warn("admission refused: rate limited", "from", r.RemoteAddr)
			w.Header().Set("Retry-After", "1")
			http.Error(w, "admission: too many requests; try again in a second", http.StatusTooManyRequests)
			return
		}
		var req admissionRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10)).Decode(&req); err != nil {
			http.Error(w, "bad admission request: "+err.Error(), http.StatusBadRequest)
			return
		}
		from := ""
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			from = ap.Addr().Unmap().String()
		}
		body, _ := json.Marshal(map[string]string{"mac": req.MAC, "secret": req.Secret, "from": from})
		resp, err := client.Post(base+"/v1/admit", "application/json", bytes.NewReader(body))
		if err != nil {
			http.Error(w, "netboot service unreachable", http.StatusServiceUnavailable)
			return
		}
		defer resp.Body.Close()
		var redeemed struct {
			Node int `json:"node"`
		}
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&redeemed) != nil {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			log.Warn("admission refused", "node", req.Node, "mac", req.MAC, "from", r.RemoteAddr, "why", string(bytes.TrimSpace(msg)))
			http.Error(w, "admission refused: "+string(bytes.TrimSpace(msg)), http.StatusForbidden)
			return
		}
		if redeemed.Node != req.Node {
			log.Warn("admission refused: node number", "claimed", req.Node, "issued", redeemed.Node, "mac", req.MAC)
			http.Error(w, fmt.Sprintf("admission refused: the secret was issued for node %d", redeemed.Node), http.StatusForbidden)
			return
		}
		p, err := c.Spec.NodeAddr(redeemed.Node)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		cert, err := ca.nodes.Issue(req.CSR, redeemed.Node, net.IP(p.Addr().AsSlice()), certTTL)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		log.Info("node admitted", "node", redeemed.Node, "mac", req.MAC, "addr", p.Addr())
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(admissionReply{Node: redeemed.Node, Cert: cert, CA: ca.nodes.CertPEM, OperatorCA: ca.operators.CertPEM})
	}
}

// admissionLimiter bounds admission requests: a booting rack asks once a
// node, so a few a second from one address and a few dozen a second in
// all are plenty; guessing secrets or flooding the CA is not.
type admissionLimiter struct {
	all *rate.Limiter
	mu  sync.Mutex
	per map[string]*rate.Limiter
}

func newAdmissionLimiter() *admissionLimiter {
	return &admissionLimiter{all: rate.NewLimiter(20, 40), per: map[string]*rate.Limiter{}}
}

// allow reports whether a request from remote (host:port) may go on.
func (l *admissionLimiter) allow(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	l.mu.Lock()
	lim, ok := l.per[host]
	if !ok {
		if len(l.per) > 4096 {
			l.per = map[string]*rate.Limiter{} // forget, rather than grow without bound
		}
		lim = rate.NewLimiter(2, 5)
		l.per[host] = lim
	}
	l.mu.Unlock()
	return lim.Allow() && l.all.Allow()
}

// errRefused is a final answer: retrying will not help.
var errRefused = errors.New("admission refused")

// requestIdentity asks the init node for a certificate.
func requestIdentity(ctx context.Context, c ICSConfig) (ics.Identity, error) {
	key, csr, err := ics.NewKey(c.Node)
	if err != nil {
		return ics.Identity{}, err
	}
	body, _ := json.Marshal(admissionRequest{Node: c.Node, MAC: c.MAC, Secret: c.Secret, CSR: csr})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+c.Admitter+"/v1/admission", bytes.NewReader(body))
	if err != nil {
		return ics.Identity{}, err
	}
	// From this node's interconnect address: the secret is bound to the
	// address its script was served to, which is this one.
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	if a, err := netip.ParseAddr(c.Addr); err == nil {
		dialer.LocalAddr = &net.TCPAddr{IP: a.AsSlice()}
	}
	// The admitter is checked against the CA the script pinned, before
	// the secret goes out. Without a pin (a netboot service that had no
	// CA to pin yet) nothing is checked: TLS then only keeps the secret
	// from a passive listener.
	tc := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	if c.CAPin != "" {
		tc.VerifyConnection = func(cs tls.ConnectionState) error { return verifyPinned(cs, c.CAPin) }
	}
	client := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext, TLSClientConfig: tc}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return ics.Identity{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusBadRequest {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return ics.Identity{}, fmt.Errorf("%w: %s", errRefused, bytes.TrimSpace(msg))
	}
	if resp.StatusCode != http.StatusOK {
		return ics.Identity{}, fmt.Errorf("admission: %s", resp.Status)
	}
	var rep admissionReply
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&rep); err != nil {
		return ics.Identity{}, fmt.Errorf("admission: bad reply: %w", err)
	}
	if rep.Node != c.Node {
		return ics.Identity{}, fmt.Errorf("%w: certificate issued for node %d", errRefused, rep.Node)
	}
	if c.CAPin != "" {
		if pin, err := ics.PinPEM(rep.CA); err != nil || pin != c.CAPin {
			return ics.Identity{}, fmt.Errorf("%w: the admitter answered with a CA other than the pinned one", errRefused)
		}
	}
	return ics.Identity{Node: c.Node, CertPEM: rep.Cert, KeyPEM: key, CAPEM: rep.CA, OperatorCAPEM: rep.OperatorCA}, nil
}

// errNoSecret: this node was not netbooted by a Locus init node and was
// given no identity, so it has no way to one.
var errNoSecret = errors.New("no credential: no bootstrap secret (not netbooted by a Locus init node) and no identity file (--identity)")

// identity returns this node's ICS identity: issued by its own CA on the
// init node; elsewhere redeemed at admission, retrying while the init
// node is unreachable, until ctx ends. Refusal is final (errRefused).
func identity(ctx context.Context, c ICSConfig, ca *cas, log *slog.Logger) (ics.Identity, error) {
	switch {
	case c.IdentityFile != "":
		f, err := ReadIdentityFile(c.IdentityFile)
		if err != nil {
			return ics.Identity{}, err
		}
		if f.Node != c.Node {
			return ics.Identity{}, fmt.Errorf("%w: the identity file is node %d's, this is node %d", errRefused, f.Node, c.Node)
		}
		return f.Identity(), nil
	case ca != nil:
		key, csr, err := ics.NewKey(c.Node)
		if err != nil {
			return ics.Identity{}, fmt.Errorf("ICS: own certificate: %w", err)
		}
		cert, err := ca.nodes.Issue(csr, c.Node, net.ParseIP(c.Addr), certTTL)
		if err != nil {
			return ics.Identity{}, fmt.Errorf("ICS: own certificate: %w", err)
		}
		return ics.Identity{Node: c.Node, CertPEM: cert, KeyPEM: key, CAPEM: ca.nodes.CertPEM, OperatorCAPEM: ca.operators.CertPEM}, nil
	case c.Secret != "" && c.Admitter != "":
		for {
			id, err := requestIdentity(ctx, c)
			if err == nil || errors.Is(err, errRefused) {
				return id, err
			}
			log.Info("ICS: admission pending", "admitter", c.Admitter, "err", err)
			select {
			case <-ctx.Done():
				return ics.Identity{}, ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
	return ics.Identity{}, errNoSecret
}

// serveICS serves ICS with id; setup registers the handlers.
func serveICS(c ICSConfig, id ics.Identity, log *slog.Logger, setup func(*ics.Node)) (*ics.Node, error) {
	n, err := ics.Start(ics.Config{Identity: id, Listen: net.JoinHostPort(c.Addr, strconv.Itoa(ics.DefaultPort)), Log: log,
		Addr: func(to int) (string, error) {
			p, err := c.Spec.NodeAddr(to)
			if err != nil {
				return "", err
			}
			return ics.PortAddr(p.Addr().String()), nil
		}})
	if err != nil {
		return nil, fmt.Errorf("ICS: start: %w", err)
	}
	setup(n)
	log.Info("ICS serving with a certificate from the cluster CA", "addr", n.Addr())
	return n, nil
}

// gossipKeyMethod is the ICS call by which an admitted node gets the
// cluster's gossip key from the init node.
const gossipKeyMethod = "gossip-key"

// fetchGossipKey asks the init node for the cluster's gossip key over
// ICS (so only a node with a certificate from the CA gets it), retrying
// until ctx ends.
func fetchGossipKey(ctx context.Context, n *ics.Node, log *slog.Logger) ([]byte, error) {
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		b, err := n.Call(cctx, 1, gossipKeyMethod, nil)
		cancel()
		if err == nil && len(b) == 32 {
			return b, nil
		}
		if err == nil {
			err = fmt.Errorf("a key of %d bytes, want 32", len(b))
		}
		log.Info("membership: waiting for the cluster's gossip key from node 1", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// verifyPinned accepts the admitter only if its chain holds the pinned
// CA and its certificate is a node's, issued by that CA for serving.
func verifyPinned(cs tls.ConnectionState, pin string) error {
	var ca *x509.Certificate
	for _, c := range cs.PeerCertificates {
		if ics.Pin(c) == pin {
			ca = c
		}
	}
	if ca == nil {
		return fmt.Errorf("admission: the admitter's chain does not hold the pinned cluster CA %s", pin)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return ics.VerifyNodePeer(cs, pool, "", x509.ExtKeyUsageServerAuth)
}
