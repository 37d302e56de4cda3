package images

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/locus-ssi/locus/images/clusterspec"
)

// KernelFiles is a kernel image with its module tree.
type KernelFiles struct {
	// Version is the kernel release (uname -r), e.g. 6.1.0-56-amd64.
	Version string
	// Image is the path of the bootable kernel (bzImage).
	Image string
	// ModulesDir is the module tree, .../lib/modules/<Version>.
	ModulesDir string
	// Origin says where it came from, for logs and the build manifest.
	Origin string
}

// ErrNoKernel is returned (wrapped) when a kernel cannot be found or read.
var ErrNoKernel = errors.New("no usable kernel")

// FetchKernel returns the kernel the spec asks for: the user's own image
// and module tree, or Debian's package fetched with apt into cacheDir
// (reused when already there). Progress of a download goes to progress.
func FetchKernel(ctx context.Context, k clusterspec.Kernel, cacheDir string, progress io.Writer) (*KernelFiles, error) {
	if k.Image != "" {
		return OwnKernel(k.Image, k.Modules)
	}
	return fetchDebianKernel(ctx, k.Package, cacheDir, progress)
}

// OwnKernel checks a user-given kernel image and module tree.
func OwnKernel(image, modules string) (*KernelFiles, error) {
	if err := checkBzImage(image); err != nil {
		return nil, err
	}
	st, err := os.Stat(modules)
	if err != nil || !st.IsDir() {
		return nil, fmt.Errorf("images: kernel modules %q: not a directory (want lib/modules/<version>): %w", modules, ErrNoKernel)
	}
	abs, _ := filepath.Abs(modules)
	img, _ := filepath.Abs(image)
	return &KernelFiles{Version: filepath.Base(abs), Image: img, ModulesDir: abs, Origin: "file " + img}, nil
}

// checkBzImage verifies that path is a readable x86 Linux boot image.
func checkBzImage(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("images: kernel image: %w (give a readable bzImage, e.g. /boot/vmlinuz-*): %w", err, ErrNoKernel)
	}
	defer f.Close()
	hdr := make([]byte, 4)
	if _, err := f.ReadAt(hdr, 0x202); err != nil || string(hdr) != "HdrS" {
		return fmt.Errorf("images: kernel image %s: not an x86 Linux boot image (no HdrS header): %w", path, ErrNoKernel)
	}
	return nil
}

var versionedImageRE = regexp.MustCompile(`^linux-image-[0-9]`)

// fetchDebianKernel resolves pkg (a meta package such as linux-image-amd64
// or a versioned one) to a versioned kernel package, downloads it with
// apt-get download, and unpacks it into the cache.
func fetchDebianKernel(ctx context.Context, pkg, cacheDir string, progress io.Writer) (*KernelFiles, error) {
	for _, tool := range []string{"apt-cache", "apt-get", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("images: %s not found: fetching Debian's kernel needs apt (or give kernel.image and kernel.modules): %w", tool, ErrNoKernel)
		}
	}
	name := pkg
	for range 4 {
		if versionedImageRE.MatchString(name) {
			break
		}
		next, err := aptDependsImage(ctx, name)
		if err != nil {
			return nil, err
		}
		name = next
	}
	version, err := aptCandidate(ctx, name)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cacheDir, "kernels", name+"_"+version)
	if kf, err := kernelFromTree(dir, name, version); err == nil {
		return kf, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("images: kernel cache: %w", err)
	}
	root, cleanup, err := downloadDeb(ctx, name, version, filepath.Dir(dir), "kernel", progress)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	if err := os.Rename(root, dir); err != nil {
		// Another build (a parallel test, a second shell) may have put the
		// same kernel there first; theirs is as good as ours.
		if kf, kerr := kernelFromTree(dir, name, version); kerr == nil {
			return kf, nil
		}
		return nil, fmt.Errorf("images: kernel cache: %w", err)
	}
	return kernelFromTree(dir, name, version)
}

// downloadDeb downloads package name at version with apt-get download
// into a temporary directory under parent and unpacks it there; it
// returns the unpacked tree (to be renamed into the cache) and what
// removes the rest. what names it in progress lines.
func downloadDeb(ctx context.Context, name, version, parent, what string, progress io.Writer) (string, func(), error) {
	tmp, err := os.MkdirTemp(parent, ".fetch-")
	if err != nil {
		return "", nil, fmt.Errorf("images: %s cache: %w", what, err)
	}
	cleanup := func() { os.RemoveAll(tmp) }
	fmt.Fprintf(progress, "%s: downloading %s %s with apt\n", what, name, version)
	dl := exec.CommandContext(ctx, "apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", name+"="+version)
	dl.Dir = tmp
	dl.Stdout, dl.Stderr = progress, progress
	if err := dl.Run(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("images: apt-get download %s=%s: %w (is the package list current? run apt-get update)", name, version, err)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		cleanup()
		return "", nil, fmt.Errorf("images: apt-get download %s left %d .deb files, want 1", name, len(debs))
	}
	fmt.Fprintf(progress, "%s: unpacking %s\n", what, filepath.Base(debs[0]))
	root := filepath.Join(tmp, "root")
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("images: dpkg-deb -x %s: %v: %s", filepath.Base(debs[0]), err, bytes.TrimSpace(out))
	}
	return root, cleanup, nil
}

// kernelFromTree finds the kernel image and module tree in an unpacked
// kernel package.
func kernelFromTree(dir, name, version string) (*KernelFiles, error) {
	mods, _ := filepath.Glob(filepath.Join(dir, "lib/modules/*"))
	if len(mods) != 1 {
		return nil, fmt.Errorf("images: %s: found %d module trees, want 1: %w", dir, len(mods), ErrNoKernel)
	}
	ver := filepath.Base(mods[0])
	img := filepath.Join(dir, "boot", "vmlinuz-"+ver)
	if err := checkBzImage(img); err != nil {
		return nil, err
	}
	return &KernelFiles{Version: ver, Image: img, ModulesDir: mods[0], Origin: "debian " + name + " " + version}, nil
}

func aptDependsImage(ctx context.Context, pkg string) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("images: apt-cache depends %s: %w (unknown package? run apt-get update)", pkg, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		dep, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Depends: ")
		if ok && strings.HasPrefix(dep, "linux-image-") {
			return strings.Trim(dep, "<>"), nil
		}
	}
	return "", fmt.Errorf("images: package %s depends on no linux-image package: %w", pkg, ErrNoKernel)
}

func aptCandidate(ctx context.Context, pkg string) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "show", "--no-all-versions", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("images: apt-cache show %s: %w (run apt-get update)", pkg, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Version: "); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("images: apt-cache show %s: no Version field: %w", pkg, ErrNoKernel)
}
