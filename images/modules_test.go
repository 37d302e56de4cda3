package images

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/ulikunitz/xz"
)

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestResolveWithModulesDep(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"kernel/net/virtio_net.ko":    "",
		"kernel/net/net_failover.ko":  "",
		"kernel/net/core/failover.ko": "",
		"kernel/fs/fuse.ko.xz":        "",
		"kernel/drivers/a-b.ko.zst":   "",
		"modules.dep": "kernel/net/virtio_net.ko: kernel/net/net_failover.ko kernel/net/core/failover.ko\n" +
			"kernel/net/net_failover.ko: kernel/net/core/failover.ko\n" +
			"kernel/net/core/failover.ko:\nkernel/fs/fuse.ko.xz:\nkernel/drivers/a-b.ko.zst:\n",
		"modules.builtin": "kernel/drivers/tty/serial/8250.ko\n",
	})
	tree, err := OpenModuleTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tree.Resolve([]string{"virtio-net", "fuse", "a_b", "8250", "failover"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range got {
		names = append(names, m.Name)
	}
	// Dependencies load first; built-ins (8250) are skipped; repeats once.
	want := []string{"failover", "net_failover", "virtio_net", "fuse", "a_b"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("Resolve order (-want +got):\n%s", diff)
	}
	dep := string(ModulesDep(got))
	if !strings.Contains(dep, "kernel/net/virtio_net.ko: kernel/net/net_failover.ko kernel/net/core/failover.ko\n") {
		t.Errorf("ModulesDep = %q, want virtio_net's closure", dep)
	}
}

func TestResolveUnknownModule(t *testing.T) {
	dir := writeTree(t, map[string]string{"kernel/virtio_net.ko": "", "modules.dep": "kernel/virtio_net.ko:\n"})
	tree, err := OpenModuleTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tree.Resolve([]string{"virtio_nett"})
	if !errors.Is(err, ErrNoModule) || !strings.Contains(err.Error(), `did you mean "virtio_net"`) {
		t.Errorf("Resolve(virtio_nett) = %v, want ErrNoModule with a hint", err)
	}
}

func TestParseModulesDepErrors(t *testing.T) {
	for _, in := range []string{"nocolon\n", "kernel/a.ko: notamodule.txt\n"} {
		if _, err := ParseModulesDep(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("ParseModulesDep(%q) = %v, want a line-1 error", in, err)
		}
	}
}

func TestOwnKernelRejectsNonKernel(t *testing.T) {
	dir := writeTree(t, map[string]string{"vmlinuz": "not a kernel", "mods/x.ko": ""})
	if _, err := OwnKernel(filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "mods")); !errors.Is(err, ErrNoKernel) {
		t.Errorf("OwnKernel(text file) = %v, want ErrNoKernel", err)
	}
	if _, err := OwnKernel(filepath.Join(dir, "missing"), dir); !errors.Is(err, ErrNoKernel) {
		t.Errorf("OwnKernel(missing) = %v, want ErrNoKernel", err)
	}
}

// debianKernel fetches Debian's kernel once per test binary (the real
// thing: apt-get download, cached under the user's cache dir).
func debianKernel(t *testing.T) *KernelFiles {
	t.Helper()
	debianOnce.Do(func() {
		cache, err := CacheDir()
		if err != nil {
			debianErr = err
			return
		}
		var log bytes.Buffer
		debianKF, debianErr = FetchKernel(context.Background(), clusterspec.Kernel{Package: clusterspec.DefaultKernelPackage}, cache, &log)
	})
	if debianErr != nil {
		t.Fatalf("fetch Debian kernel: %v", debianErr)
	}
	return debianKF
}

var (
	debianOnce sync.Once
	debianKF   *KernelFiles
	debianErr  error
)

func TestDebianKernelModules(t *testing.T) {
	kf := debianKernel(t)
	if !strings.HasSuffix(kf.Version, "-amd64") {
		t.Errorf("Version = %q, want a Debian amd64 release", kf.Version)
	}
	tree, err := OpenModuleTree(kf.ModulesDir)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := tree.Resolve(clusterspec.BaseModules())
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range mods {
		pos[m.Name] = i
	}
	// virtio_net needs net_failover needs failover; virtio_pci needs its
	// legacy/modern helpers; all must come first.
	for _, pair := range [][2]string{{"failover", "net_failover"}, {"net_failover", "virtio_net"}, {"virtio_pci_modern_dev", "virtio_pci"}} {
		a, okA := pos[pair[0]]
		b, okB := pos[pair[1]]
		if !okA || !okB || a > b {
			t.Errorf("load order: %s at %d (%v), %s at %d (%v): want the first before the second", pair[0], a, okA, pair[1], b, okB)
		}
	}
}

func TestModinfoCompressed(t *testing.T) {
	kf := debianKernel(t)
	tree, err := OpenModuleTree(kf.ModulesDir)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(kf.ModulesDir, tree.files["virtio_net"]))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var xzb, zsb, gzb bytes.Buffer
	xw, _ := xz.NewWriter(&xzb)
	xw.Write(raw)
	xw.Close()
	zw, _ := zstd.NewWriter(&zsb)
	zw.Write(raw)
	zw.Close()
	gw := gzip.NewWriter(&gzb)
	gw.Write(raw)
	gw.Close()
	for name, data := range map[string][]byte{"virtio_net.ko": raw, "virtio_net.ko.xz": xzb.Bytes(), "virtio_net.ko.zst": zsb.Bytes(), "virtio_net.ko.gz": gzb.Bytes()} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		info, err := ReadModinfo(p)
		if err != nil {
			t.Errorf("ReadModinfo(%s) = %v", name, err)
			continue
		}
		if info["name"] != "virtio_net" || !strings.Contains(info["depends"], "net_failover") {
			t.Errorf("ReadModinfo(%s) name=%q depends=%q, want virtio_net needing net_failover", name, info["name"], info["depends"])
		}
	}
}
