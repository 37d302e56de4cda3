package proc

import (
	"testing"
	"time"
)

// placeTable is node 1's table with the loads of nodes 2..n: each with
// upper load upper[node] (node 1's own too), measured age ago.
func placeTable(upper map[int]float64, age time.Duration, now time.Time) *table {
	self := &meter{node: 1, ncpu: 2, speed: 1}
	self.cur = Load{Node: 1, NCPU: 2, Speed: 1, Upper: upper[1], Stamp: 1}
	t := newTable(self)
	for n, u := range upper {
		if n != 1 {
			t.entries[n] = entry{Load: Load{Node: n, NCPU: 2, Speed: 1, Upper: u, Stamp: 1}, at: now.Add(-age)}
		}
	}
	return t
}

// TestPlaceSpreadsABurst: 100 placements at once over four idle nodes
// land 25 ± 3 on each, also when the others' entries are old (an idle
// node gossips seldom); a busy node gets fewer; a node never heard of
// gets none.
func TestPlaceSpreadsABurst(t *testing.T) {
	now := time.Now()
	for _, age := range []time.Duration{0, 30 * time.Second} {
		tb := placeTable(map[int]float64{1: 0, 2: 0, 3: 0, 4: 0}, age, now)
		counts := map[int]int{}
		for i := range 100 {
			counts[tb.place([]int{1, 2, 3, 4, 5}, true, now.Add(time.Duration(i)*time.Millisecond))]++
		}
		for n := 1; n <= 4; n++ {
			if counts[n] < 22 || counts[n] > 28 {
				t.Errorf("entries %v old: node %d got %d of 100, want 25 ± 3 (%v)", age, n, counts[n], counts)
			}
		}
		if counts[5] != 0 {
			t.Errorf("node 5, with no load known, got %d", counts[5])
		}
	}

	// Node 3 runs four CPU-bound processes on its two CPUs (upper 2):
	// it gets work only once the others have four placements more.
	tb := placeTable(map[int]float64{1: 0, 2: 0, 3: 2, 4: 0}, 0, now)
	counts := map[int]int{}
	for i := range 40 {
		counts[tb.place([]int{1, 2, 3, 4}, true, now.Add(time.Duration(i)*time.Millisecond))]++
	}
	if counts[3] >= counts[2] || counts[3] > 8 {
		t.Errorf("a busy node 3 got %d of 40 (%v)", counts[3], counts)
	}
}
