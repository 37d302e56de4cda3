// Package testutil builds what the tests of several packages need: a
// static locus binary and a bootable image (real kernel, real initramfs).
package testutil

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/locus-ssi/locus/images"
	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/initramfs"
)

// LocusBinary returns $LOCUS_BIN when set (make test builds it, and the
// lean onnode and the node build beside it), else builds a static locus,
// onnode and locus-node into dir.
func LocusBinary(dir string) (string, error) {
	if p := os.Getenv("LOCUS_BIN"); p != "" {
		return p, nil
	}
	for _, c := range []struct{ out, pkg, tags string }{
		{"locus", "locus", ""}, {"onnode", "onnode", ""}, {images.NodeBinaryName, "locus", "nodeonly"},
	} {
		cmd := exec.Command("go", "build", "-trimpath", "-tags="+c.tags, "-o", filepath.Join(dir, c.out), "github.com/locus-ssi/locus/cmd/"+c.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build %s: %v: %s", c.out, err, b)
		}
	}
	return filepath.Join(dir, "locus"), nil
}

// BuildImage builds an image from specYAML into out with the locus binary.
func BuildImage(ctx context.Context, locus, out string, specYAML []byte, progress io.Writer) (*layout.Manifest, error) {
	spec := ""
	if specYAML != nil {
		spec = filepath.Join(out, "..", filepath.Base(out)+"-spec.yaml")
		if err := os.WriteFile(spec, specYAML, 0o644); err != nil {
			return nil, err
		}
	}
	return images.Build(ctx, images.BuildOptions{SpecPath: spec, Out: out, Locus: locus, Compress: "zstd", Progress: progress}, initramfs.ForImages)
}
