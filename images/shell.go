package images

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// ShellPackage is the Debian package whose static busybox is the minimal
// root's job-control shell: u-root's gosh (the image's /bin/sh) has no
// job control, so `sh` on $PATH (/usr/local/bin/sh) is busybox's ash,
// which has it (jobs, fg, bg, ^Z), for people at a terminal; scripts
// that name /bin/sh keep gosh.
const ShellPackage = "busybox-static"

// FetchShell returns the path of busybox-static's binary, downloaded with
// apt into the cache the first time.
func FetchShell(ctx context.Context, cacheDir string, progress io.Writer) (string, error) {
	for _, tool := range []string{"apt-cache", "apt-get", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("images: %s not found: fetching %s needs apt", tool, ShellPackage)
		}
	}
	version, err := aptCandidate(ctx, ShellPackage)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cacheDir, "debs", ShellPackage+"_"+version)
	bin := filepath.Join(dir, "bin", "busybox")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("images: shell cache: %w", err)
	}
	root, cleanup, err := downloadDeb(ctx, ShellPackage, version, filepath.Dir(dir), "shell", progress)
	if err != nil {
		return "", err
	}
	defer cleanup()
	if err := os.Rename(root, dir); err != nil {
		if _, serr := os.Stat(bin); serr == nil {
			return bin, nil // a parallel build put it there first
		}
		return "", fmt.Errorf("images: shell cache: %w", err)
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("images: %s has no bin/busybox: %w", ShellPackage, err)
	}
	return bin, nil
}
