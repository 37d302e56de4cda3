package images

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// NodeBinaryName is the node build of locus (make build's bin/locus-node,
// built with -tags nodeonly): the same daemon, init and verbs, without
// the image builder and the QEMU verbs, which a node never runs. Found
// beside the locus binary a build is given, it is the one the image
// carries: about a fifth smaller, so a PXE node downloads less.
const NodeBinaryName = "locus-node"

// NodeBinary returns the binary an image built with locus should carry:
// the node build beside it when it is from the same build (the same
// version, and made within minutes of it, as make build makes both),
// else locus itself; and why.
func NodeBinary(locus string) (string, string) {
	node := filepath.Join(filepath.Dir(locus), NodeBinaryName)
	ns, err := os.Stat(node)
	if err != nil {
		return locus, "no " + NodeBinaryName + " beside it"
	}
	ls, err := os.Stat(locus)
	if err != nil {
		return locus, err.Error()
	}
	if d := ls.ModTime().Sub(ns.ModTime()); d > sameBuild || d < -sameBuild {
		return locus, fmt.Sprintf("%s was built %s apart from it: not the same build", node, d.Abs().Round(time.Second))
	}
	lv, err := binaryVersion(locus)
	if err != nil {
		return locus, err.Error()
	}
	nv, err := binaryVersion(node)
	if err != nil {
		return locus, err.Error()
	}
	if lv != nv {
		return locus, fmt.Sprintf("%s is version %s, not %s", node, nv, lv)
	}
	return node, "the node build"
}

// sameBuild is how far apart make build makes locus and locus-node.
const sameBuild = 5 * time.Minute

// binaryVersion is what locus version says of the binary at p (it is a
// static linux/amd64 binary, as the machine that builds images is).
func binaryVersion(p string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, p, "version", "--output", "json").Output()
	if err != nil {
		return "", fmt.Errorf("images: %s version: %w", p, err)
	}
	var v struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(out, &v); err != nil || v.Version == "" {
		return "", fmt.Errorf("images: %s version: %q is not its version", p, out)
	}
	return v.Version, nil
}
