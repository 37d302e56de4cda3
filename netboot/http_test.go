package netboot

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/services/ics"
)

func testHTTP(t testing.TB) (http.Handler, string) {
	h, dir, _ := testHTTPRegistry(t)
	return h, dir
}

// testHTTPRegistry is testHTTP with its registry, where node 3
// (52:54:00:00:00:03) has had a DHCP exchange that gave it 192.0.2.1
// (httptest's client address), so that address may fetch its script once.
func testHTTPRegistry(t testing.TB) (http.Handler, string, *Registry) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "sub"), 0o755)
	os.WriteFile(filepath.Join(root, "vmlinuz"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(root, "sub", "f"), []byte("f"), 0o644)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("TOPSECRET"), 0o644)
	os.Symlink(filepath.Join(dir, "secret"), filepath.Join(root, "escape"))
	r, err := os.OpenRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	spec, _ := clusterspec.Parse("t", []byte(testSpec))
	reg, _ := OpenRegistry(spec, "", nil)
	mac3, _ := net.ParseMAC("52:54:00:00:00:03")
	reg.Exchanged(mac3, netip.MustParseAddr("192.0.2.1"))
	_, err = ics.LoadOrCreateCA(filepath.Join(dir, "ca"), "t")
	if err != nil {
		t.Fatal(err)
	}
	return HTTPHandler(HTTPConfig{Spec: spec, Root: r, HTTPBase: "http://10.77.0.1:8080", Kernel: "vmlinuz", Initramfs: "initramfs.cpio.zst",
		Registry: reg, CAFile: filepath.Join(dir, "ca", ics.CACertFile), Log: slog.New(slog.DiscardHandler)}), dir, reg
}

// TestScriptOnlyToTheLeaseHolder: a node's boot script, which carries its
// bootstrap secret, goes only to the address its DHCP exchange gave, once
// per exchange; another host asking for it (any MAC it read off the wire)
// gets nothing, and the node's own secret stays good.
func TestScriptOnlyToTheLeaseHolder(t *testing.T) {
	h, _, reg := testHTTPRegistry(t)
	mac3, _ := net.ParseMAC("52:54:00:00:00:03")
	get := func(from, path string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		req.RemoteAddr = from
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := get("192.0.2.66:4000", "/ipxe/52-54-00-00-00-03.ipxe"); rec.Code != 403 || strings.Contains(rec.Body.String(), "locus.secret") {
		t.Fatalf("script for node 3 to another address = %d %q, want 403 and no secret", rec.Code, rec.Body.String())
	}
	if rec := get("192.0.2.66:4000", "/ipxe/52-54-00-00-00-02.ipxe"); rec.Code != 403 {
		t.Errorf("script for a MAC with no DHCP exchange = %d, want 403", rec.Code)
	}
	rec := get("192.0.2.1:4000", "/ipxe/52-54-00-00-00-03.ipxe")
	m := regexp.MustCompile(`locus.secret=([0-9a-f]+)`).FindStringSubmatch(rec.Body.String())
	if rec.Code != 200 || m == nil {
		t.Fatalf("script to the lease holder = %d %q, want it with a secret", rec.Code, rec.Body.String())
	}
	if rec := get("192.0.2.1:4000", "/ipxe/52-54-00-00-00-03.ipxe"); rec.Code != 403 {
		t.Errorf("a second script for one exchange = %d, want 403", rec.Code)
	}
	// The script pins the cluster CA the node must find at admission.
	if !regexp.MustCompile(`locus.ca=sha256:[0-9a-f]{64}`).MatchString(rec.Body.String()) {
		t.Errorf("the script pins no CA: %q", rec.Body.String())
	}
	// The attempts above took nothing from the node: its secret is
	// redeemed, from its own address only.
	if _, err := reg.RedeemSecret(mac3, m[1], netip.MustParseAddr("192.0.2.66")); !errors.Is(err, ErrSecretAddr) {
		t.Errorf("secret presented from another address: %v, want ErrSecretAddr", err)
	}
	// Bound to the address the script gives the node, 10.77.0.3.
	if n, err := reg.RedeemSecret(mac3, m[1], netip.MustParseAddr("10.77.0.3")); err != nil || n != 3 {
		t.Errorf("the node's own redemption = %d, %v; want node 3", n, err)
	}
}

func TestHTTPMethodsAndScripts(t *testing.T) {
	h, _ := testHTTP(t)
	for _, tc := range []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", "/vmlinuz", 200, "kernel"},
		{"HEAD", "/vmlinuz", 200, ""},
		{"PUT", "/vmlinuz", 405, ""},
		{"GET", "/sub", 404, ""},
		{"GET", "/nope", 404, ""},
		{"GET", "/ipxe/52-54-00-00-00-03.ipxe", 200, "locus.node=3 locus.ip=10.77.0.3/24"},
		{"GET", "/ipxe/52-54-00-00-00-03.ipxe", 403, "once per exchange"},
		{"GET", "/ipxe/zz.ipxe", 400, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.body) {
			t.Errorf("%s %s = %d %q, want %d containing %q", tc.method, tc.path, rec.Code, rec.Body.String(), tc.code, tc.body)
		}
	}
}

// FuzzHTTPPath sends arbitrary request paths (raw, so percent-encoding
// reaches the server): nothing outside the boot root is ever served.
func FuzzHTTPPath(f *testing.F) {
	for _, p := range []string{"/vmlinuz", "/../secret", "/%2e%2e/secret", "/escape", "/sub/../../secret", "/ipxe/52-54-00-00-00-02.ipxe", "//x", "/%00"} {
		f.Add(p)
	}
	h, _ := testHTTP(f)
	srv := httptest.NewServer(h)
	f.Cleanup(srv.Close)
	f.Fuzz(func(t *testing.T, p string) {
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, " \r\n\t#?") || len(p) > 2048 {
			return
		}
		req, err := http.NewRequest("GET", srv.URL+"/", nil)
		if err != nil {
			return
		}
		req.URL.Opaque = p
		resp, err := srv.Client().Do(req)
		if err != nil {
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), "TOPSECRET") {
			t.Fatalf("GET %q served a file outside the boot root", p)
		}
	})
}
