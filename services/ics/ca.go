package ics

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/locus-ssi/locus/internal/atomicfile"
)

// CA is the cluster's certificate authority: the init node creates it at
// first boot and keeps it on its state partition; it signs each admitted
// node's certificate.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer
	cluster string
}

// Files of a CA directory.
const (
	// CACertFile is the nodes' CA certificate in a CA directory.
	CACertFile = "ca.crt"
	caKeyFile  = "ca.key"
)

// Files of the operators' CA, beside the nodes' CA.
const (
	operatorCertFile = "operators.crt"
	operatorKeyFile  = "operators.key"
)

// LoadOrCreateCA loads the nodes' CA kept in dir, or creates one for
// cluster: it signs node certificates (admission) and nothing else.
func LoadOrCreateCA(dir, cluster string) (*CA, error) {
	return loadOrCreate(dir, CACertFile, caKeyFile, "Locus cluster CA", cluster)
}

// LoadOrCreateOperatorCA loads the operators' CA kept in dir, or creates
// one for cluster. It is a CA of its own, so that a certificate
// admission issues (signed by the nodes' CA) can never pass for an
// operator's, whatever went wrong in admission.
func LoadOrCreateOperatorCA(dir, cluster string) (*CA, error) {
	return loadOrCreate(dir, operatorCertFile, operatorKeyFile, "Locus operator CA", cluster)
}

func loadOrCreate(dir, certFile, keyFile, cn, cluster string) (*CA, error) {
	certPEM, cerr := os.ReadFile(filepath.Join(dir, certFile))
	keyPEM, kerr := os.ReadFile(filepath.Join(dir, keyFile))
	if cerr == nil && kerr == nil {
		return parseCA(certPEM, keyPEM)
	}
	if !errors.Is(cerr, os.ErrNotExist) || !errors.Is(kerr, os.ErrNotExist) {
		return nil, fmt.Errorf("ics: CA in %s is incomplete or unreadable: %v, %v", dir, cerr, kerr)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{cluster}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("ics: create CA: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ics: CA dir: %w", err)
	}
	// The key first: a certificate without its key is never left behind.
	if err := atomicfile.Write(filepath.Join(dir, keyFile), keyPEM, 0o600, true); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(dir, certFile), certPEM, 0o644, true); err != nil {
		return nil, err
	}
	return parseCA(certPEM, keyPEM)
}

// Cluster is the cluster the CA belongs to (its certificate's O).
func (ca *CA) Cluster() string { return ca.cluster }

func parseCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("ics: CA files are not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ics: CA certificate: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ics: CA key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("ics: CA key cannot sign")
	}
	cluster := ""
	if len(cert.Subject.Organization) > 0 {
		cluster = cert.Subject.Organization[0]
	}
	return &CA{Cert: cert, CertPEM: certPEM, key: signer, cluster: cluster}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// NodeName is the name in node n's certificate (its CN and DNS SAN).
func NodeName(n int) string { return "node" + strconv.Itoa(n) }

// Issue signs a certificate for node n at address ip, for the public key
// in csrDER (a PKCS#10 request whose signature proves the requester holds
// the key).
func (ca *CA) Issue(csrDER []byte, n int, ip net.IP, ttl time.Duration) ([]byte, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("ics: certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("ics: certificate request: %w", err)
	}
	if n < 1 || ip == nil {
		return nil, fmt.Errorf("ics: issue: node %d at %v", n, ip)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: NodeName(n), Organization: []string{ca.cluster}},
		DNSNames:     []string{NodeName(n)},
		IPAddresses:  []net.IP{ip},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("ics: issue for node %d: %w", n, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// Roles an operator certificate can carry (in its Organizational Unit),
// from most to least: admin may do everything; operator may also change
// the run level and shut nodes down; reader may only look.
const (
	RoleAdmin    = "locus:admin"
	RoleOperator = "locus:operator"
	RoleReader   = "locus:reader"
)

// Roles are the roles there are, most powerful first.
var Roles = []string{RoleAdmin, RoleOperator, RoleReader}

// ValidRole says whether r is one of Roles.
func ValidRole(r string) bool { return slices.Contains(Roles, r) }

// OperatorURI is the one URI SAN of operator name's certificate in cluster.
func OperatorURI(cluster, name string) *url.URL {
	return &url.URL{Scheme: "locus", Host: cluster, Path: "/operator/" + name}
}

// IssueOperator signs an operator's certificate for the public key in
// csrDER: CN name, OU the roles, a URI naming the cluster and the
// operator, for client authentication only (it can serve nothing).
func (ca *CA) IssueOperator(csrDER []byte, name string, roles []string, ttl time.Duration) ([]byte, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("ics: certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("ics: certificate request: %w", err)
	}
	if err := ValidOperatorName(name); err != nil {
		return nil, err
	}
	if len(roles) == 0 {
		return nil, errors.New("ics: an operator certificate needs a role")
	}
	for _, r := range roles {
		if !ValidRole(r) {
			return nil, fmt.Errorf("ics: unknown role %q (roles: %s)", r, strings.Join(Roles, ", "))
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{ca.cluster}, OrganizationalUnit: roles},
		URIs:         []*url.URL{OperatorURI(ca.cluster, name)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("ics: issue for operator %s: %w", name, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// ValidOperatorName checks an operator's name: 1-64 of [a-z0-9._-],
// starting with a letter or digit, and not a node's name.
func ValidOperatorName(name string) error {
	ok := len(name) > 0 && len(name) <= 64
	for i, c := range name {
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("ics: operator name %q: want 1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit", name)
	}
	if _, err := NodeOf(&x509.Certificate{Subject: pkix.Name{CommonName: name}}); err == nil {
		return fmt.Errorf("ics: operator name %q is a node's name", name)
	}
	return nil
}

// Operator is who a verified operator certificate names.
type Operator struct {
	Name  string
	Roles []string
}

// OperatorOf returns the operator a certificate verified against the
// operators' CA of cluster names: exactly one URI, naming this cluster
// and the operator of the CN, client authentication only, known roles.
func OperatorOf(cert *x509.Certificate, cluster string) (Operator, error) {
	name := cert.Subject.CommonName
	if len(cert.URIs) != 1 || cert.URIs[0].String() != OperatorURI(cluster, name).String() {
		return Operator{}, fmt.Errorf("ics: certificate %q is not an operator's of cluster %s", name, cluster)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		return Operator{}, fmt.Errorf("ics: operator certificate %q may do more than client authentication", name)
	}
	var roles []string
	for _, r := range cert.Subject.OrganizationalUnit {
		if ValidRole(r) {
			roles = append(roles, r)
		}
	}
	if len(roles) == 0 {
		return Operator{}, fmt.Errorf("ics: operator certificate %q carries no role", name)
	}
	return Operator{Name: name, Roles: roles}, nil
}

// NewKey makes a node's private key and a certificate request for it.
func NewKey(n int) (keyPEM, csrDER []byte, err error) {
	return NewKeyFor(NodeName(n))
}

// NewKeyFor makes a private key and a certificate request for it, for
// the subject cn (the issuer ignores all but the key).
func NewKeyFor(cn string) (keyPEM, csrDER []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csrDER, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), csrDER, nil
}

// NodeOf returns the node number a verified certificate names.
func NodeOf(cert *x509.Certificate) (int, error) {
	s, ok := strings.CutPrefix(cert.Subject.CommonName, "node")
	n, err := strconv.Atoi(s)
	if !ok || err != nil || n < 1 {
		return 0, fmt.Errorf("ics: certificate %q names no node", cert.Subject.CommonName)
	}
	return n, nil
}

// gossipKeyFile holds the key that seals the cluster's gossip.
const gossipKeyFile = "gossip.key"

// LoadOrCreateGossipKey returns the cluster's gossip key (32 bytes, for
// memberlist's AES-GCM), kept beside the CA in dir and made at first
// boot. Admitted nodes fetch it over ICS; a node without it cannot take
// part in gossip.
func LoadOrCreateGossipKey(dir string) ([]byte, error) {
	path := filepath.Join(dir, gossipKeyFile)
	key, err := os.ReadFile(path)
	switch {
	case err == nil && len(key) == 32:
		return key, nil
	case err == nil:
		return nil, fmt.Errorf("ics: gossip key %s has %d bytes, want 32", path, len(key))
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("ics: gossip key: %w", err)
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ics: CA dir: %w", err)
	}
	if err := atomicfile.Write(path, key, 0o600, true); err != nil {
		return nil, err
	}
	return key, nil
}
