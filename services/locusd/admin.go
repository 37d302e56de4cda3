package locusd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/locus-ssi/locus/internal/locusconfig"
	"github.com/locus-ssi/locus/services/ics"
)

// cas are the init node's two CAs: the nodes' (admission) and the
// operators' (credentials for people and tools).
type cas struct {
	nodes, operators *ics.CA
}

// AdminConfigFile, in the CA directory, is the first admin's client
// configuration, made at first boot: `locus qemu up` copies it to the
// host; on hardware the operator copies it off the init node.
const AdminConfigFile = "admin.config"

// AdminName is the operator the first credential is for.
const AdminName = "admin"

// operatorTTL is how long an operator certificate lasts unless asked
// otherwise (talosctl's default), and the most it may last.
const (
	operatorTTL    = 365 * 24 * time.Hour
	operatorMaxTTL = 5 * operatorTTL
)

// loadCAs loads the init node's CAs (making them at first boot) and the
// first admin's credential.
func loadCAs(c ICSConfig) (*cas, error) {
	cluster := c.Spec.Cluster.Name
	nodes, err := ics.LoadOrCreateCA(c.CADir, cluster)
	if err != nil {
		return nil, err
	}
	ops, err := ics.LoadOrCreateOperatorCA(c.CADir, cluster)
	if err != nil {
		return nil, err
	}
	ca := &cas{nodes: nodes, operators: ops}
	endpoint := net.JoinHostPort(c.Addr, strconv.Itoa(DefaultPort))
	if err := ensureAdminConfig(filepath.Join(c.CADir, AdminConfigFile), ca, endpoint); err != nil {
		return nil, err
	}
	return ca, nil
}

// ensureAdminConfig writes the first admin's client configuration at
// path unless it is there.
func ensureAdminConfig(path string, ca *cas, endpoint string) error {
	if _, err := os.Stat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	key, csr, err := ics.NewKeyFor(AdminName)
	if err != nil {
		return err
	}
	cert, err := ca.operators.IssueOperator(csr, AdminName, []string{ics.RoleAdmin}, operatorTTL)
	if err != nil {
		return err
	}
	cluster := ca.nodes.Cluster()
	var cfg locusconfig.Config
	cfg.Set(cluster, &locusconfig.Context{Cluster: cluster, Endpoints: []string{endpoint},
		CA: string(ca.nodes.CertPEM), Crt: string(cert), Key: string(key)})
	if err := cfg.Save(path); err != nil {
		return fmt.Errorf("locusd: first admin's credential: %w", err)
	}
	return nil
}

// IssueRequest is POST /v1/admin/issue: a certificate for operator Name
// with Roles, for the key of CSR (PKCS#10, DER).
type IssueRequest struct {
	Name  string   `json:"name"`
	Roles []string `json:"roles"`
	// TTL is how long it lasts (a Go duration); empty: a year.
	TTL string `json:"ttl,omitempty"`
	CSR []byte `json:"csr"`
}

// IssueReply is the certificate and the CA to check servers with.
type IssueReply struct {
	Cluster  string    `json:"cluster"`
	Cert     []byte    `json:"cert"`
	CA       []byte    `json:"ca"`
	NotAfter time.Time `json:"not_after"`
}

// issueHandler serves POST /v1/admin/issue on the init node (admins
// only): the operators' CA signs a new operator's certificate.
func issueHandler(ca *cas, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req IssueRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10)).Decode(&req); err != nil {
			http.Error(w, "locusd: issue: bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		ttl := operatorTTL
		if req.TTL != "" {
			d, err := time.ParseDuration(req.TTL)
			if err != nil || d <= 0 || d > operatorMaxTTL {
				http.Error(w, fmt.Sprintf("locusd: issue: ttl %q: want a duration between 1s and %s", req.TTL, operatorMaxTTL), http.StatusBadRequest)
				return
			}
			ttl = d
		}
		cert, err := ca.operators.IssueOperator(req.CSR, req.Name, req.Roles, ttl)
		if err != nil {
			http.Error(w, "locusd: issue: "+err.Error(), http.StatusBadRequest)
			return
		}
		c, _ := r.Context().Value(callerKey{}).(Caller)
		log.Info("operator credential issued", "name", req.Name, "roles", req.Roles, "ttl", ttl, "by", c.String())
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(IssueReply{Cluster: ca.nodes.Cluster(), Cert: cert, CA: ca.nodes.CertPEM, NotAfter: time.Now().Add(ttl)})
	}
}
