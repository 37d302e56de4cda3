package initramfs_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/mkuimage/cpio"

	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/initramfs"
	"github.com/locus-ssi/locus/internal/testutil"
)

// listArchive decompresses every zstd segment of an image and returns the
// records' names, in order, later segments after earlier ones.
func listArchive(t *testing.T, path string) map[string]cpio.Record {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The zstd decoder reads concatenated frames as one stream, as the
	// kernel does with concatenated segments.
	d, err := zstd.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	all, err := io.ReadAll(d)
	if err != nil {
		t.Fatal(err)
	}
	recs := map[string]cpio.Record{}
	// Walk newc headers in sequence; several archives follow each other,
	// each ending in TRAILER!!! and zero padding.
	hex := func(b []byte) uint64 {
		var v uint64
		for _, c := range b {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= uint64(c - '0')
			case c >= 'a' && c <= 'f':
				v |= uint64(c-'a') + 10
			case c >= 'A' && c <= 'F':
				v |= uint64(c-'A') + 10
			}
		}
		return v
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	for off := 0; off+110 <= len(all); {
		if all[off] == 0 {
			off++
			continue
		}
		h := all[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad cpio magic at %d", off)
		}
		mode := hex(h[14:22])
		size := int(hex(h[54:62]))
		nameSize := int(hex(h[94:102]))
		name := string(all[off+110 : off+110+nameSize-1])
		dataOff := align(off + 110 + nameSize)
		if name != "TRAILER!!!" {
			recs[name] = cpio.StaticRecord(all[dataOff:dataOff+size], cpio.Info{Name: name, Mode: mode, FileSize: uint64(size)})
		}
		off = align(dataOff + size)
	}
	return recs
}

func buildImage(t *testing.T, out string) *layout.Manifest {
	t.Helper()
	locus, err := testutil.LocusBinary(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	spec := []byte("cluster: {name: contents}\nmodules: [fuse, 9p]\n")
	start := time.Now()
	m, err := testutil.BuildImage(context.Background(), locus, out, spec, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("image built in %s", time.Since(start).Round(time.Millisecond))
	return m
}

func TestImageContents(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	m := buildImage(t, out)
	recs := listArchive(t, filepath.Join(out, m.Initramfs))
	init, ok := recs["init"]
	if !ok || init.Mode&cpio.S_IFMT != cpio.S_IFLNK {
		t.Fatalf("image has no /init symlink")
	}
	for _, want := range []string{"bin/locus", "bin/sh", "bbin/bb", "bbin/ls", "bbin/ip", layout.SpecPath, layout.ModuleListPath, layout.KernelVerPath,
		"lib/modules/" + m.KernelVersion + "/modules.dep"} {
		if _, ok := recs[want]; !ok {
			t.Errorf("image lacks %s", want)
		}
	}
	var modFiles []string
	for name := range recs {
		if layout.ModuleName(name) != "" {
			modFiles = append(modFiles, layout.ModuleName(name))
		}
	}
	joined := " " + strings.Join(modFiles, " ") + " "
	for _, want := range []string{"virtio_net", "net_failover", "failover", "virtio_pci", "virtio_console", "virtio_rng", "e1000", "fuse", "9p", "9pnet", "netfs"} {
		if !strings.Contains(joined, " "+want+" ") {
			t.Errorf("image lacks module %s (has %v)", want, modFiles)
		}
	}
	// The module list init loads holds each dependency before its user.
	lr := recs[layout.ModuleListPath]
	list := make([]byte, lr.FileSize)
	lr.ReadAt(list, 0)
	pos := map[string]int{}
	for i, l := range strings.Fields(string(list)) {
		pos[layout.ModuleName(l)] = i
	}
	if pos["failover"] > pos["net_failover"] || pos["net_failover"] > pos["virtio_net"] || pos["9pnet"] > pos["9p"] {
		t.Errorf("module list out of dependency order: %s", list)
	}
}

func TestImageReproducible(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	ma := buildImage(t, a)
	mb := buildImage(t, b)
	if ma.InitramfsSHA256 != mb.InitramfsSHA256 {
		t.Errorf("two builds from the same inputs differ: %s vs %s", ma.InitramfsSHA256, mb.InitramfsSHA256)
	}
	for _, f := range []string{layout.KernelFile, ma.Initramfs, layout.SpecFile, layout.ManifestFile} {
		x, _ := os.ReadFile(filepath.Join(a, f))
		y, _ := os.ReadFile(filepath.Join(b, f))
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between two builds", f)
		}
	}
}

// TestBaseReproducible builds the u-root base twice from scratch (two
// empty caches) and compares the bytes: gobusybox, the Go build and the
// compression must all be deterministic.
func TestBaseReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the u-root base twice (~1 min)")
	}
	var sums []string
	for i := range 2 {
		cache := t.TempDir()
		start := time.Now()
		p, err := initramfs.Base(context.Background(), cache, initramfs.Zstd, io.Discard, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		sums = append(sums, string(b))
		t.Logf("base build %d: %s, %d bytes", i+1, time.Since(start).Round(time.Second), len(b))
	}
	if sums[0] != sums[1] {
		t.Error("two cold builds of the u-root base differ")
	}
}

func TestCheckStaticRejectsDynamic(t *testing.T) {
	if err := initramfs.CheckStatic("/bin/ls"); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("CheckStatic(/bin/ls) = %v, want a dynamic-linking error", err)
	}
	if err := initramfs.CheckStatic("/etc/passwd"); err == nil {
		t.Errorf("CheckStatic(/etc/passwd) = nil, want an error")
	}
}
