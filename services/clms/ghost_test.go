package clms

import (
	"log/slog"
	"testing"
	"time"
)

func TestDeadAfterFollowsMemberlistSuspicion(t *testing.T) {
	d := deadAfter(SteadyGossipConfig())
	// Steady: suspicion 6 probe intervals of 200 ms (scaled by log10 of
	// the members past 10), plus two probe rounds and a probe timeout.
	if got, want := d(5), 6*200*time.Millisecond+2*200*time.Millisecond+100*time.Millisecond; got != want {
		t.Errorf("deadAfter(5) = %v, want %v", got, want)
	}
	if d(256) <= d(5) {
		t.Errorf("deadAfter(256) = %v, not longer than for 5 members (%v)", d(256), d(5))
	}
	lan := deadAfter(LANGossipConfig())
	if got, want := lan(5), 4*2*60*time.Millisecond+2*60*time.Millisecond+30*time.Millisecond; got != want {
		t.Errorf("LAN deadAfter(5) = %v, want %v (its longest suspicion: 4 times the shortest)", got, want)
	}
}

func TestSameBootRejoinWaitsForGossip(t *testing.T) {
	m := &Member{cfg: Config{Log: slog.New(slog.DiscardHandler)}, downSeen: map[uint64]time.Time{},
		deadAfter: func(int) time.Duration { return 80 * time.Millisecond }}
	r := NodeRecord{Node: 3, State: Down, Transition: 7, Addr: "127.0.0.3:7472#b00t"}
	if m.sameBootMayRejoin(r, 5) {
		t.Fatal("a Down node back in the same boot rejoins at once")
	}
	if m.sameBootMayRejoin(r, 5) {
		t.Fatal("a Down node back in the same boot rejoins before gossip could declare it dead")
	}
	time.Sleep(100 * time.Millisecond)
	if !m.sameBootMayRejoin(r, 5) {
		t.Fatal("a Down node alive in the same boot past the dead timeout does not rejoin")
	}
	m.forgetDownsSeen([]NodeRecord{{Node: 3, State: Up, Transition: 9}})
	if len(m.downSeen) != 0 {
		t.Fatalf("downSeen kept %v after the node rejoined", m.downSeen)
	}
}
