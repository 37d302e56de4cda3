package ics

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
)

// ParseCertPEM parses the first certificate in b.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("ics: no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// NodeServerTLS returns a client TLS configuration that accepts the
// server only if it presents a node certificate of cluster signed by the
// CA caPEM, whatever address it was reached at (a forwarded port, a
// service address): the chain, server authentication and the node name
// are checked, not the host name.
func NodeServerTLS(caPEM []byte, cluster string) (*tls.Config, error) {
	ca, err := ParseCertPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("ics: cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The chain is verified below, against the cluster CA alone;
		// only the host name check is left out.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return VerifyNodePeer(cs, pool, cluster, x509.ExtKeyUsageServerAuth)
		},
	}, nil
}

// VerifyNodePeer checks that the peer of cs presented a node certificate
// of cluster that chains to pool for usage.
func VerifyNodePeer(cs tls.ConnectionState, pool *x509.CertPool, cluster string, usage x509.ExtKeyUsage) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("ics: the peer presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return fmt.Errorf("ics: peer certificate %q: %w", leaf.Subject.CommonName, err)
	}
	if _, err := NodeOf(leaf); err != nil {
		return err
	}
	if cluster != "" && (len(leaf.Subject.Organization) == 0 || leaf.Subject.Organization[0] != cluster) {
		return fmt.Errorf("ics: peer certificate %q is of cluster %v, not %s", leaf.Subject.CommonName, leaf.Subject.Organization, cluster)
	}
	return nil
}

// Pin is a certificate's pin, as a script carries it (locus.ca=):
// "sha256:" and the hex SHA-256 of its DER.
func Pin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// PinPEM is Pin of the first certificate in certPEM.
func PinPEM(certPEM []byte) (string, error) {
	c, err := ParseCertPEM(certPEM)
	if err != nil {
		return "", err
	}
	return Pin(c), nil
}
