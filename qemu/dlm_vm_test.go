//go:build vm

package qemu_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/internal/testutil"
	"github.com/locus-ssi/locus/qemu"
	"github.com/locus-ssi/locus/services/dlm"
	"github.com/locus-ssi/locus/services/locusd"
)

// lockspaceOn reads every node's report of the default lockspace,
// asked on node via.
func lockspaceOn(t *testing.T, locus func(...string) (string, error), via string) map[int]dlm.SpaceState {
	t.Helper()
	return spaceOn(t, locus, via, dlm.DefaultLockspace)
}

// spaceOn reads every node's report of lockspace name, asked on node via.
func spaceOn(t *testing.T, locus func(...string) (string, error), via, name string) map[int]dlm.SpaceState {
	t.Helper()
	out, err := locus("qemu", "exec", via, "--", "locus", "lock", "spaces", "--output", "json")
	var reply locusd.DLMReply
	if err != nil || json.Unmarshal([]byte(out), &reply) != nil {
		t.Fatalf("lock spaces on node %s: %v\n%s", via, err, out)
	}
	got := map[int]dlm.SpaceState{}
	for _, n := range reply.Nodes {
		for _, sp := range n.Spaces {
			if sp.Name == name {
				got[n.Node] = sp
			}
		}
	}
	return got
}

// waitLockspace waits until the default lockspace runs on exactly
// nodes, each with them as its members, at one epoch; it returns that
// epoch.
func waitLockspace(t *testing.T, locus func(...string) (string, error), via string, nodes ...int) dlm.Epoch {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := lockspaceOn(t, locus, via)
		ok := len(got) == len(nodes)
		var epoch dlm.Epoch
		for _, n := range nodes {
			sp, have := got[n]
			var ms []int
			for _, m := range sp.Members {
				ms = append(ms, m.Node)
			}
			if !have || !sp.Started || !slices.Equal(ms, nodes) || epoch != (dlm.Epoch{}) && sp.Epoch != epoch {
				ok = false
			}
			epoch = sp.Epoch
		}
		if ok {
			return epoch
		}
		if time.Now().After(deadline) {
			t.Fatalf("lockspace %s not running on %v with those members within 60s: %+v", dlm.DefaultLockspace, nodes, got)
		}
		time.Sleep(time.Second)
	}
}

// bg runs locus on a node through the exec channel in the background;
// the channel's answer (output, error, when it came) arrives on the
// returned channel.
type bgResult struct {
	out string
	err error
	at  time.Time
}

func bg(locus func(...string) (string, error), node string, args ...string) <-chan bgResult {
	return bgExec(locus, node, append([]string{"locus"}, args...)...)
}

// bgExec is bg for any command.
func bgExec(locus func(...string) (string, error), node string, argv ...string) <-chan bgResult {
	ch := make(chan bgResult, 1)
	go func() {
		out, err := locus(append([]string{"qemu", "exec", node, "--"}, argv...)...)
		ch <- bgResult{out, err, time.Now()}
	}()
	return ch
}

// waitHeld waits until lock ls, asked with cli, shows resource granted
// to node.
func waitHeld(t *testing.T, cli func(...string) (string, error), resource string, node int) {
	t.Helper()
	waitHeldIn(t, cli, "", resource, node)
}

// waitHeldIn is waitHeld in lockspace ls ("" the default).
func waitHeldIn(t *testing.T, cli func(...string) (string, error), ls, resource string, node int) {
	t.Helper()
	args := []string{"lock", "ls", "--output", "json"}
	if ls != "" {
		args = []string{"lock", "ls", ls, "--output", "json"}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := cli(args...)
		var reply locusd.DLMReply
		json.Unmarshal([]byte(out), &reply)
		if slices.ContainsFunc(reply.Locks, func(l dlm.LockInfo) bool {
			return l.Resource == resource && l.Node == node && l.State == "granted"
		}) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock ls never showed node %d holding %s:\n%s", node, resource, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// onNode runs locus on node n through the exec channel.
func onNode(locus func(...string) (string, error), n string) func(...string) (string, error) {
	return func(args ...string) (string, error) {
		return locus(append([]string{"qemu", "exec", n, "--", "locus"}, args...)...)
	}
}

// checkLocksBeforeFailure: the kernel DLM under the membership on four
// nodes: every node in the default lockspace at one epoch; an EX lock
// held on node 2 excludes node 4 (at once with --wait 0, and until it is
// released otherwise); the host sees the holder. It then sets up what
// the failure of node 3 must not break, for checkLocksAfterFailure: a
// lock node 3 holds and node 1 waits for, and a counter in a value
// block that nodes 2, 3 and 4 increment.
func checkLocksBeforeFailure(t *testing.T, locus, host func(...string) (string, error)) *lockFailure {
	e := waitLockspace(t, locus, "2", 1, 2, 3, 4)
	t.Logf("the default lockspace runs on nodes 1-4 at epoch %v", e)

	held := bg(locus, "2", "lock", "excl", "--", "sleep", "6")
	waitHeld(t, host, "excl", 2) // the host, through node 1's API
	if out, err := locus("qemu", "exec", "4", "--", "locus", "lock", "--wait", "0", "excl", "--", "echo", "got it"); err == nil || strings.Contains(out, "got it") {
		t.Errorf("node 4 took excl with --wait 0 while node 2 held it: %v\n%s", err, out)
	}
	if out, err := locus("qemu", "exec", "4", "--", "locus", "lock", "excl", "--", "echo", "after"); err != nil || !strings.Contains(out, "after") {
		t.Errorf("node 4 waiting for excl: %v\n%s", err, out)
	}
	if r := <-held; r.err != nil {
		t.Errorf("node 2's holder of excl: %v\n%s", r.err, r.out)
	} else if time.Since(r.at) > 3*time.Second {
		t.Errorf("node 4 got excl %v after node 2 let it go", time.Since(r.at))
	}

	// Node 3 holds doomed and counts, its values streamed to node 2 as
	// they come (onnode's stdin), where they outlive node 3. Each exec
	// channel runs one command at a time, so node 3 runs both in one
	// shell: the minimal root's busybox, as u-root's shell has no exec.
	f := &lockFailure{file: "/tmp/ctr3-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	f.node3 = bgExec(locus, "3", "/usr/local/bin/busybox", "sh", "-c", "locus lock doomed -- sleep 600 >/dev/null 2>&1 & "+
		"locus lock --increment 1000000 ctr | onnode 2 -- /usr/local/bin/busybox sh -c 'cat > "+f.file+"'")
	waitHeld(t, host, "doomed", 3)
	waitHeld(t, host, "ctr", 3)
	f.waiter = bg(locus, "1", "lock", "doomed", "--", "echo", "granted")
	for _, n := range []string{"2", "4"} {
		f.counters = append(f.counters, bg(locus, n, "lock", "--increment", "150", "ctr"))
	}
	time.Sleep(2 * time.Second) // the counters under way on all three
	return f
}

type lockFailure struct {
	file          string // node 3's counter values, on the shared root
	node3, waiter <-chan bgResult
	counters      []<-chan bgResult
}

// checkLocksAfterFailure: node 3 was killed (and fenced, and taken
// Down). The lock it held is granted to node 1's waiter only after the
// fence; the counter ends exact: no update lost, none doubled.
func (f *lockFailure) checkLocksAfterFailure(t *testing.T, locus func(...string) (string, error), state string, killed time.Time) {
	var w bgResult
	select {
	case w = <-f.waiter:
	case <-time.After(90 * time.Second):
		t.Fatal("node 1's waiter for doomed (held by the killed node 3) not granted within 90s")
	}
	if w.err != nil || !strings.Contains(w.out, "granted") {
		t.Fatalf("node 1's waiter for doomed: %v\n%s", w.err, w.out)
	}
	fenced := fenceTime(t, state, 3, killed)
	t.Logf("doomed, held by node 3: granted to node 1's waiter %.1fs after the kill, %.2fs after the supervisor fenced node 3",
		w.at.Sub(killed).Seconds(), w.at.Sub(fenced).Seconds())
	if w.at.Before(fenced) {
		t.Errorf("node 1 was granted the lock of the killed node 3 before node 3 was fenced (%v before)", fenced.Sub(w.at))
	}
	var values []int
	for i, ch := range f.counters {
		r := <-ch
		if r.err != nil {
			t.Errorf("counter on node %d: %v\n%s", []int{2, 4}[i], r.err, r.out)
		}
		values = append(values, counterValues(r.out)...)
	}
	own := len(values)
	<-f.node3 // ended by the kill
	out, err := locus("qemu", "exec", "2", "--", "cat", f.file)
	if err != nil {
		t.Fatalf("node 3's counter values in %s: %v\n%s", f.file, err, out)
	}
	values = append(values, counterValues(out)...)
	slices.Sort(values)
	if d := slices.Compact(slices.Clone(values)); len(d) != len(values) {
		t.Errorf("the counter gave a value twice (a doubled or lost update): %d values, %d distinct", len(values), len(d))
	}
	top := values[len(values)-1]
	// Node 3 may have committed one increment whose line it never got
	// out before it died.
	if top < len(values) || top > len(values)+1 {
		t.Errorf("the counter ends at %d after %d increments seen (%d from nodes 2 and 4, %d from node 3 before it died)", top, len(values), own, len(values)-own)
	}
	t.Logf("counter: %d increments from nodes 2 and 4 and %d from node 3 before its death; it ends at %d", own, len(values)-own, top)
}

func counterValues(out string) []int {
	var vs []int
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if v, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
			vs = append(vs, v)
		}
	}
	return vs
}

// fenceTime is when the supervisor carried out the fence of node n
// (after since), from its log.
func fenceTime(t *testing.T, state string, n int, since time.Time) time.Time {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "supervisor.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, `msg="fence request"`) || !strings.Contains(l, "request=\"reboot "+strconv.Itoa(n)+"\"") {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(l, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err == nil && at.After(since) {
			return at
		}
	}
	t.Fatalf("the supervisor's log has no fence of node %d after %v:\n%s", n, since, b)
	return time.Time{}
}

// checkLibdlmClients: a C program written for Debian's libdlm3
// (testdata/dlmc, built here against libdlm-dev) runs unchanged on the
// nodes, its libraries beside it on the shared root, with locusd as the
// DLM's control daemon: in the default lockspace it is excluded by a
// lock locus lock holds on another node and granted once that ends; a
// lockspace it creates itself (dlm_create_lockspace) is joined by a
// second node's copy, whose request is refused while the first holds
// the resource.
func checkLibdlmClients(t *testing.T, locus func(...string) (string, error), state string, a, b int) {
	t.Helper()
	dir := "/opt/dlmc-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	pushLibdlmClient(t, state, a, dir)
	dlmc := func(args ...string) []string {
		return append([]string{dir + "/ld-linux-x86-64.so.2", "--library-path", dir, dir + "/dlmc"}, args...)
	}
	na, nb := strconv.Itoa(a), strconv.Itoa(b)

	held := bg(locus, nb, "lock", "cgate", "--", "sleep", "8")
	waitHeld(t, onNode(locus, na), "cgate", b)
	out, err := locus(append([]string{"qemu", "exec", na, "--"}, dlmc("-n", "locus", "cgate")...)...)
	if code := exitCode(err); code != 11 || !strings.Contains(out, "busy") {
		t.Errorf("libdlm client on node %d took cgate with LKF_NOQUEUE while node %d held it: exit %d\n%s", a, b, code, out)
	}
	out, err = locus(append([]string{"qemu", "exec", na, "--"}, dlmc("locus", "cgate")...)...)
	granted := time.Now()
	if err != nil || !strings.Contains(out, "granted ex") {
		t.Fatalf("libdlm client on node %d waiting for cgate: %v\n%s", a, err, out)
	}
	if r := <-held; r.err != nil {
		t.Errorf("node %d's holder of cgate: %v\n%s", b, r.err, r.out)
	} else if r.at.After(granted.Add(time.Second)) {
		t.Errorf("libdlm client on node %d was granted cgate %v before node %d's holder ended", a, r.at.Sub(granted), b)
	}

	first := bgExec(locus, na, dlmc("-c", "-h", "15", "clib", "r")...)
	// Asked on node b: node a's exec channel runs the client.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		if sp, ok := spaceOn(t, locus, nb, "clib")[a]; ok && sp.Started {
			break
		}
		if time.Now().After(deadline) {
			select {
			case r := <-first:
				t.Fatalf("lockspace clib, created by the libdlm client on node %d, never ran there; the client: %v\n%s", a, r.err, r.out)
			default:
				t.Fatalf("lockspace clib, created by the libdlm client on node %d, not running there within 60s", a)
			}
		}
	}
	// Running is not yet holding: the client asks for r once it has
	// the lockspace.
	waitHeldIn(t, onNode(locus, nb), "clib", "r", a)
	out, err = locus(append([]string{"qemu", "exec", nb, "--"}, dlmc("-c", "-n", "clib", "r")...)...)
	if code := exitCode(err); code != 11 || !strings.Contains(out, "busy") {
		t.Errorf("libdlm client on node %d got r in lockspace clib while node %d's held it: exit %d\n%s", b, a, code, out)
	}
	if r := <-first; r.err != nil || !strings.Contains(r.out, "granted ex") {
		t.Errorf("libdlm client on node %d creating lockspace clib: %v\n%s", a, r.err, r.out)
	}
	t.Logf("a libdlm3 C client on nodes %d and %d: excluded by and granted after locus lock; its own lockspace clib shared across nodes", a, b)
}

// exitCode is a locus CLI run's exit status (0 when err is nil).
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// pushLibdlmClient builds testdata/dlmc against the host's libdlm and
// writes it, with every library it loads and its dynamic loader, into
// dir on node's root, through the node's exec channel.
func pushLibdlmClient(t *testing.T, state string, node int, dir string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "dlmc")
	if out, err := exec.Command("gcc", "-O2", "-Wall", "-pthread", "-o", bin, "testdata/dlmc/dlmc.c", "-ldlm").CombinedOutput(); err != nil {
		t.Fatalf("build the libdlm client (make deps installs gcc and libdlm-dev): %v\n%s", err, out)
	}
	libs, err := testutil.Libraries(bin)
	if err != nil {
		t.Fatal(err)
	}
	files := append([]string{bin, "/lib/x86_64-linux-gnu/libgcc_s.so.1"}, libs...) // libgcc_s: glibc loads it for pthread_cancel
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = qemu.WriteFile(ctx, qemu.ExecPath(state, node), filepath.Join(dir, filepath.Base(f)), data)
		cancel()
		if err != nil {
			t.Fatalf("node %d: %v", node, err)
		}
	}
}
