//go:build vm

package qemu_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/internal/testutil"
)

// TestVMSharedRoot boots the installed cluster with a CFS root: node 1
// serves its root partition, nodes 2-4 PXE-boot and mount it. Every
// node's / is then the one shared root: a file written on one node is
// read on the others, each node's level-2 service wrote into it, and
// /etc/hostname is each node's own.
func TestVMSharedRoot(t *testing.T) {
	imageDir := filepath.Join(t.TempDir(), "out")
	spec := []byte(`cluster: {name: vmcfs}
interconnect: {subnet: 10.87.0.0/24}
root: {source: cfs}
services:
  - {name: climbed, level: 2, oneshot: true, command: [/bin/sh, -c, "cat /etc/hostname >> /climbed"]}
`)
	start := time.Now()
	if _, err := testutil.BuildImage(context.Background(), shared.locus, imageDir, spec, os.Stderr); err != nil {
		t.Fatalf("build the CFS image: %v", err)
	}
	t.Logf("CFS image built in %.1fs", time.Since(start).Seconds())
	state := t.TempDir()
	locus := func(args ...string) (string, error) {
		full := append([]string{args[0], "--image-dir", imageDir, "--state-dir", state}, args[1:]...)
		return hostCLI(state)(full...)
	}
	t.Cleanup(func() {
		locus("qemu", "down")
		keepLogsOnFailure(t, state)
	})
	start = time.Now()
	up, _ := qemuUp(t, locus, "-n", "4", "--timeout", "8m", "--api-port", "17473")
	for _, n := range up {
		t.Logf("VM %d Up after %.1fs (guest %.1fs)", n.Number, time.Duration(n.UpAfter).Seconds(), n.GuestUp)
	}
	t.Logf("4 nodes on one CFS root Up in %.1fs", time.Since(start).Seconds())

	run := func(node string, script string) string {
		t.Helper()
		out, err := locus("qemu", "exec", node, "--", "/bin/sh", "-c", script)
		if err != nil {
			t.Fatalf("node %s: %s: %v\n%s", node, script, err, out)
		}
		return out
	}
	// Written and closed on node 2, read on node 4 and on the server.
	run("2", "echo written-on-node-2 > /from-node2")
	for _, n := range []string{"4", "1"} {
		if got := run(n, "cat /from-node2"); strings.TrimSpace(got) != "written-on-node-2" {
			t.Errorf("node %s reads %q from the file node 2 wrote", n, got)
		}
	}
	// Appends from two nodes, in order, read on a third.
	run("3", "echo from-3 >> /appended")
	run("2", "echo from-2 >> /appended")
	if got := run("1", "cat /appended"); got != "from-3\nfrom-2\n" {
		t.Errorf("appends from nodes 3 then 2, read on node 1: %q", got)
	}
	// A rename on one node is seen at once on another.
	run("4", "mv /from-node2 /renamed")
	if got := run("3", "test -e /from-node2 && echo stale; cat /renamed"); strings.TrimSpace(got) != "written-on-node-2" {
		t.Errorf("after node 4's rename, node 3 sees %q", got)
	}
	// Every node ran its level-2 service in the shared root.
	got := run("3", "sort /climbed")
	if got != "node1\nnode2\nnode3\nnode4\n" {
		t.Errorf("level-2 services of the four nodes wrote %q into the shared /climbed", got)
	}
	// /etc/hostname is node-private, kept in /cluster/node<N>.
	for _, n := range []string{"1", "3"} {
		if got := run(n, "cat /etc/hostname /cluster/node"+n+"/etc/hostname"); got != "node"+n+"\nnode"+n+"\n" {
			t.Errorf("node %s's /etc/hostname and its private copy: %q", n, got)
		}
	}
	// The client nodes' root is the 9P mount; /tmp is their own.
	if got := run("2", "cat /proc/self/mountinfo"); !strings.Contains(got, " 9p 10.87.0.1 ") {
		t.Errorf("node 2's mounts show no 9p root from node 1:\n%s", got)
	}
	run("2", "echo private > /tmp/mine")
	if got, _ := locus("qemu", "exec", "3", "--", "/bin/sh", "-c", "cat /tmp/mine 2>/dev/null || echo absent"); strings.TrimSpace(got) != "absent" {
		t.Errorf("node 3 sees node 2's /tmp: %q", got)
	}
}
