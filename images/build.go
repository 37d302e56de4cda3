package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/installer"
)

// IPXEDir is where Debian's ipxe package puts its binaries.
const IPXEDir = "/usr/lib/ipxe"

// netbootTree writes the boot tree: iPXE for BIOS (undionly.kpxe) and
// UEFI (ipxe.efi, snponly.efi) from Debian's ipxe package, and hard links
// to the kernel and initramfs.
func netbootTree(dir, kernel, initrd string, progress io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"} {
		if err := copyFile(filepath.Join(IPXEDir, f), filepath.Join(dir, f)); err != nil {
			return fmt.Errorf("images: netboot tree needs Debian's ipxe package (make deps, or apt-get install ipxe): %w", err)
		}
	}
	for _, src := range []string{kernel, initrd} {
		dst := filepath.Join(dir, filepath.Base(src))
		if err := os.Link(src, dst); err != nil {
			if err := copyFile(src, dst); err != nil {
				return err
			}
		}
	}
	fmt.Fprintf(progress, "netboot: boot tree in %s\n", layout.NetbootDir)
	return nil
}

// BuildOptions say what to build and where.
type BuildOptions struct {
	// SpecPath is the cluster spec; "" means DefaultClusterSpec.
	SpecPath string
	// Out is the output directory.
	Out string
	// KernelImage and KernelModules override the spec's kernel.
	KernelImage, KernelModules string
	// Locus is the static locus binary that goes into the image.
	Locus string
	// Compress is the initramfs compression (zstd or gzip).
	Compress string
	// Progress receives progress lines.
	Progress io.Writer
	// DiskFormat "qcow2" also writes the install disk as disk.qcow2
	// (through qemu-img); the raw disk.img is always written.
	DiskFormat string
}

// InitramfsInput is what the initramfs builder is given.
type InitramfsInput struct {
	Spec     *clusterspec.Spec
	SpecYAML []byte
	Kernel   *KernelFiles
	Locus    string
	// Shell, if set, is a static busybox: the minimal root's
	// job-control sh (ShellPackage).
	Shell    string
	CacheDir string
	Compress string
	Progress io.Writer
}

// InitramfsFunc builds an initramfs at out and returns the modules in it
// and the file name extension of its compression.
type InitramfsFunc func(ctx context.Context, in InitramfsInput, out string) (modules []string, ext string, err error)

// Build turns a spec into boot artefacts in o.Out: the kernel, the
// initramfs (made by mkInitramfs), the spec and a manifest. Everything is
// written to a staging directory first and moved in at the end, so a
// failed build leaves nothing half-written in o.Out.
func Build(ctx context.Context, o BuildOptions, mkInitramfs InitramfsFunc) (*layout.Manifest, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.DiskFormat != "" && o.DiskFormat != "raw" && o.DiskFormat != "qcow2" {
		return nil, fmt.Errorf("images: --format %q: want raw or qcow2", o.DiskFormat)
	}
	spec, specYAML, err := clusterspec.LoadForBuild(o.SpecPath)
	if err != nil {
		return nil, err
	}
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	var kf *KernelFiles
	switch {
	case o.KernelImage != "" || o.KernelModules != "":
		if o.KernelImage == "" || o.KernelModules == "" {
			return nil, fmt.Errorf("images: --kernel and --modules go together (the kernel image and its lib/modules/<version> tree)")
		}
		kf, err = OwnKernel(o.KernelImage, o.KernelModules)
	default:
		kf, err = FetchKernel(ctx, spec.Kernel, cache, o.Progress)
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Progress, "kernel: %s (%s)\n", kf.Version, kf.Origin)

	locus, why := NodeBinary(o.Locus)
	if st, err := os.Stat(locus); err == nil {
		fmt.Fprintf(o.Progress, "locus: %s, %.1f MB (%s)\n", locus, float64(st.Size())/1e6, why)
	}
	o.Locus = locus

	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("images: output directory: %w", err)
	}
	stage, err := os.MkdirTemp(o.Out, ".build-")
	if err != nil {
		return nil, fmt.Errorf("images: output directory: %w", err)
	}
	defer os.RemoveAll(stage)

	if err := copyFile(kf.Image, filepath.Join(stage, layout.KernelFile)); err != nil {
		return nil, err
	}
	shell, err := FetchShell(ctx, cache, o.Progress)
	if err != nil {
		fmt.Fprintf(o.Progress, "shell: no job-control shell in the image (%v): sh is u-root's gosh\n", err)
	}
	in := InitramfsInput{Spec: spec, SpecYAML: specYAML, Kernel: kf, Locus: o.Locus, Shell: shell, CacheDir: cache, Compress: o.Compress, Progress: o.Progress}
	tmpInitrd := filepath.Join(stage, "initramfs")
	mods, ext, err := mkInitramfs(ctx, in, tmpInitrd)
	if err != nil {
		return nil, err
	}
	initrdName := layout.InitramfsFile + ext
	if err := os.Rename(tmpInitrd, filepath.Join(stage, initrdName)); err != nil {
		return nil, err
	}
	if len(specYAML) == 0 {
		specYAML = []byte("# empty spec: every key takes its default (locus image spec --example)\n")
	}
	if err := os.WriteFile(filepath.Join(stage, layout.SpecFile), specYAML, 0o644); err != nil {
		return nil, err
	}
	sum, size, err := fileSHA256(filepath.Join(stage, initrdName))
	if err != nil {
		return nil, err
	}
	m := &layout.Manifest{
		Cluster: spec.Cluster.Name, KernelVersion: kf.Version, KernelOrigin: kf.Origin, Kernel: layout.KernelFile,
		Initramfs: initrdName, InitramfsSize: size, InitramfsSHA256: sum, Modules: mods, Spec: layout.SpecFile, Disk: layout.DiskFile,
	}
	if spec.Root.Source == clusterspec.RootGFS2 {
		m.SharedDisk = layout.GFS2DiskFile
	}
	mb, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(stage, layout.ManifestFile), append(mb, '\n'), 0o644); err != nil {
		return nil, err
	}
	if err := netbootTree(filepath.Join(stage, layout.NetbootDir), filepath.Join(stage, layout.KernelFile), filepath.Join(stage, initrdName), o.Progress); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stage, layout.NetbootDir, layout.SpecFile), specYAML, 0o644); err != nil {
		return nil, err
	}
	addr, err := spec.NodeAddr(1)
	if err != nil {
		return nil, err
	}
	cmdline := fmt.Sprintf("console=%s panic=-1 locus.node=1 locus.ip=%s locus.role=init", spec.Console, addr)
	if spec.Kernel.Cmdline != "" {
		cmdline += " " + spec.Kernel.Cmdline
	}
	rootTree := filepath.Join(stage, "rootfs")
	if err := os.Mkdir(rootTree, 0o755); err != nil {
		return nil, err
	}
	specDir := "."
	if o.SpecPath != "" {
		specDir = filepath.Dir(o.SpecPath)
	}
	err = PrepareRoot(ctx, RootInput{
		Spec: spec, SpecDir: specDir, Initramfs: filepath.Join(stage, initrdName), Locus: o.Locus, CacheDir: cache, Progress: o.Progress,
	}, rootTree)
	if err != nil {
		return nil, err
	}
	err = installer.Build(ctx, installer.Options{
		Kernel: filepath.Join(stage, layout.KernelFile), Initramfs: filepath.Join(stage, initrdName), Cmdline: cmdline,
		RootTree: rootTree, Netboot: filepath.Join(stage, layout.NetbootDir), Spec: specYAML, Progress: o.Progress,
	}, filepath.Join(stage, layout.DiskFile))
	if err != nil {
		return nil, err
	}
	files := []string{layout.KernelFile, initrdName, layout.SpecFile, layout.NetbootDir, layout.DiskFile}
	if m.SharedDisk != "" {
		if err := mkfsGFS2(ctx, spec, filepath.Join(stage, m.SharedDisk), o.Progress); err != nil {
			return nil, err
		}
		files = append(files, m.SharedDisk)
	} else {
		os.Remove(filepath.Join(o.Out, layout.GFS2DiskFile)) // not stale from an earlier build
	}
	switch o.DiskFormat {
	case "", "raw":
		os.Remove(filepath.Join(o.Out, layout.DiskQCOW2File)) // not stale from an earlier build
	case "qcow2":
		if b, err := exec.CommandContext(ctx, "qemu-img", "convert", "-O", "qcow2", filepath.Join(stage, layout.DiskFile), filepath.Join(stage, layout.DiskQCOW2File)).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("images: qemu-img convert: %v: %s (make deps installs qemu-utils)", err, b)
		}
		files = append(files, layout.DiskQCOW2File)
	default:
		return nil, fmt.Errorf("images: --format %q: want raw or qcow2", o.DiskFormat)
	}
	// Move into place; the manifest last, so a reader that finds it finds
	// everything it names.
	os.RemoveAll(filepath.Join(o.Out, layout.NetbootDir))
	for _, name := range append(files, layout.ManifestFile) {
		if err := os.Rename(filepath.Join(stage, name), filepath.Join(o.Out, name)); err != nil {
			return nil, fmt.Errorf("images: move %s into %s: %w", name, o.Out, err)
		}
	}
	return m, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("images: copy %s: %w", src, err)
	}
	return out.Close()
}

func fileSHA256(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// mkfsGFS2 makes a gfs2 root's shared disk: a sparse image of the spec's
// size with an empty clustered GFS2 filesystem (Debian's mkfs.gfs2), its
// lock table the cluster's, a journal per node that may mount it. It is
// filled at the cluster's first boot by the first node up, from the
// install disk's root partition: the host's kernel cannot mount GFS2 and
// mkfs.gfs2 cannot fill one, and the first boot needs no builder VM.
func mkfsGFS2(ctx context.Context, spec *clusterspec.Spec, path string, progress io.Writer) error {
	mkfs, err := exec.LookPath("mkfs.gfs2")
	if err != nil {
		return fmt.Errorf("images: a gfs2 root needs mkfs.gfs2 (make deps installs gfs2-utils): %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	err = f.Truncate(int64(spec.Root.GFS2.SizeMB) << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("images: %s: %w", path, err)
	}
	// 32 MB journals: the smallest that GFS2 keeps fast; a failed node's
	// replay reads less.
	out, err := exec.CommandContext(ctx, mkfs, "-O", "-p", "lock_dlm", "-t", spec.GFS2Table(), "-j", strconv.Itoa(spec.Root.GFS2.Journals), "-J", "32", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("images: mkfs.gfs2 %s: %v: %s", path, err, out)
	}
	fmt.Fprintf(progress, "disk: %s, GFS2 (lock table %s, %d journals, %d MiB), filled at the first boot\n", filepath.Base(path), spec.GFS2Table(), spec.Root.GFS2.Journals, spec.Root.GFS2.SizeMB)
	return nil
}
