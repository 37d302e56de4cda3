package images

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/internal/unpack"
)

// maxRootBytes bounds the file data unpacked into a root (a sparse or
// hostile tarball cannot fill the build machine's disk).
const maxRootBytes = 64 << 30

// RootInput is what the shared root's content is made from.
type RootInput struct {
	Spec *clusterspec.Spec
	// SpecDir is the directory relative paths in the spec start from.
	SpecDir string
	// Initramfs is the built initramfs (the minimal root's content).
	Initramfs string
	// Locus is the static locus binary, put in non-minimal roots as
	// /usr/local/sbin/locus.
	Locus    string
	CacheDir string
	Progress io.Writer
}

// PrepareRoot fills dir (which must exist and be empty) with the shared
// root's content as the spec chooses it.
func PrepareRoot(ctx context.Context, in RootInput, dir string) error {
	if in.Progress == nil {
		in.Progress = io.Discard
	}
	r := in.Spec.Root
	switch r.Content {
	case clusterspec.ContentMinimal, "":
		f, err := os.Open(in.Initramfs)
		if err != nil {
			return fmt.Errorf("images: root: %w", err)
		}
		defer f.Close()
		root, err := os.OpenRoot(dir)
		if err != nil {
			return fmt.Errorf("images: root: %w", err)
		}
		defer root.Close()
		if err := unpack.CPIO(f, root, unpack.Options{MaxBytes: maxRootBytes}); err != nil {
			return fmt.Errorf("images: minimal root from the initramfs: %w", err)
		}
		fmt.Fprintf(in.Progress, "root: minimal (the initramfs' tools)\n")
		return nil
	case clusterspec.ContentTarball:
		p := r.Tarball
		if !filepath.IsAbs(p) {
			p = filepath.Join(in.SpecDir, p)
		}
		if err := unpackTarball(p, dir, in.Progress); err != nil {
			return err
		}
	case clusterspec.ContentDebootstrap:
		cached, err := debootstrap(ctx, r, in.CacheDir, in.Progress)
		if err != nil {
			return err
		}
		// cp -a keeps what a root needs (devices, hard links, xattrs,
		// capabilities) and reflinks where the filesystem can.
		if b, err := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", cached+"/.", dir).CombinedOutput(); err != nil {
			return fmt.Errorf("images: copy the debootstrap root: %v: %s", err, strings.TrimSpace(string(b)))
		}
	default:
		return fmt.Errorf("images: root.content %q is not known", r.Content)
	}
	b, err := os.ReadFile(in.Locus)
	if err != nil {
		return fmt.Errorf("images: root: locus binary: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("images: root: %w", err)
	}
	defer root.Close()
	if err := root.MkdirAll("usr/local/sbin", 0o755); err != nil {
		return fmt.Errorf("images: root: %w", err)
	}
	if err := root.WriteFile("usr/local/sbin/locus", b, 0o755); err != nil {
		return fmt.Errorf("images: root: %w", err)
	}
	return nil
}

// unpackTarball unpacks a root filesystem tar into dir. An OCI image
// archive (skopeo/podman "oci-archive", or `docker save`) is recognised by
// its layout files, and its layers for linux/amd64 are applied in order,
// whiteouts included.
func unpackTarball(tarball, dir string, progress io.Writer) error {
	f, err := os.Open(tarball)
	if err != nil {
		return fmt.Errorf("images: root.tarball: %w", err)
	}
	defer f.Close()
	src, err := os.MkdirTemp(filepath.Dir(dir), ".tarball-")
	if err != nil {
		return fmt.Errorf("images: root.tarball: %w", err)
	}
	defer os.RemoveAll(src)
	sr, err := os.OpenRoot(src)
	if err != nil {
		return err
	}
	defer sr.Close()
	if err := unpack.Tar(f, sr, unpack.Options{MaxBytes: maxRootBytes}); err != nil {
		return fmt.Errorf("images: root.tarball %s: %w", tarball, err)
	}
	layers, kind, err := imageLayers(sr)
	if err != nil {
		return fmt.Errorf("images: root.tarball %s: %w", tarball, err)
	}
	if layers == nil {
		// A plain root filesystem: it is the root.
		if err := os.Remove(dir); err != nil {
			return fmt.Errorf("images: root: %w", err)
		}
		if err := os.Rename(src, dir); err != nil {
			return fmt.Errorf("images: root: %w", err)
		}
		fmt.Fprintf(progress, "root: tarball %s\n", filepath.Base(tarball))
		return nil
	}
	dr, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer dr.Close()
	for i, l := range layers {
		if err := applyLayer(sr, l, dr); err != nil {
			return fmt.Errorf("images: root.tarball %s: layer %d of %d (%s): %w", tarball, i+1, len(layers), l.path, err)
		}
	}
	fmt.Fprintf(progress, "root: %s image %s, %d layers\n", kind, filepath.Base(tarball), len(layers))
	return nil
}

type layer struct {
	path   string // inside the archive
	digest string // sha256 hex, if known
}

type ociDescriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Platform  *struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
	} `json:"platform"`
}

// imageLayers returns the layers of an OCI layout or `docker save`
// archive unpacked in r, or nil if it is neither.
func imageLayers(r *os.Root) ([]layer, string, error) {
	if _, err := r.Stat("oci-layout"); err == nil {
		var idx struct {
			Manifests []ociDescriptor `json:"manifests"`
		}
		if err := readJSON(r, "index.json", &idx); err != nil {
			return nil, "", err
		}
		for depth := 0; depth < 4; depth++ {
			d, err := pickManifest(idx.Manifests)
			if err != nil {
				return nil, "", err
			}
			blob, err := blobPath(d.Digest)
			if err != nil {
				return nil, "", err
			}
			var m struct {
				MediaType string          `json:"mediaType"`
				Manifests []ociDescriptor `json:"manifests"`
				Layers    []ociDescriptor `json:"layers"`
			}
			if err := readJSON(r, blob, &m); err != nil {
				return nil, "", err
			}
			if len(m.Manifests) > 0 { // an index of per-platform images
				idx.Manifests = m.Manifests
				continue
			}
			var ls []layer
			for _, d := range m.Layers {
				p, err := blobPath(d.Digest)
				if err != nil {
					return nil, "", err
				}
				ls = append(ls, layer{path: p, digest: strings.TrimPrefix(d.Digest, "sha256:")})
			}
			if len(ls) == 0 {
				return nil, "", errors.New("OCI image with no layers")
			}
			return ls, "OCI", nil
		}
		return nil, "", errors.New("OCI index nested too deep")
	}
	if _, err := r.Stat("manifest.json"); err == nil {
		var ms []struct {
			Layers []string `json:"Layers"`
		}
		if err := readJSON(r, "manifest.json", &ms); err != nil {
			return nil, "", err
		}
		if len(ms) != 1 || len(ms[0].Layers) == 0 {
			return nil, "", fmt.Errorf("docker archive: want one image with layers, found %d images", len(ms))
		}
		var ls []layer
		for _, p := range ms[0].Layers {
			if _, err := unpack.Clean(p); err != nil {
				return nil, "", fmt.Errorf("docker archive: layer %q: %w", p, err)
			}
			ls = append(ls, layer{path: p})
		}
		return ls, "docker", nil
	}
	return nil, "", nil
}

func pickManifest(ds []ociDescriptor) (ociDescriptor, error) {
	var plain []ociDescriptor
	for _, d := range ds {
		if d.Platform == nil {
			plain = append(plain, d)
			continue
		}
		if d.Platform.OS == "linux" && d.Platform.Architecture == "amd64" {
			return d, nil
		}
	}
	if len(plain) == 1 {
		return plain[0], nil
	}
	return ociDescriptor{}, fmt.Errorf("OCI index: no single linux/amd64 image among %d manifests", len(ds))
}

func blobPath(digest string) (string, error) {
	hexd, ok := strings.CutPrefix(digest, "sha256:")
	if _, err := hex.DecodeString(hexd); !ok || err != nil || len(hexd) != 64 {
		return "", fmt.Errorf("digest %q: want sha256:<64 hex digits>", digest)
	}
	return "blobs/sha256/" + hexd, nil
}

func readJSON(r *os.Root, name string, v any) error {
	b, err := r.ReadFile(name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// applyLayer unpacks one layer over dst, checking its digest.
func applyLayer(src *os.Root, l layer, dst *os.Root) error {
	f, err := src.Open(l.path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if err := unpack.Tar(io.TeeReader(f, h), dst, unpack.Options{Whiteouts: true, MaxBytes: maxRootBytes}); err != nil {
		return err
	}
	// The tar reader stops at the end-of-archive marker; the digest is of
	// the whole blob.
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if l.digest != "" && hex.EncodeToString(h.Sum(nil)) != l.digest {
		return fmt.Errorf("digest mismatch: blob is not sha256:%s", l.digest)
	}
	return nil
}

// debootstrap returns a cached Debian root for r, making it if needed.
// The cache is keyed by suite, mirror and package list; a root being made
// is invisible to other builds until it is complete.
func debootstrap(ctx context.Context, r clusterspec.Root, cacheDir string, progress io.Writer) (string, error) {
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", errors.New("images: root.content debootstrap: debootstrap not found (make deps installs it)")
	}
	if os.Geteuid() != 0 {
		return "", errors.New("images: root.content debootstrap: debootstrap needs root (it makes device nodes and sets owners)")
	}
	pkgs := strings.Join(r.Packages, ",")
	sum := sha256.Sum256([]byte(r.Suite + "\n" + r.Mirror + "\n" + pkgs))
	dir := filepath.Join(cacheDir, "rootfs")
	final := filepath.Join(dir, fmt.Sprintf("debootstrap-%s-%x", r.Suite, sum[:8]))
	if _, err := os.Stat(final); err == nil {
		fmt.Fprintf(progress, "root: debootstrap %s (cached)\n", r.Suite)
		return final, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("images: debootstrap cache: %w", err)
	}
	tmp, err := os.MkdirTemp(dir, ".debootstrap-")
	if err != nil {
		return "", fmt.Errorf("images: debootstrap cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	args := []string{"--variant=minbase"}
	if pkgs != "" {
		args = append(args, "--include="+pkgs)
	}
	args = append(args, r.Suite, tmp, r.Mirror)
	fmt.Fprintf(progress, "root: debootstrap %s from %s (%d extra packages)...\n", r.Suite, r.Mirror, len(r.Packages))
	start := time.Now()
	cmd := exec.CommandContext(ctx, "debootstrap", args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("images: debootstrap: %w", err)
	}
	// Progress: debootstrap's own "I: ..." lines; the last few lines are
	// kept for the error if it fails.
	var tail []string
	retrieved := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "I: Retrieving"):
			if retrieved++; retrieved%25 == 0 {
				fmt.Fprintf(progress, "root:   %d packages retrieved\n", retrieved)
			}
		case strings.HasPrefix(line, "I: Installing") || strings.HasPrefix(line, "I: Base system"):
			fmt.Fprintf(progress, "root:   %s\n", strings.TrimPrefix(line, "I: "))
		}
		tail = append(tail, line)
		if len(tail) > 8 {
			tail = tail[1:]
		}
	}
	if err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("images: debootstrap %s: %v:\n%s\n(its log: %s/debootstrap/debootstrap.log, removed)", r.Suite, err, strings.Join(tail, "\n"), tmp)
	}
	// Downloaded packages are not part of the root.
	debs, _ := filepath.Glob(filepath.Join(tmp, "var/cache/apt/archives/*.deb"))
	for _, d := range debs {
		os.Remove(d)
	}
	if err := os.Rename(tmp, final); err != nil {
		if _, serr := os.Stat(final); serr == nil {
			return final, nil // a parallel build made it first
		}
		return "", fmt.Errorf("images: debootstrap cache: %w", err)
	}
	fmt.Fprintf(progress, "root: debootstrap %s done in %s\n", r.Suite, time.Since(start).Round(time.Second))
	return final, nil
}
