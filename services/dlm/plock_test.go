package dlm

import (
	"context"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/locus-ssi/locus/services/clms"
)

func lockOp(node int, owner uint64, ex, wait bool, start, end uint64) PlockOp {
	return PlockOp{Op: PlockLock, Ex: ex, Wait: wait, Node: node, Owner: owner, PID: uint32(100 + node), FSID: 7, Number: 42, Start: start, End: end}
}

// TestPlockRanges: POSIX semantics of one table: shared locks together,
// an exclusive alone, an owner's own locks converted and split, a
// waiter granted when the range is free, a Down node's locks dropped.
func TestPlockRanges(t *testing.T) {
	tb := newPlockTable()
	if a, w := tb.do(lockOp(1, 10, false, false, 0, 99)); a.RV != 0 || w != nil {
		t.Fatalf("first shared lock: %+v", a)
	}
	if a, _ := tb.do(lockOp(2, 20, false, false, 50, 149)); a.RV != 0 {
		t.Fatalf("a second shared lock overlapping: %+v", a)
	}
	if a, _ := tb.do(lockOp(3, 30, true, false, 90, 95)); a.RV != -int32(unix.EAGAIN) {
		t.Fatalf("an exclusive lock over shared ones: rv %d, want EAGAIN", a.RV)
	}
	get := lockOp(3, 30, true, false, 90, 95)
	get.Op = PlockGet
	if a, _ := tb.do(get); a.RV != 1 || a.Ex || (a.Node != 1 && a.Node != 2) {
		t.Fatalf("get over shared locks: %+v", a)
	}
	// Node 3 waits for [90,95] exclusively; node 2 unlocks only part of
	// its lock, node 1 all of its: then node 3 gets it.
	_, w := tb.do(lockOp(3, 30, true, true, 90, 95))
	if w == nil {
		t.Fatal("a waiting lock was not queued")
	}
	tb.do(PlockOp{Op: PlockUnlock, Node: 2, Owner: 20, FSID: 7, Number: 42, Start: 80, End: 100})
	select {
	case <-w.done:
		t.Fatal("granted while node 1 still holds [0,99]")
	default:
	}
	tb.do(PlockOp{Op: PlockUnlock, Node: 1, Owner: 10, FSID: 7, Number: 42, Start: 0, End: 1 << 62})
	select {
	case rv := <-w.done:
		if rv != 0 {
			t.Fatalf("waiter got %d", rv)
		}
	case <-time.After(time.Second):
		t.Fatal("waiter not granted once the range was free")
	}
	var got [][2]uint64
	for _, r := range tb.ranges() {
		got = append(got, [2]uint64{r.Start, r.End})
	}
	slices.SortFunc(got, func(a, b [2]uint64) int { return int(a[0]) - int(b[0]) })
	if want := [][2]uint64{{50, 79}, {90, 95}, {101, 149}}; !slices.Equal(got, want) {
		t.Errorf("held %v, want %v (node 2's split around its unlock, node 3's)", got, want)
	}
	// An owner converting its own range: no conflict with itself.
	if a, _ := tb.do(lockOp(3, 30, false, false, 80, 99)); a.RV != 0 {
		t.Errorf("node 3 converting its own lock: %+v", a)
	}
	tb.dropNode(2)
	tb.dropNode(3)
	if rs := tb.ranges(); len(rs) != 0 {
		t.Errorf("after the nodes went Down: %+v", rs)
	}
}

// TestPlocksAcrossNodes: POSIX locks through the master, on three
// daemons: one node's exclusive lock refuses another's, a waiting lock
// is granted at the unlock, a Down node's lock is released, and a new
// master learns the locks from the nodes.
func TestPlocksAcrossNodes(t *testing.T) {
	w := newWorld(t, 1, 2, 3)
	ctx := context.Background()
	if a := w.svcs[2].plock(ctx, lockOp(0, 20, true, false, 0, 9)); a.RV != 0 {
		t.Fatalf("node 2's lock: %+v", a)
	}
	if a := w.svcs[3].plock(ctx, lockOp(0, 30, true, false, 5, 5)); a.RV != -int32(unix.EAGAIN) {
		t.Fatalf("node 3's lock over node 2's: %+v", a)
	}
	granted := make(chan PlockOp, 1)
	go func() { granted <- w.svcs[3].plock(ctx, lockOp(0, 30, true, true, 5, 5)) }()
	time.Sleep(200 * time.Millisecond)
	select {
	case a := <-granted:
		t.Fatalf("node 3's waiting lock granted while node 2 holds it: %+v", a)
	default:
	}
	w.svcs[2].plock(ctx, PlockOp{Op: PlockUnlock, Owner: 20, FSID: 7, Number: 42, Start: 0, End: 9})
	select {
	case a := <-granted:
		if a.RV != 0 {
			t.Fatalf("node 3's waiting lock: %+v", a)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("node 3's waiting lock not granted after node 2's unlock")
	}
	// A new master (node 2, a new term) knows node 3 holds [5,5].
	w.mu.Lock()
	w.status.Master, w.status.Term = 2, 6
	w.mu.Unlock()
	if a := w.svcs[1].plock(ctx, lockOp(0, 10, false, false, 0, 9)); a.RV != -int32(unix.EAGAIN) {
		t.Fatalf("under the new master, node 1's lock over node 3's: %+v", a)
	}
	// Node 3 Down: its lock goes.
	w.mu.Lock()
	w.svcs[3] = nil
	w.mu.Unlock()
	w.setState(3, clms.Down)
	if a := w.svcs[1].plock(ctx, lockOp(0, 10, false, false, 0, 9)); a.RV != 0 {
		t.Fatalf("node 1's lock after node 3 went Down: %+v", a)
	}
}

// FuzzParsePlock: any 64 bytes from the device give a request or an error.
func FuzzParsePlock(f *testing.F) {
	f.Add(lockOp(1, 2, true, true, 0, 99).bytes())
	f.Add(make([]byte, plockSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		if op, err := ParsePlock(b); err == nil {
			back, err := ParsePlock(op.bytes())
			if err != nil || back.Op != op.Op || back.Start != op.Start || back.End != op.End || back.Owner != op.Owner {
				t.Fatalf("%+v does not round-trip: %+v %v", op, back, err)
			}
		}
	})
}
