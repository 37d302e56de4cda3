package netboot

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/locus-ssi/locus/images/clusterspec"
)

func testHTTP(t testing.TB) (http.Handler, string) {
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
	return HTTPHandler(HTTPConfig{Spec: spec, Root: r, HTTPBase: "http://10.77.0.1:8080", Kernel: "vmlinuz", Initramfs: "initramfs.cpio.zst",
		Registry: reg, Log: slog.New(slog.DiscardHandler)}), dir
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
