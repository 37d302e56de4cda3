// Package benchvm is what the VM benchmarks (bench/dlm, bench/ha) share:
// a cluster under `locus qemu` in a state directory of their own, with
// a client configuration of its own (so the host's is not touched), and
// the means to run locus on the host against it and commands on its
// nodes through their exec channels.
package benchvm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/locus-ssi/locus/qemu"
)

// Cluster is one benchmark's cluster.
type Cluster struct {
	Locus string // the locus binary
	Image string // the image directory
	State string // the cluster's state directory
	env   []string
}

// New is a cluster booted (by Qemu("up", ...)) from image into state.
func New(locus, image, state string) *Cluster {
	return &Cluster{Locus: locus, Image: image, State: state, env: append(os.Environ(), "XDG_STATE_HOME="+filepath.Join(state, "xdg"),
		"LOCUSCONFIG="+filepath.Join(state, "xdg", "locus-config"), "LOCUS_ENDPOINT=", "LOCUS_CONTEXT=")}
}

// Host runs locus on the host against the cluster's API (the context
// `qemu up` saved).
func (c *Cluster) Host(args ...string) (string, error) {
	cmd := exec.Command(c.Locus, args...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("locus %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Qemu runs locus qemu with the cluster's image and state directories.
func (c *Cluster) Qemu(args ...string) (string, error) {
	return c.Host(append([]string{"qemu", "--image-dir", c.Image, "--state-dir", c.State}, args...)...)
}

// On runs argv on node n through its exec channel, with stdin; a
// non-zero exit is an error that carries the output.
func (c *Cluster) On(n int, timeout time.Duration, stdin []byte, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := qemu.Exec(ctx, qemu.ExecPath(c.State, n), argv, stdin)
	if err != nil {
		return "", fmt.Errorf("node %d: %v: %w", n, argv, err)
	}
	if res.Exit != 0 {
		return string(res.Stdout), fmt.Errorf("node %d: %v: exit %d: %s%s", n, argv, res.Exit, res.Stdout, res.Stderr)
	}
	return string(res.Stdout), nil
}

// Sh runs a busybox sh script on node n.
func (c *Cluster) Sh(n int, timeout time.Duration, script string) (string, error) {
	return c.On(n, timeout, nil, "/usr/local/bin/busybox", "sh", "-c", script)
}

// Push writes file into dir on node n's root (on a shared root, every
// node's).
func (c *Cluster) Push(n int, dir, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	return qemu.WriteFile(ctx, qemu.ExecPath(c.State, n), filepath.Join(dir, filepath.Base(file)), data)
}
