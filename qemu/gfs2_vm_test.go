//go:build vm

package qemu_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/qemu"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/events"
)

// TestVMGFS2Root: three nodes on one GFS2 root (images/clusterspec/examples/gfs2.yaml's
// topology): every node mounts the shared disk itself, under the kernel's
// DLM driven by the membership. What one node writes another reads at
// once; appends from two nodes under fcntl locks interleave without loss; a node killed
// mid-write is fenced, and the survivors replay its journal and go on;
// after a clean shutdown fsck.gfs2 finds the filesystem clean. A libdlm3
// C client runs on the nodes beside the Go one.
func TestVMGFS2Root(t *testing.T) {
	locus, state := specCluster(t, "gfs2", []byte(`cluster: {name: vmgfs}
interconnect: {subnet: 10.87.0.0/24}
root:
  source: gfs2
  gfs2: {journals: 4, size_mb: 512}
`+haSpec))
	start := time.Now()
	qemuUp(t, locus, "-n", "3", "--timeout", "8m", "--api-port", "17476")
	t.Logf("3 nodes Up on one GFS2 root in %.1fs", time.Since(start).Seconds())
	run := func(node, script string) string {
		t.Helper()
		out, err := locus("qemu", "exec", node, "--", "/usr/local/bin/busybox", "sh", "-c", script)
		if err != nil {
			t.Fatalf("on node %s: %q: %v\n%s", node, script, err, out)
		}
		return out
	}
	for _, n := range []string{"1", "2", "3"} {
		if got := run(n, "grep ' / / ' /proc/self/mountinfo"); !strings.Contains(got, " - gfs2 ") {
			t.Errorf("node %s's root is not the GFS2 disk:\n%s", n, got)
		}
	}
	waitSpace(t, locus, "root", 1, 2, 3)
	host := hostCLI(state)
	// The HA singleton runs from the shared root, on node 3 or 2 (the
	// first Up of its list when the master placed it; no failback); an
	// operator's move puts it on node 3.
	if in := serviceInstance(t, host, "solo", 0, time.Minute); in.Node != 3 {
		checkServes(t, locus, "1", fmt.Sprintf("10.87.0.%d", in.Node), 8081, in.Node)
		if out, err := host("service", "move", "solo", "--to", "3"); err != nil {
			t.Fatalf("service move solo --to 3: %v\n%s", err, out)
		}
	}
	serviceInstance(t, host, "solo", 3, time.Minute)
	checkServes(t, locus, "1", "10.87.0.3", 8081, 3)
	// The cluster IP: directed by node 3, both web instances behind it;
	// a client on node 1 is answered by both.
	serviceInstance(t, host, "web", 2, time.Minute)
	serviceInstance(t, host, "web", 3, time.Minute)
	// The first of directors [3, 2] Up when the master chose: node 3
	// mostly, node 2 when it came Up first (no failback either way).
	firstDirector := waitClusterIP(t, host, 0, []string{"10.87.0.2", "10.87.0.3"}, time.Minute).Director.Node
	t.Logf("cluster IP directed by node %d", firstDirector)
	serviceInstance(t, host, "echo", 2, time.Minute)
	out := newOutsider(t, state)
	// An operator moves the director to node 2, then to node 3 (which
	// is killed below), a connection held through each move.
	if firstDirector == 3 {
		moveDirector(t, locus, host, out, 2)
	}
	if gap := moveDirector(t, locus, host, out, 3); gap > 2*time.Second {
		t.Errorf("the cluster IP went unanswered %v while it moved from node 2 to node 3", gap)
	}
	seen := map[string]int{}
	for range 12 {
		if got, err := fetch(locus, "1", clusterIP, 8080); err == nil {
			seen[got]++
		}
	}
	t.Logf("12 requests to the cluster IP from node 1: %v", seen)
	if seen["node2"] == 0 || seen["node3"] == 0 {
		t.Errorf("the cluster IP did not spread requests over nodes 2 and 3: %v", seen)
	}
	seen = map[string]int{}
	for range 12 {
		if got, err := out.get(clusterIP, 8080); err == nil {
			seen[got]++
		}
	}
	t.Logf("12 requests to the cluster IP from outside the cluster (10.87.0.200 on the segment): %v", seen)
	if seen["node2"] == 0 || seen["node3"] == 0 {
		t.Errorf("the cluster IP did not spread an outside client's requests over nodes 2 and 3: %v", seen)
	}
	stopClient := make(chan struct{})
	probes := clientLoop(out, stopClient)

	// Written on node 2, read on node 3 at once.
	note := fmt.Sprintf("from node 2 at %d", time.Now().UnixNano())
	run("2", "echo '"+note+"' > /note")
	if got := strings.TrimSpace(run("3", "cat /note")); got != note {
		t.Errorf("node 3 read %q, node 2 wrote %q", got, note)
	}

	// Appends from two nodes at once, each under a clusterwide fcntl
	// lock (locus fs lock): every line of each, none lost. Without a
	// lock, Debian 6.1's GFS2 loses some: an O_APPEND write takes the
	// inode's glock only shared, to read the size, drops it, and takes
	// it exclusively later (fs/gfs2/file.c, gfs2_file_write_iter), so
	// two nodes can write at one offset; seen here twice in ten runs.
	appender := func(node, tag string) <-chan bgResult {
		return bgExec(locus, node, "/usr/local/bin/busybox", "sh", "-c",
			"i=0; while [ $i -lt 100 ]; do locus fs lock /append.log -- /usr/local/bin/busybox sh -c \"echo "+tag+"-$i >> /append.log\" || exit 1; i=$((i+1)); done")
	}
	a2, a3 := appender("2", "n2"), appender("3", "n3")
	for _, ch := range []<-chan bgResult{a2, a3} {
		if r := <-ch; r.err != nil {
			t.Fatalf("appender: %v\n%s", r.err, r.out)
		}
	}
	lines := strings.Split(strings.TrimSpace(run("1", "cat /append.log")), "\n")
	count := map[string]int{}
	for _, l := range lines {
		count[l]++
	}
	var missing, extra []string
	for _, w := range []string{"n2", "n3"} {
		for i := 0; i < 100; i++ {
			l := fmt.Sprintf("%s-%d", w, i)
			switch c := count[l]; {
			case c == 0:
				missing = append(missing, l)
			case c > 1:
				extra = append(extra, fmt.Sprintf("%q x%d", l, c))
			}
			delete(count, l)
		}
	}
	for l, c := range count {
		extra = append(extra, fmt.Sprintf("%q x%d", l, c))
	}
	if len(missing) > 0 || len(extra) > 0 || len(lines) != 200 {
		t.Errorf("%d lines appended from nodes 2 and 3 under fcntl locks (want 200): missing %v; not written or written twice %v", len(lines), missing, extra)
	}

	// POSIX (fcntl) locks exclude across nodes: the root is mounted
	// without localflocks, and the nodes' daemons order them on the
	// master.
	held := bgExec(locus, "2", "locus", "fs", "lock", "/plk", "--", "sleep", "8")
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, err := locus("qemu", "exec", "3", "--", "locus", "fs", "lock", "--wait", "0", "/plk", "--", "echo", "free")
		if err != nil && strings.Contains(out, "is locked") {
			break // node 2 holds it
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 3 never found /plk locked by node 2: %v\n%s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if out, err := locus("qemu", "exec", "3", "--", "locus", "fs", "lock", "/plk", "--", "echo", "got it"); err != nil || !strings.Contains(out, "got it") {
		t.Errorf("node 3 waiting for node 2's fcntl lock: %v\n%s", err, out)
	}
	got := time.Now()
	r := <-held
	if r.err != nil {
		t.Errorf("node 2's fcntl lock: %v\n%s", r.err, r.out)
	}
	if got.Before(r.at.Add(-time.Second)) {
		t.Errorf("node 3 got the fcntl lock %v before node 2 let it go", r.at.Sub(got))
	}

	// C programs written for libdlm work unchanged beside locus lock.
	checkLibdlmClients(t, locus, state, 2, 3)

	// Node 3 dies while writing /w3 (so it holds its lock in EX); node 2
	// then appends to it: granted once node 3 is fenced and Down and its
	// journal replayed.
	bgExec(locus, "3", "/usr/local/bin/busybox", "sh", "-c", "i=0; while true; do echo $i >> /w3; i=$((i+1)); done")
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := locus("qemu", "exec", "2", "--", "/usr/local/bin/busybox", "test", "-s", "/w3"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node 3's writer never wrote /w3")
		}
		time.Sleep(time.Second)
	}
	time.Sleep(2 * time.Second)
	evsBefore := map[int]int{}
	for _, n := range []int{1, 2} {
		evs, _ := qemu.ReadEventLog(qemu.EventLog(state, n))
		evsBefore[n] = len(evs)
	}
	killed := time.Now()
	defer func() {
		select {
		case <-stopClient:
		default:
			close(stopClient)
		}
	}()
	if out, err := locus("qemu", "kill", "3"); err != nil {
		t.Fatalf("kill 3: %v\n%s", err, out)
	}
	run("2", "echo after-node-3 >> /w3")
	wrote := time.Now()
	fenced := fenceTime(t, state, 3, killed)
	t.Logf("node 2 appended to node 3's file %.1fs after node 3 was killed, %.2fs after the supervisor fenced it", wrote.Sub(killed).Seconds(), wrote.Sub(fenced).Seconds())
	if wrote.Before(fenced) {
		t.Errorf("node 2 wrote to the file node 3 held %v before node 3 was fenced", fenced.Sub(wrote))
	}
	if got := run("1", "tail -n 1 /w3"); strings.TrimSpace(got) != "after-node-3" {
		t.Errorf("node 1 sees the end of /w3 as %q", got)
	}
	// Both survivors ran the root's lockspace without node 3 (asked of
	// their event feeds: node 3, rebooted by its fence, may be back in
	// it by the time a poll of the lockspaces would look).
	waitStarted(t, state, "root", "1,2", evsBefore)
	// Node 3's singleton moved to node 2 once node 3 was Down, and the
	// cluster IP's director with it.
	in := serviceInstance(t, host, "solo", 2, 30*time.Second)
	rep := waitClusterIP(t, host, 2, []string{"10.87.0.2"}, 30*time.Second)
	st, err := clusterStatus(host)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.Node == 3 {
			gap := in.Since.Sub(n.Since)
			t.Logf("solo on node 2 %v after node 3's Down (%s)", gap.Round(time.Millisecond), in.Why)
			if gap > 2*time.Second {
				t.Errorf("solo started on node 2 %v after node 3's Down (goal ≤ 2s)", gap)
			}
			dgap := rep.Director.Since.Sub(n.Since)
			t.Logf("cluster IP directed by node 2 %v after node 3's Down (%s)", dgap.Round(time.Millisecond), rep.Director.Why)
			if dgap > time.Second {
				t.Errorf("the new director was chosen %v after node 3's Down (goal ≤ 1s)", dgap)
			}
		}
	}
	checkServes(t, locus, "1", "10.87.0.2", 8081, 2)
	checkServes(t, locus, "1", clusterIP, 8080, 2)
	close(stopClient)
	var before, after int
	ps := probes()
	for _, p := range ps {
		switch {
		case p.from != "" && p.at.Before(killed):
			before++
		case p.from != "":
			after++
		}
	}
	gap, firstAfter := longestGap(ps, killed)
	t.Logf("a client outside the cluster asking the cluster IP every 50ms: %d answers before node 3 (the director) was killed, %d after; the longest time without an answer %.1fs, kill to the first answer asked after it %.1fs (the membership's detection and fence under TCG, then the move)",
		before, after, gap.Seconds(), firstAfter.Sub(killed).Seconds())
	if after == 0 {
		t.Error("the client got no answer from the cluster IP after the director's failure")
	}
	// Node 3 was fenced with a reboot: it boots again, mounts the root
	// and is back in its lockspace.
	for deadline := time.Now().Add(4 * time.Minute); ; {
		if st, err := clusterStatus(hostCLI(state)); err == nil && stateOf(st, 3) == clms.Up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node 3 not back Up within 4 min of its fence")
		}
		time.Sleep(2 * time.Second)
	}
	waitSpace(t, locus, "root", 1, 2, 3)
	if got := strings.TrimSpace(run("3", "tail -n 1 /w3")); got != "after-node-3" {
		t.Errorf("node 3, back, sees the end of /w3 as %q", got)
	}

	// Node 3, running the singleton, is cut off the segment: solo runs
	// on node 2 only once node 3 is fenced Down, never on both.
	checkPartitionedSingleton(t, locus, host, state)
	waitSpace(t, locus, "root", 1, 2, 3)

	// A clean shutdown leaves the lockspace on every node (a leave, not
	// a failure) and the filesystem clean.
	if out, err := host("shutdown", "--yes"); err != nil {
		t.Fatalf("shutdown: %v\n%s", err, out)
	}
	waitPoweredOff(t, locus, 3, 3*time.Minute)
	fsck, err := exec.LookPath("fsck.gfs2")
	if err != nil {
		t.Fatalf("fsck.gfs2 (gfs2-utils, which make deps installs): %v", err)
	}
	if out, err := exec.Command(fsck, "-n", filepath.Join(state, layout.GFS2DiskFile)).CombinedOutput(); err != nil {
		t.Errorf("fsck.gfs2 -n after the shutdown: %v\n%s", err, out)
	}
}

// waitStarted waits until each node of after published, after its
// first after[node] events, lockspace ls started with members.
func waitStarted(t *testing.T, state, ls, members string, after map[int]int) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		var missing []int
		for n, skip := range after {
			evs, _ := qemu.ReadEventLog(qemu.EventLog(state, n))
			if !slices.ContainsFunc(evs[min(skip, len(evs)):], func(e events.Event) bool {
				return e.Kind == events.LockspaceStarted && e.Name == ls && e.Attrs[events.AttrMembers] == members
			}) {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			slices.Sort(missing)
			t.Fatalf("lockspace %s not started with members %s on nodes %v within 60s", ls, members, missing)
		}
	}
}

// waitSpace waits until lockspace ls runs on exactly nodes, each with
// them as its members, asked on the first of them.
func waitSpace(t *testing.T, locus func(...string) (string, error), ls string, nodes ...int) {
	t.Helper()
	via := fmt.Sprint(nodes[0])
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := spaceOn(t, locus, via, ls)
		ok := len(got) == len(nodes)
		for _, n := range nodes {
			sp, have := got[n]
			var ms []int
			for _, m := range sp.Members {
				ms = append(ms, m.Node)
			}
			if !have || !sp.Started || !slices.Equal(ms, nodes) {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lockspace %s not running on %v within 60s: %+v", ls, nodes, got)
		}
		time.Sleep(time.Second)
	}
}
