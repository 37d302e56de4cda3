package locusd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/locus-ssi/locus/services/ics"
)

// Caller is who made a request of the API.
type Caller struct {
	// Kind is KindOperator, KindNode, KindLocal, or "" for nobody.
	Kind string `json:"kind"`
	// Name is the operator's name, the node's ("node3"), or the local
	// user's ("root").
	Name  string   `json:"name"`
	Node  int      `json:"node,omitempty"`
	Roles []string `json:"roles,omitempty"`
	// UID, GID and Groups are a local user's (KindUser), as the kernel
	// vouched for them on the user socket.
	UID    uint32   `json:"uid,omitempty"`
	GID    uint32   `json:"gid,omitempty"`
	Groups []uint32 `json:"groups,omitempty"`
}

// Kinds of caller.
const (
	KindOperator = "operator" // a certificate from the operators' CA
	KindNode     = "node"     // a node certificate from the cluster CA
	KindLocal    = "local"    // root on this node, through the unix socket
	KindUser     = "user"     // a user of this node, through the user socket
)

func (c Caller) String() string {
	switch c.Kind {
	case "":
		return "nobody"
	case KindOperator:
		return "operator " + c.Name
	case KindLocal:
		return "local " + c.Name
	case KindUser:
		return "user " + c.Name
	default:
		return c.Name
	}
}

// Access levels of the API's routes.
type level int

const (
	public  level = iota // anyone: /healthz, admission (secret-gated)
	look                 // readers, operators, admins, nodes
	inspect              // readers and up, not nodes: netboot MACs and leases
	run                  // operators and admins, and local users as themselves: run code, send signals
	control              // operators and admins: run level, shutdown
	admin                // admins: issuing credentials
)

var levelNames = map[level]string{public: "anyone", look: "a reader", inspect: "a reader", run: "an operator or a local user", control: "an operator", admin: "an admin"}

// may says whether c may use a route of level l.
func (c Caller) may(l level) bool {
	switch {
	case l == public:
		return true
	case c.Kind == KindLocal:
		return true // root on the node is root of the cluster
	case c.Kind == KindNode:
		return l == look
	case c.Kind == KindUser:
		return l == look || l == run
	case c.Kind != KindOperator:
		return false
	}
	var most level
	for _, r := range c.Roles {
		switch r {
		case ics.RoleAdmin:
			most = max(most, admin)
		case ics.RoleOperator:
			most = max(most, control)
		case ics.RoleReader:
			most = max(most, inspect)
		}
	}
	return most >= l
}

type callerKey struct{}

// localCaller marks a connection on the unix socket, whose peer the
// kernel vouched for.
func localCaller(ctx context.Context, c net.Conn) context.Context {
	if id, ok := c.(*unixPeer); ok {
		return context.WithValue(ctx, callerKey{}, id.caller)
	}
	return ctx
}

// apiTLS is what the API's TLS listener serves with: the node's identity
// once it has one, else a throwaway certificate (only /healthz can be
// reached then: no client certificate can be verified without the CA).
type apiTLS struct {
	cur       atomic.Pointer[tlsState]
	throwaway *tls.Config
}

type tlsState struct {
	config  *tls.Config
	nodeCA  *x509.Certificate
	opCA    *x509.Certificate
	cluster string
}

func newAPITLS() (*apiTLS, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "locusd without an identity"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return &apiTLS{throwaway: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}}, nil
}

// setIdentity serves with the node's identity from now on: its
// certificate, and client certificates from the cluster CA (nodes) or
// the operators' CA (operators) verified if given.
func (a *apiTLS) setIdentity(id ics.Identity, cluster string) error {
	cert, err := tls.X509KeyPair(id.CertPEM, id.KeyPEM)
	if err != nil {
		return fmt.Errorf("locusd: API certificate: %w", err)
	}
	nodeCA, err := ics.ParseCertPEM(id.CAPEM)
	if err != nil {
		return fmt.Errorf("locusd: cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(nodeCA)
	// The chain ends with the CA, so that a node admitting with a pin
	// (locus.ca=) finds it before it sends its secret.
	cert.Certificate = append(cert.Certificate, nodeCA.Raw)
	st := &tlsState{nodeCA: nodeCA, cluster: cluster}
	if len(id.OperatorCAPEM) > 0 {
		if st.opCA, err = ics.ParseCertPEM(id.OperatorCAPEM); err != nil {
			return fmt.Errorf("locusd: operators' CA: %w", err)
		}
		pool.AddCert(st.opCA)
	}
	st.config = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	a.cur.Store(st)
	return nil
}

// config is the listener's TLS configuration.
func (a *apiTLS) config() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		if st := a.cur.Load(); st != nil {
			return st.config, nil
		}
		return a.throwaway, nil
	}}
}

// caller says who r comes from: the verified client certificate's
// operator or node, root on the unix socket, or nobody.
func (a *apiTLS) caller(r *http.Request) (Caller, error) {
	if c, ok := r.Context().Value(callerKey{}).(Caller); ok {
		return c, nil
	}
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return Caller{}, nil
	}
	st := a.cur.Load()
	if st == nil {
		return Caller{}, nil
	}
	chain := r.TLS.VerifiedChains[0]
	leaf, root := chain[0], chain[len(chain)-1]
	switch {
	case st.opCA != nil && root.Equal(st.opCA):
		op, err := ics.OperatorOf(leaf, st.cluster)
		if err != nil {
			return Caller{}, err
		}
		return Caller{Kind: KindOperator, Name: op.Name, Roles: op.Roles}, nil
	case root.Equal(st.nodeCA):
		n, err := ics.NodeOf(leaf)
		if err != nil {
			return Caller{}, err
		}
		if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
			return Caller{}, fmt.Errorf("node certificate %q is not for client authentication", leaf.Subject.CommonName)
		}
		return Caller{Kind: KindNode, Name: ics.NodeName(n), Node: n}, nil
	}
	return Caller{}, fmt.Errorf("certificate %q chains to neither of the cluster's CAs", leaf.Subject.CommonName)
}

// guard serves h only to callers allowed level l: nobody gets 401, a
// caller without the role 403; both are logged with the peer.
func (a *apiTLS) guard(l level, log *slog.Logger, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := a.caller(r)
		if err != nil {
			log.Warn("API: refused a certificate", "peer", r.RemoteAddr, "path", r.URL.Path, "err", err)
			http.Error(w, "locusd: "+err.Error(), http.StatusUnauthorized)
			return
		}
		if !c.may(l) {
			status := http.StatusForbidden
			if c.Kind == "" {
				status = http.StatusUnauthorized
			}
			log.Warn("API: refused", "peer", r.RemoteAddr, "caller", c.String(), "roles", c.Roles, "method", r.Method, "path", r.URL.Path, "needs", levelNames[l])
			http.Error(w, fmt.Sprintf("locusd: %s %s needs %s's credential; %s has none that allows it", r.Method, r.URL.Path, levelNames[l], c), status)
			return
		}
		if l >= control {
			log.Info("API: control request", "caller", c.String(), "peer", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
		}
		h(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	}
}

// unixPeer is a connection on the unix socket, with who the kernel says
// is at the other end.
type unixPeer struct {
	net.Conn
	caller Caller
}

// peerListener marks each connection on a unix socket with who the
// kernel says is at the other end (SO_PEERCRED); admit says who that
// caller is, or why it is refused.
type peerListener struct {
	net.Listener
	log   *slog.Logger
	what  string
	admit func(unix.Ucred) (Caller, error)
}

// rootOnly admits only root: the API socket's directory is root's alone
// already, this says so again.
func rootOnly(cred unix.Ucred) (Caller, error) {
	if cred.Uid != 0 {
		return Caller{}, fmt.Errorf("refused a local caller that is not root (uid %d)", cred.Uid)
	}
	return Caller{Kind: KindLocal, Name: "root (pid " + strconv.Itoa(int(cred.Pid)) + ")"}, nil
}

func (l peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			continue
		}
		cred, err := peerCred(uc)
		var caller Caller
		if err == nil {
			caller, err = l.admit(cred)
		}
		if err != nil {
			l.log.Warn(l.what+": refused", "pid", cred.Pid, "uid", cred.Uid, "err", err)
			c.Close()
			continue
		}
		return &unixPeer{Conn: c, caller: caller}, nil
	}
}

func peerCred(c *net.UnixConn) (unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return unix.Ucred{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return unix.Ucred{}, err
	}
	if cerr != nil {
		return unix.Ucred{}, cerr
	}
	return *cred, nil
}
