package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/internal/locusconfig"
	"github.com/locus-ssi/locus/services/ics"
	"github.com/spf13/cobra"
)

func runLocus(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(args, strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), err
}

func TestVersion(t *testing.T) {
	out, _, err := runLocus(t, "version", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]string
	if err := json.Unmarshal([]byte(out), &v); err != nil || v["version"] == "" {
		t.Errorf("version --output json = %q, %v", out, err)
	}
	if _, _, err := runLocus(t, "version", "--output", "yaml"); err == nil {
		t.Error("version --output yaml succeeded")
	}
}

func TestSpecExampleRoundTrips(t *testing.T) {
	out, _, err := runLocus(t, "image", "spec", "--example")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "locus.yaml")
	os.WriteFile(p, []byte(out), 0o644)
	got, _, err := runLocus(t, "image", "spec", p, "--output", "json")
	if err != nil {
		t.Fatalf("the example spec does not check: %v", err)
	}
	var s clusterspec.Spec
	if err := json.Unmarshal([]byte(got), &s); err != nil || s.Cluster.Name != "demo" || len(s.Nodes) != 3 {
		t.Errorf("spec --output json = %+v, %v", s, err)
	}
}

func TestUserErrorsAreOneLine(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("cluster:\n  name: x\nnodez: []\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"image", "spec", bad}, "bad.yaml:3: unknown key \"nodez\""},
		{[]string{"image", "build", "--spec", bad, "--out", filepath.Join(dir, "out")}, "bad.yaml:3"},
		{[]string{"image", "build", "--kernel", "/nonexistent", "--modules", dir, "--out", filepath.Join(dir, "out2")}, "kernel image"},
		{[]string{"image", "build", "--kernel", "/nonexistent", "--out", filepath.Join(dir, "out3")}, "go together"},
		{[]string{"image", "build", "--compress", "lz4"}, "zstd or gzip"},
		{[]string{"image", "build", "--format", "vmdk", "--out", filepath.Join(dir, "out4")}, "raw or qcow2"},
		{[]string{"qemu", "status", "--state-dir", dir}, "not running"},
		{[]string{"qemu", "up", "-n", "2", "--state-dir", dir, "--image-dir", filepath.Join(dir, "none")}, "locus image build"},
		{[]string{"qemu", "up", "-n", "2", "--direct", "--image-dir", filepath.Join(dir, "none"), "--state-dir", dir}, "locus image build"},
		{[]string{"qemu", "exec", "zero", "--", "ls"}, "node number"},
		{[]string{"qemu", "exec", "1", "--state-dir", dir, "--", "ls"}, "exec channel unavailable"},
		{[]string{"qemu", "logs", "4", "--state-dir", dir}, "no serial log"},
		{[]string{"nosuchverb"}, "unknown command"},
		{[]string{"install", "--disk", filepath.Join(dir, "x.img")}, "--yes"},
		{[]string{"install", "--yes"}, "--disk is required"},
		{[]string{"install", "--disk", filepath.Join(dir, "x.img"), "--yes", "--image-dir", filepath.Join(dir, "none")}, "locus image build"},
	} {
		_, stderr, err := runLocus(t, tc.args...)
		if err == nil {
			t.Errorf("locus %q succeeded, want an error", tc.args)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
			t.Errorf("locus %q: error %q, want one line containing %q", tc.args, msg, tc.want)
		}
		if strings.Contains(stderr, "Usage:") || strings.Contains(stderr, "goroutine") {
			t.Errorf("locus %q printed usage or a stack trace:\n%s", tc.args, stderr)
		}
	}
	// A failed build leaves nothing in the output directory.
	for _, o := range []string{"out", "out2", "out3", "out4"} {
		ents, _ := os.ReadDir(filepath.Join(dir, o))
		if len(ents) != 0 {
			t.Errorf("failed build left %d entries in %s", len(ents), o)
		}
	}
}

func TestEveryVerbHasHelpAndExamples(t *testing.T) {
	root := newRootCmd(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{})
	var check func(c *cobra.Command)
	check = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			// Hidden verbs too: internal ones are documented, not listed.
			if sub.Example == "" || sub.Short == "" {
				t.Errorf("%s: no example or short help", sub.CommandPath())
			}
			check(sub)
		}
	}
	check(root)
	out, _, err := runLocus(t, "completion", "bash")
	if err != nil || !strings.Contains(out, "locus") {
		t.Errorf("completion bash = %v", err)
	}
}

// testContext writes a client configuration with one context, "c", of
// cluster c (an operator credential from a CA made for it), and points
// LOCUSCONFIG at it.
func testContext(t *testing.T, endpoints ...string) string {
	t.Helper()
	dir := t.TempDir()
	nodes, err := ics.LoadOrCreateCA(dir, "c")
	if err != nil {
		t.Fatal(err)
	}
	ops, err := ics.LoadOrCreateOperatorCA(dir, "c")
	if err != nil {
		t.Fatal(err)
	}
	key, csr, _ := ics.NewKeyFor("tester")
	crt, err := ops.IssueOperator(csr, "tester", []string{ics.RoleAdmin}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var c locusconfig.Config
	c.Set("c", &locusconfig.Context{Cluster: "c", Endpoints: endpoints, CA: string(nodes.CertPEM), Crt: string(crt), Key: string(key), StateDir: "/s/c"})
	p := filepath.Join(dir, "config")
	if err := c.Save(p); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LOCUSCONFIG", p)
	return p
}

func TestEndpointResolution(t *testing.T) {
	t.Setenv("LOCUSCONFIG", filepath.Join(t.TempDir(), "none"))
	t.Setenv("LOCUS_ENDPOINT", "")
	t.Setenv("LOCUS_CONTEXT", "")
	if _, err := resolveEndpoint("", ""); err == nil || !strings.Contains(err.Error(), "locus qemu up") {
		t.Errorf("no context anywhere: %v", err)
	}
	// An address without a credential is refused here, not sent out
	// to be refused there.
	if _, err := resolveEndpoint("10.77.0.3:9", ""); err == nil || !strings.Contains(err.Error(), "no context in use") {
		t.Errorf("--endpoint without a context: %v", err)
	}
	p := testContext(t, "127.0.0.1:17470")
	ep, err := resolveEndpoint("", "")
	if err != nil || ep.API != "127.0.0.1:17470" || ep.Context != "c" {
		t.Errorf("the context's endpoint: %+v %v", ep, err)
	}
	t.Setenv("LOCUS_ENDPOINT", "10.77.0.2")
	if ep, _ := resolveEndpoint("", ""); ep.API != "10.77.0.2:7470" {
		t.Errorf("LOCUS_ENDPOINT does not win over the context's: %+v", ep)
	}
	if ep, _ := resolveEndpoint("10.77.0.3:9", ""); ep.API != "10.77.0.3:9" {
		t.Errorf("--endpoint does not win: %+v", ep)
	}
	if _, err := resolveEndpoint("", "other"); err == nil || !strings.Contains(err.Error(), `no context "other"`) {
		t.Errorf("--context other: %v", err)
	}
	// Another cluster's down leaves it; this one's removes it.
	c, _ := locusconfig.Load(p)
	if c.Forget("/s/other") || !c.Forget("/s/c") || len(c.Contexts) != 0 || c.Context != "" {
		t.Errorf("forget: %+v", c)
	}
	os.WriteFile(p, []byte("contexts: {c: {cluster: c, bogus: 1}}\n"), 0o600)
	if _, err := resolveEndpoint("", ""); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("damaged configuration: %v", err)
	}
}

// TestShutdownOfTheClusterAsks: powering the whole cluster off needs a
// yes, on a terminal or as --yes; one node does not.
func TestShutdownOfTheClusterAsks(t *testing.T) {
	testContext(t, "127.0.0.1:1") // nothing listens: only the asking is tested
	_, _, err := runLocus(t, "shutdown")
	if err == nil || !strings.Contains(err.Error(), "--yes") || !strings.Contains(err.Error(), "every node") {
		t.Errorf("shutdown without a terminal or --yes = %v, want a refusal naming --yes", err)
	}
	for _, args := range [][]string{{"shutdown", "--yes"}, {"shutdown", "--node", "3"}} {
		_, _, err := runLocus(t, args...)
		if err == nil || strings.Contains(err.Error(), "--yes") {
			t.Errorf("%v = %v, want it to go ahead (and fail to reach the endpoint)", args, err)
		}
	}
}

// TestHelpIsGrouped: locus --help lists the verbs under their groups and
// not the internal ones; the old spelling of node list still works.
func TestHelpIsGrouped(t *testing.T) {
	out, _, err := runLocus(t, "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Build and install:", "The cluster:", "Machines:", "QEMU clusters on this machine:"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks the group %q:\n%s", want, out)
		}
	}
	for _, internal := range []string{"\n  daemon ", "\n  fence "} {
		if strings.Contains(out, internal) {
			t.Errorf("--help lists the internal verb %q", strings.TrimSpace(internal))
		}
	}
	for _, args := range [][]string{{"node", "list", "--help"}, {"netboot", "nodes", "--help"}, {"daemon", "--help"}} {
		if _, _, err := runLocus(t, args...); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}

// TestConfigVerbs: endpoint rewrites the context's endpoints (a bare host
// gets the daemon's port), use and remove work on names, and a name that
// is not there is refused.
func TestConfigVerbs(t *testing.T) {
	p := testContext(t, "127.0.0.1:17470")
	if _, _, err := runLocus(t, "config", "endpoint", "10.77.0.1", "10.77.0.2:9"); err != nil {
		t.Fatal(err)
	}
	c, _ := locusconfig.Load(p)
	if got := c.Contexts["c"].Endpoints; len(got) != 2 || got[0] != "10.77.0.1:7470" || got[1] != "10.77.0.2:9" {
		t.Errorf("endpoints = %v", got)
	}
	out, _, err := runLocus(t, "config", "contexts", "--output", "json")
	if err != nil || !strings.Contains(out, `"current": true`) {
		t.Errorf("contexts = %v %s", err, out)
	}
	if _, _, err := runLocus(t, "config", "use", "nope"); err == nil {
		t.Error("use of a missing context succeeded")
	}
	if _, _, err := runLocus(t, "config", "remove", "c"); err != nil {
		t.Fatal(err)
	}
	c, _ = locusconfig.Load(p)
	if len(c.Contexts) != 0 || c.Context != "" {
		t.Errorf("after remove: %+v", c)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("the configuration's mode %v, want 0600", st.Mode().Perm())
	}
}
