package locusd

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/internal/locusconfig"
	"github.com/locus-ssi/locus/services/ics"
)

// operatorTLS is a client TLS configuration with a certificate for name
// with roles from the operators' CA in caDir (or, foreign, from a CA of
// its own), checking servers against the cluster CA.
func operatorTLS(t *testing.T, caDir, cluster, name string, roles []string, foreign bool) *tls.Config {
	t.Helper()
	dir := caDir
	if foreign {
		dir = t.TempDir()
	}
	ops, err := ics.LoadOrCreateOperatorCA(dir, cluster)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := ics.LoadOrCreateCA(caDir, cluster)
	if err != nil {
		t.Fatal(err)
	}
	key, csr, _ := ics.NewKeyFor(name)
	crt, err := ops.IssueOperator(csr, name, roles, time.Hour)
	return clientTLS(t, cluster, nodes.CertPEM, crt, key, err)
}

// clientTLS is a context's TLS configuration for a certificate just
// issued (err: the issuing's).
func clientTLS(t *testing.T, cluster string, caPEM, crt, key []byte, err error) *tls.Config {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	c := &locusconfig.Context{Cluster: cluster, CA: string(caPEM), Crt: string(crt), Key: string(key)}
	tc, err := c.TLS()
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// nodeTLS is a client TLS configuration with a node certificate for n
// from the cluster CA in caDir.
func nodeTLS(t *testing.T, caDir, cluster string, n int) *tls.Config {
	t.Helper()
	nodes, err := ics.LoadOrCreateCA(caDir, cluster)
	if err != nil {
		t.Fatal(err)
	}
	key, csr, _ := ics.NewKey(n)
	crt, err := nodes.Issue(csr, n, net.ParseIP("127.0.80.9"), time.Hour)
	return clientTLS(t, cluster, nodes.CertPEM, crt, key, err)
}

// checkAPITrust asks node 2's API (127.0.80.2:7470) as every kind of
// caller, and checks that each gets exactly what its credential allows.
func checkAPITrust(t *testing.T, ctx context.Context, caDir string, adminTLS *tls.Config) {
	const api = "127.0.80.2:7470"
	cluster := "adm"
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	status := func(err error) string {
		if err == nil {
			return "200"
		}
		for _, code := range []string{"401", "403", "400", "404", "409"} {
			if strings.Contains(err.Error(), code) {
				return code
			}
		}
		return err.Error()
	}
	callers := map[string]*tls.Config{
		"nobody":   {MinVersion: tls.VersionTLS13, InsecureSkipVerify: true},
		"admin":    adminTLS,
		"operator": operatorTLS(t, caDir, cluster, "olga", []string{ics.RoleOperator}, false),
		"reader":   operatorTLS(t, caDir, cluster, "rita", []string{ics.RoleReader}, false),
		"node 3":   nodeTLS(t, caDir, cluster, 3),
	}
	type call struct {
		method, path string
		body         any
	}
	healthz := call{"GET", "/healthz", nil}
	view := call{"GET", "/v1/cluster", nil}
	clusterStatus := call{"GET", "/v1/cluster/status", nil}
	netbootNodes := call{"GET", "/v1/netboot/nodes", nil}
	runlevel := call{"POST", "/v1/runlevel", RunLevelRequest{Level: 3}}
	shutdownBad := call{"POST", "/v1/shutdown", ShutdownRequest{Node: 99}} // no node 99: nothing is shut down
	scrape := call{"GET", "/v1/metrics", nil}
	scrapeBad := call{"GET", "/v1/metrics?node=x", nil}
	want := map[string]map[call]string{
		// The netboot registry answers 404 here: node 2 serves none.
		"nobody":   {healthz: "200", clusterStatus: "401", view: "401", netbootNodes: "401", runlevel: "401", shutdownBad: "401", scrape: "401", scrapeBad: "401"},
		"admin":    {healthz: "200", clusterStatus: "200", view: "200", netbootNodes: "404", runlevel: "200", shutdownBad: "404", scrape: "200", scrapeBad: "400"},
		"operator": {healthz: "200", clusterStatus: "200", view: "200", netbootNodes: "404", runlevel: "200", shutdownBad: "404", scrape: "200", scrapeBad: "400"},
		"reader":   {healthz: "200", clusterStatus: "200", view: "200", netbootNodes: "404", runlevel: "403", shutdownBad: "403", scrape: "200", scrapeBad: "400"},
		"node 3":   {healthz: "200", clusterStatus: "200", view: "200", netbootNodes: "403", runlevel: "403", shutdownBad: "403", scrape: "200", scrapeBad: "400"},
	}
	for who, calls := range want {
		c := NewClient(api, callers[who])
		for cl, code := range calls {
			var err error
			if cl.method == "GET" {
				err = c.Get(ctx, cl.path, nil)
			} else {
				err = c.Post(ctx, cl.path, cl.body, nil)
			}
			if got := status(err); got != code {
				t.Errorf("%s: %s %s = %s, want %s", who, cl.method, cl.path, got, code)
			}
		}
		c.Close()
	}

	// An operator certificate from another CA does not get in; nor does
	// one of this CA for another cluster's name.
	for name, tc := range map[string]*tls.Config{
		"foreign CA":    operatorTLS(t, caDir, cluster, "mallory", []string{ics.RoleAdmin}, true),
		"other cluster": operatorTLS(t, t.TempDir(), "other", "mallory", []string{ics.RoleAdmin}, false),
	} {
		c := NewClient(api, tc)
		if err := c.Get(ctx, "/v1/cluster", nil); err == nil {
			t.Errorf("%s: an operator certificate got the cluster view", name)
		}
		c.Close()
	}

	// Plain HTTP gets the TLS server's refusal, nothing else.
	conn, err := net.DialTimeout("tcp", api, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write([]byte("POST /v1/shutdown HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil && resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP shutdown = %s, want 400 (an HTTP request to an HTTPS server)", resp.Status)
	}
	conn.Close()

	// Node 2 issues nothing (it keeps no CA); on node 1 an admin gets a
	// credential, and a reader cannot.
	issue := func(tc *tls.Config, at string) error {
		_, csr, _ := ics.NewKeyFor("ci")
		c := NewClient(at, tc)
		defer c.Close()
		var rep IssueReply
		return c.Post(ctx, "/v1/admin/issue", IssueRequest{Name: "ci", Roles: []string{ics.RoleReader}, TTL: "1h", CSR: csr}, &rep)
	}
	if err := issue(adminTLS, api); status(err) != "404" {
		t.Errorf("issue on node 2 = %v, want 404", err)
	}
	if err := issue(adminTLS, "127.0.80.1:7470"); err != nil {
		t.Errorf("admin issue on node 1 = %v", err)
	}
	if err := issue(callers["reader"], "127.0.80.1:7470"); status(err) != "403" {
		t.Errorf("reader issue on node 1 = %v, want 403", err)
	}
	if err := issue(callers["node 3"], "127.0.80.1:7470"); status(err) != "403" {
		t.Errorf("node certificate issue on node 1 = %v, want 403", err)
	}
}
