package locusconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/services/ics"
)

func TestSaveLoadRoundTripAndMode(t *testing.T) {
	dir := t.TempDir()
	nodes, _ := ics.LoadOrCreateCA(dir, "demo")
	ops, _ := ics.LoadOrCreateOperatorCA(dir, "demo")
	key, csr, _ := ics.NewKeyFor("alice")
	crt, err := ops.IssueOperator(csr, "alice", []string{ics.RoleReader}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var c Config
	c.Set("demo", &Context{Cluster: "demo", Endpoints: []string{"127.0.0.1:17470"}, CA: string(nodes.CertPEM), Crt: string(crt), Key: string(key), StateDir: "/s"})
	p := filepath.Join(dir, "sub", "config")
	if err := c.Save(p); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600 (it holds a key)", st.Mode().Perm())
	}
	got, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	cur, name, err := got.Current("")
	if err != nil || name != "demo" || cur.Key != string(key) || cur.Endpoints[0] != "127.0.0.1:17470" {
		t.Fatalf("loaded %+v %q %v", cur, name, err)
	}
	tc, err := cur.TLS()
	if err != nil || len(tc.Certificates) != 1 || tc.VerifyConnection == nil {
		t.Errorf("TLS = %v, %v", tc, err)
	}
}

func TestLoadMissingIsEmpty(t *testing.T) {
	c, err := Load(filepath.Join(t.TempDir(), "none"))
	if err != nil || len(c.Contexts) != 0 {
		t.Errorf("missing file = %+v, %v", c, err)
	}
	if _, _, err := c.Current(""); err == nil || !strings.Contains(err.Error(), "locus qemu up") {
		t.Errorf("no context: %v", err)
	}
}

func TestParseRefusesBadInput(t *testing.T) {
	for in, want := range map[string]string{
		"contexts: {a: {cluster: x, extra: 1}}":   "extra",
		"context: b\ncontexts: {a: {cluster: x}}": `"b", is not among`,
		"contexts: {a: }":                         "empty",
		"contexts: [1, 2]":                        "cannot unmarshal",
		strings.Repeat("#", maxSize+1):            "over",
	} {
		if _, err := Parse("f", []byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%.40q) = %v, want %q", in, err, want)
		}
	}
}

func TestTLSRefusesABrokenCredential(t *testing.T) {
	c := &Context{Cluster: "x", CA: "not pem"}
	if _, err := c.TLS(); err == nil {
		t.Error("a context without a CA made a TLS configuration")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("context: a\ncontexts: {a: {cluster: x, endpoints: [h:1]}}\n"))
	f.Add([]byte("contexts: {}"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("fuzz", b)
		if err != nil {
			return
		}
		if c.Contexts == nil {
			t.Fatal("parsed without a contexts map")
		}
		if c.Context != "" && c.Contexts[c.Context] == nil {
			t.Fatal("the context in use is not among the contexts")
		}
		c.Names()
	})
}
