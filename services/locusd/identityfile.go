package locusd

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/locus-ssi/locus/internal/atomicfile"
	"github.com/locus-ssi/locus/services/ics"
)

// IdentityFile is a node's credential given to it rather than redeemed
// at admission: what a cluster that is not netbooted (QEMU's direct boot,
// the loopback tests) gets from whoever made its CA, through a channel
// only root on the node can read (QEMU's fw_cfg).
type IdentityFile struct {
	Node    int    `json:"node"`
	Cluster string `json:"cluster"`
	Cert    string `json:"cert"`
	Key     string `json:"key"`
	CA      string `json:"ca"`
	// GossipKey is the cluster's gossip key (32 bytes).
	GossipKey []byte `json:"gossip_key"`
}

// ReadIdentityFile reads and checks a node's identity file.
func ReadIdentityFile(path string) (*IdentityFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("locusd: identity: %w", err)
	}
	var f IdentityFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("locusd: identity %s: %w", path, err)
	}
	if f.Node < 1 || len(f.GossipKey) != 32 {
		return nil, fmt.Errorf("locusd: identity %s: node %d, a gossip key of %d bytes: want a node and 32 bytes", path, f.Node, len(f.GossipKey))
	}
	cert, err := ics.ParseCertPEM([]byte(f.Cert))
	if err != nil {
		return nil, fmt.Errorf("locusd: identity %s: %w", path, err)
	}
	if n, err := ics.NodeOf(cert); err != nil || n != f.Node {
		return nil, fmt.Errorf("locusd: identity %s: the certificate is %q's, not node %d's", path, cert.Subject.CommonName, f.Node)
	}
	return &f, nil
}

// Identity is the file's ICS identity.
func (f *IdentityFile) Identity() ics.Identity {
	return ics.Identity{Node: f.Node, CertPEM: []byte(f.Cert), KeyPEM: []byte(f.Key), CAPEM: []byte(f.CA)}
}

// IssueIdentityFile makes node n's identity at addr, from the cluster CA
// and gossip key kept in caDir (made there the first time), and writes it
// at path, readable by its owner only.
func IssueIdentityFile(caDir, cluster string, n int, addr netip.Addr, path string) error {
	ca, err := ics.LoadOrCreateCA(caDir, cluster)
	if err != nil {
		return err
	}
	gk, err := ics.LoadOrCreateGossipKey(caDir)
	if err != nil {
		return err
	}
	key, csr, err := ics.NewKey(n)
	if err != nil {
		return err
	}
	cert, err := ca.Issue(csr, n, addr.AsSlice(), certTTL)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(IdentityFile{Node: n, Cluster: cluster, Cert: string(cert), Key: string(key), CA: string(ca.CertPEM), GossipKey: gk})
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600, false)
}
