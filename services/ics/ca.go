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
	"os"
	"path/filepath"
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
	caCertFile = "ca.crt"
	caKeyFile  = "ca.key"
)

// LoadOrCreateCA loads the CA kept in dir, or creates one for cluster.
func LoadOrCreateCA(dir, cluster string) (*CA, error) {
	certPEM, cerr := os.ReadFile(filepath.Join(dir, caCertFile))
	keyPEM, kerr := os.ReadFile(filepath.Join(dir, caKeyFile))
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
		Subject:               pkix.Name{CommonName: "Locus cluster CA", Organization: []string{cluster}},
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
	if err := atomicfile.Write(filepath.Join(dir, caKeyFile), keyPEM, 0o600, true); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(dir, caCertFile), certPEM, 0o644, true); err != nil {
		return nil, err
	}
	return parseCA(certPEM, keyPEM)
}

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

// NewKey makes a node's private key and a certificate request for it.
func NewKey(n int) (keyPEM, csrDER []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csrDER, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: NodeName(n)}}, key)
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
