//go:build vm

package qemu_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/services/events"

	"github.com/locus-ssi/locus/qemu"
	"github.com/locus-ssi/locus/services/clms"
)

// TestVMTwoNode: a two-node cluster with membership.two_node. Node 1
// (the master, the only voter) is killed; node 2 fences it through the
// virtual BMC and goes on alone as master, and commits node 1 Down.
func TestVMTwoNode(t *testing.T) {
	locus, state := specCluster(t, "two_node", []byte(`cluster: {name: vmtwo}
interconnect: {subnet: 10.86.0.0/24}
membership: {two_node: true}
`))
	start := time.Now()
	qemuUp(t, locus, "-n", "2", "--timeout", "6m", "--api-port", "17475")
	t.Logf("2 nodes Up in %.1fs", time.Since(start).Seconds())
	// Asked on node 2, which outlives node 1.
	onNode2 := func(args ...string) (string, error) {
		return locus(append([]string{"qemu", "exec", "2", "--", "locus"}, args...)...)
	}
	wait := func(what string, within time.Duration, ok func(clms.Status) bool) clms.Status {
		t.Helper()
		return waitStatus(t, what, within, onNode2, ok)
	}
	st := wait("both Up, node 1 master", 2*time.Minute, func(st clms.Status) bool {
		return st.Master == 1 && stateOf(st, 1) == clms.Up && stateOf(st, 2) == clms.Up
	})
	for _, r := range st.Nodes {
		if r.Voter != (r.Node == 1) {
			t.Errorf("node %d voter=%v; two_node wants only the master voting", r.Node, r.Voter)
		}
	}

	killed := time.Now()
	if out, err := locus("qemu", "kill", "1"); err != nil {
		t.Fatalf("kill 1: %v\n%s", err, out)
	}
	st = wait("node 2 alone as master", 2*time.Minute, func(st clms.Status) bool {
		return st.Quorum && st.Master == 2 && stateOf(st, 1) == clms.Down && stateOf(st, 2) == clms.Up
	})
	t.Logf("node 1 killed: node 2 master, node 1 Down, %.1fs later", time.Since(killed).Seconds())
	log, _ := os.ReadFile(qemu.SerialLog(state, 2))
	// The fence agent is `locus fence`, the virtual BMC: an event without
	// an error is the BMC's "ok".
	if _, ok := lastEvent(state, 2, func(e events.Event) bool { return e.Kind == events.Fenced && e.Subject == 1 && e.Error == "" }); !ok {
		t.Errorf("node 2 has no event of fencing node 1:\n%s", tail(string(log), 30))
	}
	if _, ok := lastEvent(state, 2, func(e events.Event) bool { return e.Kind == events.RoleTaken && e.Name == events.RoleMaster }); !ok {
		t.Errorf("node 2 has no event of becoming the master:\n%s", tail(string(log), 30))
	}
	var said []string
	for _, l := range strings.Split(string(log), "\n") {
		if strings.Contains(l, "two_node") || strings.Contains(l, "locus-clms: transition") {
			said = append(said, l)
		}
	}
	t.Logf("node 2's console:\n%s", strings.Join(said, "\n"))
}
