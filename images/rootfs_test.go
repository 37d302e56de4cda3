package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/u-root/u-root/pkg/cpio"
)

type tarFile struct {
	name, body string
	dir        bool
}

func makeTar(t *testing.T, files ...tarFile) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(f.body))}
		if f.dir {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(f.body))
	}
	tw.Close()
	return b.Bytes()
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

func prepare(t *testing.T, root clusterspec.Root, files map[string][]byte) (string, error) {
	t.Helper()
	dir := t.TempDir()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	locus := filepath.Join(dir, "locus")
	os.WriteFile(locus, []byte("#!locus"), 0o755)
	out := filepath.Join(dir, "rootfs")
	os.Mkdir(out, 0o755)
	spec := &clusterspec.Spec{Root: root}
	err := PrepareRoot(context.Background(), RootInput{Spec: spec, SpecDir: dir, Initramfs: filepath.Join(dir, "initramfs"), Locus: locus, CacheDir: filepath.Join(dir, "cache")}, out)
	return out, err
}

func readIn(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Errorf("root lacks %s: %v", name, err)
	}
	return string(b)
}

func TestMinimalRootIsTheInitramfs(t *testing.T) {
	var c bytes.Buffer
	w := cpio.Newc.Writer(&c)
	for _, r := range []cpio.Record{cpio.Directory("bbin", 0o755), cpio.StaticFile("bbin/bb", "busybox", 0o755), cpio.Symlink("bbin/ls", "bb")} {
		w.WriteRecord(r)
	}
	cpio.WriteTrailer(w)
	var z bytes.Buffer
	zw, _ := zstd.NewWriter(&z)
	zw.Write(c.Bytes())
	zw.Close()
	dir, err := prepare(t, clusterspec.Root{Content: clusterspec.ContentMinimal}, map[string][]byte{"initramfs": z.Bytes()})
	if err != nil {
		t.Fatal(err)
	}
	if got := readIn(t, dir, "bbin/ls"); got != "busybox" {
		t.Errorf("bbin/ls = %q", got)
	}
}

func TestTarballRoot(t *testing.T) {
	data := gz(makeTar(t, tarFile{name: "./etc/", dir: true}, tarFile{name: "./etc/os-release", body: "ID=test\n"}))
	dir, err := prepare(t, clusterspec.Root{Content: clusterspec.ContentTarball, Tarball: "root.tar.gz"}, map[string][]byte{"root.tar.gz": data})
	if err != nil {
		t.Fatal(err)
	}
	if got := readIn(t, dir, "etc/os-release"); got != "ID=test\n" {
		t.Errorf("os-release = %q", got)
	}
	if got := readIn(t, dir, "usr/local/sbin/locus"); got != "#!locus" {
		t.Errorf("the locus binary is not in the root: %q", got)
	}
}

// ociArchive lays out an OCI image (index -> image index -> manifest ->
// layers) as skopeo's oci-archive does.
func ociArchive(t *testing.T, layers [][]byte, corrupt bool) []byte {
	t.Helper()
	var files []tarFile
	blob := func(b []byte) string {
		sum := fmt.Sprintf("%x", sha256.Sum256(b))
		files = append(files, tarFile{name: "blobs/sha256/" + sum, body: string(b)})
		return "sha256:" + sum
	}
	var descs []map[string]string
	for _, l := range layers {
		d := blob(l)
		descs = append(descs, map[string]string{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d})
	}
	if corrupt {
		// Bytes past the tar's end marker: the layer still unpacks, only
		// its digest tells.
		files[0].body += "junk"
	}
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "layers": descs})
	md := blob(man)
	other, _ := json.Marshal(map[string]any{"schemaVersion": 2, "layers": []any{}})
	od := blob(other)
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{
		map[string]any{"digest": od, "platform": map[string]string{"os": "linux", "architecture": "arm64"}},
		map[string]any{"digest": md, "platform": map[string]string{"os": "linux", "architecture": "amd64"}},
	}})
	id := blob(index)
	top, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{map[string]any{"digest": id}}})
	files = append(files, tarFile{name: "oci-layout", body: `{"imageLayoutVersion":"1.0.0"}`}, tarFile{name: "index.json", body: string(top)})
	return makeTar(t, files...)
}

func TestOCIImageRoot(t *testing.T) {
	lower := gz(makeTar(t, tarFile{name: "etc/a", body: "lower"}, tarFile{name: "etc/gone", body: "x"}))
	upper := gz(makeTar(t, tarFile{name: "etc/a", body: "upper"}, tarFile{name: "etc/.wh.gone"}))
	dir, err := prepare(t, clusterspec.Root{Content: clusterspec.ContentTarball, Tarball: "img.tar"}, map[string][]byte{"img.tar": ociArchive(t, [][]byte{lower, upper}, false)})
	if err != nil {
		t.Fatal(err)
	}
	if got := readIn(t, dir, "etc/a"); got != "upper" {
		t.Errorf("etc/a = %q, want the upper layer's", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "etc/gone")); err == nil {
		t.Error("the whiteout did not delete etc/gone")
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err == nil {
		t.Error("the layout files ended up in the root")
	}
	_, err = prepare(t, clusterspec.Root{Content: clusterspec.ContentTarball, Tarball: "img.tar"}, map[string][]byte{"img.tar": ociArchive(t, [][]byte{makeTar(t, tarFile{name: "a", body: "a"})}, true)})
	if err == nil || !strings.Contains(err.Error(), "digest mismatch") || !strings.Contains(err.Error(), "layer 1 of 1") {
		t.Errorf("a corrupt layer: %v", err)
	}
}

func TestDockerSaveRoot(t *testing.T) {
	l := makeTar(t, tarFile{name: "bin/sh", body: "sh"})
	archive := makeTar(t, tarFile{name: "abc/layer.tar", body: string(l)}, tarFile{name: "manifest.json", body: `[{"Config":"c.json","Layers":["abc/layer.tar"]}]`})
	dir, err := prepare(t, clusterspec.Root{Content: clusterspec.ContentTarball, Tarball: "img.tar"}, map[string][]byte{"img.tar": archive})
	if err != nil {
		t.Fatal(err)
	}
	if got := readIn(t, dir, "bin/sh"); got != "sh" {
		t.Errorf("bin/sh = %q", got)
	}
}

func TestTarballErrors(t *testing.T) {
	if _, err := prepare(t, clusterspec.Root{Content: clusterspec.ContentTarball, Tarball: "missing.tar"}, nil); err == nil || !strings.Contains(err.Error(), "missing.tar") {
		t.Errorf("missing tarball: %v", err)
	}
	if _, err := prepare(t, clusterspec.Root{Content: clusterspec.ContentTarball, Tarball: "bad.tar"}, map[string][]byte{"bad.tar": []byte("not a tar at all")}); err == nil {
		t.Error("a non-tar was accepted")
	} else {
		t.Log(err)
	}
}

func TestRootContentSpecErrors(t *testing.T) {
	for yaml, want := range map[string]string{
		"root: {content: nfs}":                                   "root.content",
		"root: {content: tarball}":                               "root.tarball: is required",
		"root: {packages: [vim]}":                                "root.packages: applies only",
		"root: {content: debootstrap, packages: [Bad_Name]}":     "root.packages[0]",
		"root: {content: debootstrap, mirror: 'ftp://x/debian'}": "root.mirror",
	} {
		_, err := clusterspec.Parse("locus.yaml", []byte(yaml))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one naming %q", yaml, err, want)
		}
	}
}

// TestDebootstrapRoot makes a real Debian root with debootstrap from
// Debian's mirror (cached under LOCUS_CACHE_DIR, so a second run is quick).
func TestDebootstrapRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("debootstrap downloads a Debian base system")
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Fatal("debootstrap is not installed (make deps)")
	}
	if os.Geteuid() != 0 {
		t.Skip("debootstrap needs root")
	}
	cache, err := CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "rootfs")
	os.Mkdir(out, 0o755)
	locus := filepath.Join(dir, "locus")
	os.WriteFile(locus, []byte("#!locus"), 0o755)
	spec, err := clusterspec.Parse("locus.yaml", []byte("root: {content: debootstrap, packages: [iproute2]}"))
	if err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	if err := PrepareRoot(context.Background(), RootInput{Spec: spec, Locus: locus, CacheDir: cache, Progress: &progress}, out); err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	t.Log(progress.String())
	if got := readIn(t, out, "etc/debian_version"); !strings.HasPrefix(got, "12.") {
		t.Errorf("etc/debian_version = %q, want Debian 12", got)
	}
	// The extra package is installed, and the root runs its own binaries.
	b, err := exec.Command("chroot", out, "/usr/bin/ip", "-V").CombinedOutput()
	if err != nil || !strings.Contains(string(b), "iproute2") {
		t.Errorf("chroot ip -V: %v: %s", err, b)
	}
	if st, err := os.Lstat(filepath.Join(out, "dev/null")); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		t.Errorf("dev/null is not a device: %v", err)
	}
}
