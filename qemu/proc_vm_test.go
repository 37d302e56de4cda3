//go:build vm

package qemu_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/services/locusd"
	"github.com/locus-ssi/locus/services/proc"
)

// checkProcesses is the one process space on a 4-node cluster, as a
// user on its nodes sees it: onnode, onall, fast, ps, kill and where by
// cluster PID, and u-root's unmodified ps over the clusterwide /proc.
func checkProcesses(t *testing.T, run func(node, script string) string) {
	if got := run("1", "onnode 3 -- hostname"); got != "node3\n" {
		t.Errorf("onnode 3 -- hostname on node 1: %q", got)
	}
	// A job runs where the node's own processes do: in the shared root,
	// not in the initramfs its daemon runs from.
	mark := fmt.Sprintf("/onnode-root-%d", time.Now().UnixNano())
	run("2", "echo shared > "+mark)
	for _, n := range []string{"1", "3"} {
		if got := run("2", "onnode "+n+" -- cat "+mark+" 2>&1; onnode "+n+" -- /usr/local/bin/busybox sh -c \"grep ' / / ' /proc/self/mountinfo | cut -d' ' -f9\""); !strings.HasPrefix(got, "shared\n") || strings.Contains(got, "rootfs") {
			t.Errorf("a job on node %s does not run in the shared root (%s written on node 2; the job's / last):\n%s", n, mark, got)
		}
	}
	got := run("2", "onall -- uname -n")
	for n := 1; n <= 4; n++ {
		if !strings.Contains(got, fmt.Sprintf("node%d: node%d\n", n, n)) {
			t.Errorf("onall -- uname -n on node 2 lacks node %d's line:\n%s", n, got)
		}
	}
	// 40 fast jobs from node 1 spread over all the nodes.
	out := run("1", `i=0; while [ $i -lt 40 ]; do fast -v -- hostname >/dev/null; i=$((i+1)); done 2>&1`)
	counts := map[int]int{}
	for _, m := range regexp.MustCompile(`locus: fast: node (\d+)`).FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		counts[n]++
	}
	t.Logf("40 fast jobs from node 1 ran on: %v", counts)
	for n := 1; n <= 4; n++ {
		if counts[n] < 5 {
			t.Errorf("node %d ran %d of 40 fast jobs (%v)", n, counts[n], counts)
		}
	}
	// A job started on node 3 from node 2 is in node 1's ps by its CPID,
	// and in u-root's own ps run over the clusterwide /proc.
	cpid := strings.TrimSpace(run("2", "onnode 3 --detach -- sleep 600"))
	c, err := strconv.ParseInt(cpid, 10, 64)
	if node, _ := proc.SplitCPID(c); err != nil || node != 3 {
		t.Fatalf("onnode 3 --detach printed %q", cpid)
	}
	var reply locusd.PSReply
	if err := json.Unmarshal([]byte(run("1", "locus ps --output json")), &reply); err != nil {
		t.Fatalf("locus ps on node 1: %v", err)
	}
	nodes, found := map[int]bool{}, false
	for _, p := range reply.Processes {
		nodes[p.Node] = true
		// u-root's sleep is a link to its multi-call binary: argv[0]
		// is the link's path.
		found = found || (p.CPID == c && p.Node == 3 && strings.HasSuffix(strings.Join(p.Args, " "), "sleep 600"))
	}
	if !found || len(nodes) != 4 {
		t.Errorf("locus ps on node 1: job %s found %v, nodes %v", cpid, found, nodes)
	}
	// (Its default columns: PID, TTY, TIME and the command's name.)
	if got := run("1", "locus ssi -- ps -e"); !regexp.MustCompile(`(?m)^\s*` + cpid + `\s.*\ssleep\s*$`).MatchString(got) {
		t.Errorf("u-root's ps over the clusterwide /proc on node 1 lacks %s:\n%s", cpid, got)
	}
	// kill from node 2 of a process on node 4.
	cpid4 := strings.TrimSpace(run("1", "onnode 4 --detach -- sleep 601"))
	if got := run("4", "where_pid "+cpid4); got != "4\n" {
		t.Errorf("where_pid %s on node 4: %q", cpid4, got)
	}
	run("2", "locus kill "+cpid4)
	if got := run("3", "where_pid "+cpid4+" 2>&1 || echo gone"); !strings.Contains(got, "no such process") || !strings.HasSuffix(got, "gone\n") {
		t.Errorf("after node 2 killed %s, where_pid on node 3 says %q", cpid4, got)
	}
	run("1", "locus kill -9 "+cpid)
}

// runsOn says whether node runs a process whose command line is argv
// (and not a ps looking for it), as locus ps there says.
func runsOn(t *testing.T, run func(node, script string) string, node, argv string) bool {
	var reply locusd.PSReply
	if err := json.Unmarshal([]byte(run(node, "locus ps --nodes "+node+" --output json")), &reply); err != nil {
		t.Fatalf("locus ps on node %s: %v", node, err)
	}
	for _, p := range reply.Processes {
		if cmd := strings.Join(p.Args, " "); strings.HasSuffix(cmd, argv) && !strings.Contains(cmd, "locus") {
			return true
		}
	}
	return false
}
