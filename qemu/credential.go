package qemu

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"sync"
	"time"

	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/internal/locusconfig"
	"github.com/locus-ssi/locus/services/locusd"
)

// AdminConfigPath is where the init node keeps the first admin's client
// configuration (made at first boot by its daemon).
var AdminConfigPath = path.Join(layout.CADir, locusd.AdminConfigFile)

// credential is the harness's hold on the cluster's admin credential:
// fetched from the init node through its exec channel (the QEMU
// equivalent of walking to the console), once it has one.
type credential struct {
	mu      sync.Mutex
	client  *locusd.Client
	tried   time.Time
	lastErr error
}

// FetchCredential reads the first admin's client configuration from the
// init node (the node whose API port is forwarded) over its exec
// channel, with its endpoint rewritten to the forwarded port on this
// host. The init node's daemon writes it at first boot; until then this
// fails.
func FetchCredential(ctx context.Context, cfg ClusterConfig) (*locusconfig.Context, error) {
	var node NodeConfig
	for _, nc := range cfg.Nodes {
		if nc.APIPort != 0 {
			node = nc
			break
		}
	}
	if node.Number == 0 {
		return nil, errors.New("qemu: no node's API is forwarded to this host, so there is no credential to fetch")
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// In init's own root: the state partition is mounted there.
	sock := execPath(filepath.Join(cfg.Dir, fmt.Sprintf("node%d", node.Number)))
	res, err := ExecIn(cctx, sock, []string{"cat", AdminConfigPath}, nil, true)
	if err != nil {
		return nil, fmt.Errorf("qemu: credential from node %d: %w", node.Number, err)
	}
	if res.Exit != 0 {
		return nil, fmt.Errorf("qemu: credential from node %d: %s not there yet (exit %d)", node.Number, AdminConfigPath, res.Exit)
	}
	lc, err := locusconfig.Parse(fmt.Sprintf("node %d:%s", node.Number, AdminConfigPath), res.Stdout)
	if err != nil {
		return nil, err
	}
	cur, _, err := lc.Current("")
	if err != nil {
		return nil, fmt.Errorf("qemu: credential from node %d: %w", node.Number, err)
	}
	cur.Endpoints = []string{fmt.Sprintf("127.0.0.1:%d", node.APIPort)}
	cur.StateDir = cfg.Dir
	return cur, nil
}

// apiClient is a client of the init node's API with the admin
// credential, fetched on first use (at most every two seconds while the
// node has none yet).
func (c *Cluster) apiClient(ctx context.Context) (*locusd.Client, error) {
	cr := &c.cred
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if cr.client != nil {
		return cr.client, nil
	}
	if time.Since(cr.tried) < 2*time.Second {
		return nil, cr.lastErr
	}
	cr.tried = time.Now()
	cur, err := FetchCredential(ctx, c.cfg)
	if err == nil {
		tlsConf, terr := cur.TLS()
		if terr != nil {
			err = terr
		} else {
			cr.client = locusd.NewClient(cur.Endpoints[0], tlsConf)
		}
	}
	cr.lastErr = err
	return cr.client, err
}

// forgetCredential drops the held credential (a rebuilt init node has
// another CA).
func (c *Cluster) forgetCredential() {
	cr := &c.cred
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if cr.client != nil {
		cr.client.Close()
	}
	cr.client, cr.tried = nil, time.Time{}
}
