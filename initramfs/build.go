package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/mkuimage/cpio"

	"github.com/locus-ssi/locus/images"
	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/internal/atomicfile"
	"github.com/locus-ssi/locus/internal/userland"
	"github.com/locus-ssi/locus/services/proc"
)

// Paths inside the image that init and locusd read.
const (
	LocusPath = "bin/locus"
	// OnnodeName is the lean stand-in's binary (cmd/onnode), beside locus.
	OnnodeName = "onnode"
)

// Compression of the archive segments.
type Compression string

// Compressions the kernel's initramfs unpacker and Locus both know.
const (
	Zstd Compression = "zstd"
	Gzip Compression = "gzip"
)

// ParseCompression checks a --compress value.
func ParseCompression(s string) (Compression, error) {
	switch Compression(s) {
	case Zstd, Gzip:
		return Compression(s), nil
	case "":
		return Zstd, nil
	}
	return "", fmt.Errorf("initramfs: compression %q: want zstd or gzip", s)
}

// Ext is the file name extension of the compression.
func (c Compression) Ext() string {
	if c == Gzip {
		return ".gz"
	}
	return ".zst"
}

// Compress compresses b deterministically: the same input gives the same
// bytes (one encoder goroutine, no timestamps). zstd at its best level:
// every PXE node downloads the image, and under TCG the download is
// most of a node's boot; the best level makes the image about a tenth
// smaller than the default for about 2 s more per build, and the
// kernel unpacks it as fast.
func (c Compression) Compress(b []byte) ([]byte, error) {
	var out bytes.Buffer
	switch c {
	case Gzip:
		w, _ := gzip.NewWriterLevel(&out, gzip.BestSpeed)
		if _, err := w.Write(b); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
	default:
		w, err := zstd.NewWriter(&out, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedBestCompression))
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(b); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
	}
	return out.Bytes(), nil
}

// Options say what goes into an image.
type Options struct {
	Spec *clusterspec.Spec
	// SpecYAML is the spec as the user wrote it; empty for defaults.
	SpecYAML []byte
	Kernel   *images.KernelFiles
	// Locus is the path of a static linux/amd64 locus binary: /bin/locus,
	// and /init (which runs its PID 1). A static onnode beside it (make
	// build makes both) is the image's /bin/onnode and /bin/fast, the
	// lean stand-in of a remote job; without one they are links to
	// locus.
	Locus string
	// Shell, if set, is a static busybox put in /usr/local/bin, with sh
	// and ash linked to it: a shell with job control ahead of u-root's
	// gosh on $PATH (/bin/sh stays gosh).
	Shell    string
	CacheDir string
	Compress Compression
	Progress io.Writer
	Log      *slog.Logger
}

// Manifest says what an image holds.
type Manifest struct {
	Base     string   `json:"base"`
	Modules  []string `json:"modules"`
	Kernel   string   `json:"kernel"`
	Size     int64    `json:"size"`
	Compress string   `json:"compress"`
}

// Build writes the initramfs to out: the cached u-root base followed by a
// small Locus archive (init, locus, modules, /etc/locus). The kernel
// unpacks both in order, the later winning.
func Build(ctx context.Context, o Options, out string) (*Manifest, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if err := CheckStatic(o.Locus); err != nil {
		return nil, err
	}
	overlay, mods, err := Overlay(o)
	if err != nil {
		return nil, err
	}
	base, err := Base(ctx, o.CacheDir, o.Compress, o.Progress, o.Log)
	if err != nil {
		return nil, err
	}
	baseBytes, err := os.ReadFile(base)
	if err != nil {
		return nil, fmt.Errorf("initramfs: read base: %w", err)
	}
	z, err := o.Compress.Compress(overlay)
	if err != nil {
		return nil, fmt.Errorf("initramfs: compress: %w", err)
	}
	img := append(baseBytes, z...)
	if err := atomicfile.Write(out, img, 0o644, false); err != nil {
		return nil, err
	}
	names := make([]string, len(mods))
	for i, m := range mods {
		names[i] = m.Name
	}
	return &Manifest{Base: filepath.Base(base), Modules: names, Kernel: o.Kernel.Version, Size: int64(len(img)), Compress: string(o.Compress)}, nil
}

// CheckStatic makes sure the locus binary can run as PID 1 in an image
// without a C library: a linux/amd64 ELF with no interpreter.
func CheckStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("initramfs: binary %s: %w", p, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("initramfs: binary %s is for %s, want x86-64 (build with GOARCH=amd64)", p, f.Machine)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("initramfs: binary %s is dynamically linked; rebuild it with CGO_ENABLED=0 (make build)", p)
		}
	}
	return nil
}

// Overlay returns the uncompressed Locus archive and the modules in it.
func Overlay(o Options) ([]byte, []images.Module, error) {
	tree, err := images.OpenModuleTree(o.Kernel.ModulesDir)
	if err != nil {
		return nil, nil, err
	}
	mods, err := tree.Resolve(o.Spec.AllModules())
	if err != nil {
		return nil, nil, err
	}
	locusBin, err := os.ReadFile(o.Locus)
	if err != nil {
		return nil, nil, fmt.Errorf("initramfs: read locus binary: %w", err)
	}
	modRoot := path.Join("lib/modules", o.Kernel.Version)
	var recs []cpio.Record
	add := func(r cpio.Record) { recs = append(recs, r) }
	file := func(name string, data []byte, perm uint64) {
		add(cpio.StaticRecord(data, cpio.Info{Name: name, Mode: cpio.S_IFREG | perm}))
	}
	for _, d := range []string{"bin", "etc", "etc/locus", "lib", "lib/modules", modRoot, "cluster", "run", "tmp", "proc", "sys", "dev", "root", "var", "var/log"} {
		mode := uint64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		add(cpio.Directory(d, mode))
	}
	file(LocusPath, locusBin, 0o755)
	add(cpio.Symlink("init", LocusPath))
	add(cpio.Symlink("bin/cluster", "locus"))
	for _, name := range userland.Names() {
		add(cpio.Symlink("bin/"+name, "locus"))
	}
	lean, err := os.ReadFile(filepath.Join(filepath.Dir(o.Locus), OnnodeName))
	if err == nil {
		if err := CheckStatic(filepath.Join(filepath.Dir(o.Locus), OnnodeName)); err != nil {
			return nil, nil, err
		}
		file("bin/"+OnnodeName, lean, 0o755)
	}
	if o.Shell != "" {
		b, err := os.ReadFile(o.Shell)
		if err != nil {
			return nil, nil, fmt.Errorf("initramfs: shell: %w", err)
		}
		if err := CheckStatic(o.Shell); err != nil {
			return nil, nil, err
		}
		add(cpio.Directory("usr", 0o755))
		add(cpio.Directory("usr/local", 0o755))
		add(cpio.Directory("usr/local/bin", 0o755))
		file("usr/local/bin/busybox", b, 0o755)
		add(cpio.Symlink("usr/local/bin/sh", "busybox"))
		add(cpio.Symlink("usr/local/bin/ash", "busybox"))
	}
	for _, name := range slices.Sorted(maps.Keys(proc.Commands())) {
		switch {
		case lean != nil && name == OnnodeName:
		case lean != nil && name == "fast":
			add(cpio.Symlink("bin/"+name, OnnodeName))
		default:
			add(cpio.Symlink("bin/"+name, "locus"))
		}
	}
	var order bytes.Buffer
	for _, m := range mods {
		data, err := os.ReadFile(filepath.Join(o.Kernel.ModulesDir, m.Path))
		if err != nil {
			return nil, nil, fmt.Errorf("initramfs: module %s: %w", m.Name, err)
		}
		for _, dir := range parents(path.Join(modRoot, filepath.ToSlash(m.Path))) {
			add(cpio.Directory(dir, 0o755))
		}
		file(path.Join(modRoot, filepath.ToSlash(m.Path)), data, 0o644)
		order.WriteString(filepath.ToSlash(m.Path) + "\n")
	}
	file(path.Join(modRoot, "modules.dep"), images.ModulesDep(mods), 0o644)
	file(layout.ModuleListPath, order.Bytes(), 0o644)
	file(layout.KernelVerPath, []byte(o.Kernel.Version+"\n"), 0o644)
	spec := o.SpecYAML
	if len(spec) == 0 {
		spec = []byte("# empty spec: every key takes its default (locus image spec --example)\n")
	}
	file(layout.SpecPath, spec, 0o644)
	file("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	file("etc/group", []byte("root:x:0:\n"), 0o644)
	file("etc/resolv.conf", []byte(resolvConf(o.Spec)), 0o644)

	recs = dedupDirs(recs)
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Name < recs[j].Name })
	var buf bytes.Buffer
	w := cpio.Newc.Writer(&buf)
	for _, r := range recs {
		if err := w.WriteRecord(cpio.MakeReproducible(r)); err != nil {
			return nil, nil, fmt.Errorf("initramfs: write %s: %w", r.Name, err)
		}
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), mods, nil
}

func resolvConf(s *clusterspec.Spec) string {
	var b strings.Builder
	for _, d := range s.Interconnect.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	return b.String()
}

// parents returns the directories above p, outermost first.
func parents(p string) []string {
	var out []string
	for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
		out = append([]string{d}, out...)
	}
	return out
}

func dedupDirs(recs []cpio.Record) []cpio.Record {
	seen := map[string]bool{}
	out := recs[:0]
	for _, r := range recs {
		if seen[r.Name] {
			continue
		}
		seen[r.Name] = true
		out = append(out, r)
	}
	return out
}

// ForImages adapts Build to images.Build's InitramfsFunc.
func ForImages(ctx context.Context, in images.InitramfsInput, out string) ([]string, string, error) {
	c, err := ParseCompression(in.Compress)
	if err != nil {
		return nil, "", err
	}
	m, err := Build(ctx, Options{
		Spec: in.Spec, SpecYAML: in.SpecYAML, Kernel: in.Kernel, Locus: in.Locus, Shell: in.Shell,
		CacheDir: in.CacheDir, Compress: c, Progress: in.Progress,
	}, out)
	if err != nil {
		return nil, "", err
	}
	return m.Modules, c.Ext(), nil
}
