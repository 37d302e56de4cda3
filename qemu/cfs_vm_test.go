//go:build vm

package qemu_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/events"

	"github.com/diskfs/go-diskfs"
)

// TestVMSharedRoot boots the installed cluster with a CFS root: node 1
// serves its root partition, nodes 2-4 PXE-boot and mount it. Every
// node's / is then the one shared root: a file written on one node is
// read on the others, each node's level-2 service wrote into it, and
// /etc/hostname is each node's own. Then the cluster's run level goes
// down and up on every node, and the whole cluster shuts down cleanly:
// the CFS server last, its filesystem clean, nothing written lost.
func TestVMSharedRoot(t *testing.T) {
	locus, state := specCluster(t, "CFS", []byte(`cluster: {name: vmcfs}
interconnect: {subnet: 10.87.0.0/24}
root: {source: cfs}
services:
  - {name: climbed, level: 2, oneshot: true, command: [/bin/sh, -c, "cat /etc/hostname >> /climbed"]}
  - {name: level3-daemon, level: 3, command: [/bbin/sleep, "100000"]}
`))
	start := time.Now()
	up, _ := qemuUp(t, locus, "-n", "4", "--timeout", "8m", "--api-port", "17473")
	for _, n := range up {
		t.Logf("VM %d Up after %.1fs (guest %.1fs)", n.Number, time.Duration(n.UpAfter).Seconds(), n.GuestUp)
	}
	// Nodes 2-4 boot together once node 1 serves them, and climb in
	// parallel: they reach the run level within seconds of each other.
	var first, last time.Time
	for _, n := range up[1:] {
		at := n.Started.Add(time.Duration(n.UpAfter))
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	t.Logf("nodes 2-4 reached the run level within %.1fs of each other", last.Sub(first).Seconds())
	if last.Sub(first) > 30*time.Second {
		t.Errorf("nodes 2-4 reached the run level %.1fs apart: not in parallel", last.Sub(first).Seconds())
	}
	t.Logf("4 nodes on one CFS root Up in %.1fs", time.Since(start).Seconds())

	run := func(node string, script string) string {
		t.Helper()
		start := time.Now()
		out, err := locus("qemu", "exec", node, "--", "/bin/sh", "-c", script)
		if err != nil {
			// Seen once in five runs under TCG: the shell on a node that
			// had just come up took two minutes, then exited 1 with no
			// output. Say so, and try once more: a second failure fails.
			t.Logf("node %s: %s: %v after %.1fs (%q); trying again", node, script, err, time.Since(start).Seconds(), out)
			// What the node's processes wait on, for whoever chases it.
			ps, _ := locus("qemu", "exec", node, "--", "/bin/sh", "-c", `for p in /proc/[0-9]*; do echo "$p $(cat $p/comm) $(cat $p/wchan)"; done`)
			t.Logf("node %s processes and their wait channels:\n%s", node, ps)
			if out, err = locus("qemu", "exec", node, "--", "/bin/sh", "-c", script); err != nil {
				t.Fatalf("node %s: %s: %v\n%s", node, script, err, out)
			}
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
	// The client nodes' root is the relay's FUSE mount; /tmp is their own.
	if got := run("2", "cat /proc/self/mountinfo"); !strings.Contains(got, " fuse.cfs cfs ") {
		t.Errorf("node 2's mounts show no FUSE root from its relay:\n%s", got)
	}
	run("2", "echo private > /tmp/mine")
	if got, _ := locus("qemu", "exec", "3", "--", "/bin/sh", "-c", "cat /tmp/mine 2>/dev/null || echo absent"); strings.TrimSpace(got) != "absent" {
		t.Errorf("node 3 sees node 2's /tmp: %q", got)
	}
	// One process space over the four nodes.
	checkProcesses(t, run)

	// The cluster's run level, changed from a node: every node comes down
	// to it (stopping its level-3 daemon) and goes back up.
	host := hostCLI(state)
	levels := func(want int) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			out, err := host("runlevel", "--output", "json")
			var rl struct {
				RunLevel int `json:"runlevel"`
				Nodes    []struct {
					Node     int `json:"node"`
					RunLevel int `json:"runlevel"`
				} `json:"nodes"`
			}
			ok := err == nil && json.Unmarshal([]byte(out), &rl) == nil && rl.RunLevel == want && len(rl.Nodes) == 4
			for _, n := range rl.Nodes {
				ok = ok && n.RunLevel == want
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("not every node at run level %d within 60s: %v\n%s", want, err, out)
			}
			time.Sleep(time.Second)
		}
	}
	levels(3)
	run("3", "locus runlevel 2")
	levels(2)
	if _, ok := lastEvent(state, 4, func(e events.Event) bool {
		return e.Kind == events.ServiceStopped && e.Name == "level3-daemon" && e.Level == 3
	}); !ok {
		t.Errorf("node 4 did not stop its level-3 daemon going to run level 2")
	}
	if out, err := host("runlevel", "3"); err != nil {
		t.Fatalf("runlevel 3 from the host: %v\n%s", err, out)
	}
	levels(3)

	// Whole-cluster shutdown: every node ShuttingDown then Down (never
	// fenced), the CFS server last; its filesystem is left clean.
	if out, err := host("shutdown", "--yes"); err != nil {
		t.Fatalf("shutdown: %v\n%s", err, out)
	}
	waitPoweredOff(t, locus, 4, 3*time.Minute)
	if _, ok := lastEvent(state, 1, func(e events.Event) bool {
		return e.Kind == events.RootUnmounted && e.Attrs[events.AttrClean] == "true"
	}); !ok {
		t.Errorf("node 1 did not leave its shared root clean")
	}
	for _, n := range []int{2, 3, 4} {
		if _, ok := lastEvent(state, 1, func(e events.Event) bool {
			return e.Kind == events.TransitionApplied && e.Subject == n && e.State == string(clms.ShuttingDown)
		}); !ok {
			t.Errorf("node 1 never applied node %d ShuttingDown", n)
		}
	}
	for n := 1; n <= 4; n++ {
		if e, ok := lastEvent(state, n, func(e events.Event) bool { return e.Kind == events.Fenced }); ok {
			t.Errorf("node %d fenced a node during a clean shutdown: %s", n, e)
		}
	}
	// Its root partition, as the shutdown left it on node 1's disk:
	// e2fsck finds it clean (no journal to replay, nothing to fix), and
	// the files written from the other nodes are in it.
	checkRootPartition(t, filepath.Join(state, "node1", "disk.qcow2"))
	// Node 1 boots again from its disk: what was written is there.
	if out, err := locus("qemu", "start", "1"); err != nil {
		t.Fatalf("start 1: %v\n%s", err, out)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(2 * time.Second) {
		out, err := locus("qemu", "exec", "1", "--", "cat", "/renamed", "/appended")
		if err == nil {
			if out != "written-on-node-2\nfrom-3\nfrom-2\n" {
				t.Errorf("after the shutdown, node 1 reads %q", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 1 not back within 2 min: %v\n%s", err, out)
		}
	}
}

// waitPoweredOff waits until all n VMs of the cluster are off after a
// locus shutdown.
func waitPoweredOff(t *testing.T, locus func(...string) (string, error), n int, within time.Duration) {
	t.Helper()
	stopped := time.Now()
	for {
		out, _ := locus("qemu", "status", "--output", "json")
		if strings.Count(out, `"stage":"stopped"`) == n {
			t.Logf("the cluster powered off %.1fs after locus shutdown", time.Since(stopped).Seconds())
			return
		}
		if time.Since(stopped) > within {
			t.Fatalf("not every VM powered off %s after locus shutdown:\n%s", within, out)
		}
		time.Sleep(2 * time.Second)
	}
}

// rootPartition copies the locus-root partition (the second) out of a
// raw disk image into a file of its own and returns its path.
func rootPartition(t *testing.T, disk string) string {
	t.Helper()
	d, err := diskfs.Open(disk, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	part := filepath.Join(t.TempDir(), "root.img")
	w, err := os.Create(part)
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.ReadPartitionContents(2, w)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	return part
}

// checkRootPartition copies the locus-root partition out of a node's disk
// overlay and checks it with e2fsck and debugfs.
func checkRootPartition(t *testing.T, overlay string) {
	t.Helper()
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	if b, err := exec.Command("qemu-img", "convert", "-O", "raw", overlay, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert %s: %v\n%s", overlay, err, b)
	}
	part := rootPartition(t, raw)
	if b, err := exec.Command("e2fsck", "-fn", part).CombinedOutput(); err != nil {
		t.Errorf("e2fsck of the shared root after the shutdown: %v\n%s", err, b)
	} else {
		t.Logf("e2fsck: the shared root is clean after the shutdown")
	}
	if b, _ := exec.Command("debugfs", "-R", "cat /renamed", part).Output(); string(b) != "written-on-node-2\n" {
		t.Errorf("the shared root on disk holds %q in /renamed", b)
	}
}
