package lvs

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/services/clms"
)

func statusOf(states map[int]clms.State) clms.Status {
	st := clms.Status{Master: 1, Quorum: true}
	for n := 1; n <= 4; n++ {
		if s, ok := states[n]; ok {
			st.Nodes = append(st.Nodes, clms.NodeStatus{NodeRecord: clms.NodeRecord{Node: n, State: s}})
		}
	}
	return st
}

// store applies director writes as the FSM would.
type store struct {
	d       Director
	version uint64
	have    bool
}

func (s *store) apply(t *testing.T, ws []clms.RecordWrite) {
	t.Helper()
	for _, w := range ws {
		if w.Expect != s.version {
			t.Fatalf("write at version %d, record at %d", w.Expect, s.version)
		}
		d, _, ok := readDirector([]clms.Record{{Key: w.Key, Value: w.Value}})
		if !ok {
			t.Fatalf("bad director record %s", w.Value)
		}
		s.d, s.have = d, true
		s.version++
	}
}

// TestDirectorFailover: the first Up director of the list takes the
// address; it keeps it while Up (no failback); on its Down, the next one
// after it; while it is being fenced, nobody; a shutting-down director
// releases first.
func TestDirectorFailover(t *testing.T) {
	var s store
	up := map[int]clms.State{1: clms.Up, 2: clms.ComingUp, 3: clms.Up, 4: clms.Up}
	step := func(states map[int]clms.State) {
		s.apply(t, planDirector([]int{2, 3, 4}, s.d, s.version, s.have, statusOf(states), time.Now()))
	}
	step(up)
	if s.d.Node != 3 {
		t.Fatalf("first director %+v, want node 3 (node 2 not yet Up)", s.d)
	}
	up[2] = clms.Up
	step(up)
	if s.d.Node != 3 {
		t.Fatalf("moved back to %d when node 2 came Up", s.d.Node)
	}
	up[3] = clms.GoingDown
	step(up)
	if s.d.Node != 3 {
		t.Fatalf("moved to %d before node 3's fence", s.d.Node)
	}
	gen := s.d.Gen
	up[3] = clms.Down
	step(up)
	if s.d.Node != 4 || s.d.Gen != gen+1 || s.d.Prev != 3 {
		t.Fatalf("after node 3's Down: %+v, want node 4 (the next after 3)", s.d)
	}
	up[4] = clms.ShuttingDown
	step(up)
	if s.d.Node != 4 || !s.d.Releasing {
		t.Fatalf("a shutting-down director: %+v", s.d)
	}
	step(up) // nothing moves until it says it released
	if s.d.Node != 4 {
		t.Fatalf("moved before the release: %+v", s.d)
	}
	s.apply(t, planReleased(s.d, s.version, 4, s.d.Gen, time.Now()))
	step(up)
	if s.d.Node != 2 {
		t.Fatalf("after node 4 released: %+v, want node 2 (wrapping round)", s.d)
	}
}

// TestDaemonMessage: the sync daemon's netlink attributes, byte for
// byte as include/uapi/linux/ip_vs.h lays them out: a nested
// IPVS_CMD_ATTR_DAEMON (3) holding STATE (1, u32), MCAST_IFN (2,
// NUL-terminated) and SYNC_ID (3, u32).
func TestDaemonMessage(t *testing.T) {
	b, err := daemonMessage(SyncBackup, "eth0", 7, false)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := hex.DecodeString("" +
		"20000380" + // len 32, type 3 | NLA_F_NESTED
		"08000100" + "02000000" + // STATE = 2 (backup)
		"09000200" + "65746830" + "00000000" + // MCAST_IFN "eth0\0", padded
		"08000300" + "07000000") // SYNC_ID = 7
	if !bytes.Equal(b, want) {
		t.Errorf("NEW_DAEMON attributes\n got %x\nwant %x", b, want)
	}
	b, _ = daemonMessage(SyncMaster, "", 0, true)
	want, _ = hex.DecodeString("0c000380" + "08000100" + "01000000")
	if !bytes.Equal(b, want) {
		t.Errorf("DEL_DAEMON attributes\n got %x\nwant %x", b, want)
	}
}

// TestDirectorMove: an operator's move releases the address first and
// gives it to the node named, not to the next of the list; a node that
// may not direct, or is not Up, is refused with a reason; a move to the
// director is nothing.
func TestDirectorMove(t *testing.T) {
	var s store
	up := map[int]clms.State{1: clms.Up, 2: clms.Up, 3: clms.Up, 4: clms.ComingUp}
	directors := []int{2, 3, 4}
	step := func() {
		s.apply(t, planDirector(directors, s.d, s.version, s.have, statusOf(up), time.Now()))
	}
	step()
	if s.d.Node != 2 {
		t.Fatalf("first director %+v, want node 2", s.d)
	}
	for _, bad := range []struct {
		to   int
		want string
	}{{1, "not one of the cluster IP's directors"}, {4, "not Up (ComingUp)"}, {5, "not one of"}} {
		if _, err := planMove(directors, s.d, s.version, statusOf(up), bad.to, "", time.Now()); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("move to node %d: %v, want %q", bad.to, err, bad.want)
		}
	}
	if ws, err := planMove(directors, s.d, s.version, statusOf(up), 2, "", time.Now()); ws != nil || err != nil {
		t.Errorf("move to the director itself: %v %v", ws, err)
	}
	up[4] = clms.Up
	ws, err := planMove(directors, s.d, s.version, statusOf(up), 4, "moved to node 4 by root", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s.apply(t, ws)
	if s.d.Node != 2 || !s.d.Releasing || s.d.Next != 4 {
		t.Fatalf("moving: %+v, want node 2 releasing for node 4", s.d)
	}
	if _, err := planMove(directors, s.d, s.version, statusOf(up), 3, "", time.Now()); err == nil {
		t.Error("a second move while the first releases was taken")
	}
	step()
	if s.d.Node != 2 {
		t.Fatalf("node 4 took it before node 2 released: %+v", s.d)
	}
	gen := s.d.Gen
	s.apply(t, planReleased(s.d, s.version, 2, gen, time.Now()))
	step()
	if s.d.Node != 4 || s.d.Gen != gen+1 || s.d.Prev != 2 || s.d.Why != "moved to node 4 by root" {
		t.Fatalf("after node 2 released: %+v, want node 4 (next after 2 would be 3)", s.d)
	}
}
