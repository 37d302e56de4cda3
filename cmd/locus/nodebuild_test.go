package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNodeBuildLeavesOutTheHostVerbs builds locus as make build's
// locus-node (-tags nodeonly) and runs it: the cluster, process and
// machine verbs are there, image and qemu are not, nor is their group in
// the help.
func TestNodeBuildLeavesOutTheHostVerbs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bin := filepath.Join(t.TempDir(), "locus-node")
	build := exec.Command("go", "build", "-tags", "nodeonly", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags nodeonly: %v\n%s", err, out)
	}
	help, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("locus-node --help: %v\n%s", err, help)
	}
	for _, want := range []string{"cluster", "onnode", "ps", "node", "netboot", "install", "The cluster:"} {
		if !strings.Contains(string(help), want) {
			t.Errorf("the node build's help lacks %q:\n%s", want, help)
		}
	}
	if strings.Contains(string(help), "QEMU clusters") {
		t.Errorf("the node build's help shows the QEMU group:\n%s", help)
	}
	for _, verb := range []string{"image", "qemu"} {
		out, err := exec.Command(bin, verb, "--help").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "unknown command") {
			t.Errorf("locus-node %s = %v, %s; want an unknown command", verb, err, out)
		}
	}
	if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "locus ") {
		t.Errorf("locus-node version = %v, %s", err, out)
	}
}
