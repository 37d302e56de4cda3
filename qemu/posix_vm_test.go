//go:build vm

package qemu_test

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/internal/fsconform"
)

// conform runs locus fs conform on node in a fresh directory of the
// shared root and returns its report.
func conform(t *testing.T, locus func(...string) (string, error), node string) fsconform.Report {
	t.Helper()
	dir := "/conform-node" + node
	start := time.Now()
	out, err := locus("qemu", "exec", node, "--", "/bin/sh", "-c",
		fmt.Sprintf("mkdir -p %s && chmod 755 %s && locus fs conform --output json %s 2>/dev/null || true", dir, dir, dir))
	if err != nil {
		t.Fatalf("node %s: locus fs conform: %v\n%s", node, err, out)
	}
	var r fsconform.Report
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &r); err != nil || len(r.Checks) == 0 {
		t.Fatalf("node %s: locus fs conform printed no report (%v):\n%s", node, err, out)
	}
	t.Logf("node %s: %d conformance checks in %s, %d failed, in %.1fs", node, len(r.Checks), dir, r.Failures, time.Since(start).Seconds())
	return r
}

// checkConformance runs the conformance checks on the CFS server's own
// ext4 (server) and on a CFS client, in the same test: every check the
// client fails, the server fails too.
func checkConformance(t *testing.T, locus func(...string) (string, error), server, client string) {
	t.Helper()
	onServer, onClient := conform(t, locus, server), conform(t, locus, client)
	serverFailed := map[string]bool{}
	for _, name := range onServer.Failed() {
		serverFailed[name] = true
	}
	var only []string
	for _, c := range onClient.Checks {
		if !c.OK && !serverFailed[c.Name] {
			only = append(only, fmt.Sprintf("%s: %s: got %s, want %s", c.Name, c.What, c.Got, c.Want))
		}
	}
	sort.Strings(only)
	if len(only) > 0 {
		t.Errorf("node %s (CFS client) fails %d checks that node %s's ext4 passes:\n%s", client, len(only), server, strings.Join(only, "\n"))
	}
	if onServer.Failures > 0 {
		t.Logf("node %s's ext4 fails: %v", server, onServer.Failed())
	}
}

// checkUsers: a user added on node 3 creates, chmods and chgrps files in
// the shared root (and is refused what POSIX refuses: giving a file
// away, a group it is not in); node 2 and the server see the same
// owners and modes, and another user is held to them.
func checkUsers(t *testing.T, run func(node, script string) string) {
	t.Helper()
	run("3", "useradd -M projects && useradd -G projects alice && useradd bob")
	got := run("3", `su alice -c 'cd && mkdir pub && echo plans > pub/plans && chmod 640 pub/plans && chgrp projects pub/plans && chmod 2750 pub && chgrp projects pub && echo memo > memo && chmod 600 memo
chown bob memo 2>/dev/null && echo "gave a file away" || echo "chown to bob refused"
chgrp bob memo 2>/dev/null && echo "chgrp to bob" || echo "chgrp to bob refused"
echo note > pub/note'`)
	if want := "chown to bob refused\nchgrp to bob refused\n"; got != want {
		t.Errorf("alice's chown/chgrp on node 3 gave %q; want %q", got, want)
	}
	want := "/home/alice 700 alice:alice\n/home/alice/memo 600 alice:alice\n/home/alice/pub 2750 alice:projects\n/home/alice/pub/plans 640 alice:projects\n/home/alice/pub/note 644 alice:projects\n"
	for _, node := range []string{"3", "2", "1"} {
		if got := run(node, "stat -c '%n %a %U:%G' /home/alice /home/alice/memo /home/alice/pub /home/alice/pub/plans /home/alice/pub/note"); got != want {
			t.Errorf("node %s sees alice's files as\n%s\nwant\n%s", node, got, want)
		}
	}
	got = run("2", `su bob -c 'cat /home/alice/memo 2>/dev/null || echo "read refused"; touch /home/alice/x 2>/dev/null || echo "create refused"'
su alice -c 'cat /home/alice/memo; echo more >> /home/alice/pub/plans && echo appended'`)
	if want := "read refused\ncreate refused\nmemo\nappended\n"; got != want {
		t.Errorf("on node 2, bob and alice on alice's files: %q; want %q", got, want)
	}
}
