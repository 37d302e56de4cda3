package clms

import (
	"math"
	"time"

	"github.com/hashicorp/memberlist"
)

// A node taken Down may still be in a member's gossip for a while: its
// memberlist declares a silent member dead only after the suspicion
// timeout, and a Down on refused evidence (refused.go) comes long before
// that. The master that committed the Down knows the boot is dead and
// leaves it out; a master elected since does not. If it let that boot
// back in, the cluster would hold a dead node Up (a ghost) until the
// node's next boot is heard, and then take it Down again as rebooted
// (and fence it). So a node taken Down is let back in the same boot only
// once the master has seen the Down for as long as gossip takes to
// declare a silent member dead: a ghost is gone from gossip by then, and
// a node that is really alive in that boot (a healed partition, where
// nothing fenced it) comes back that much later. A node that rebooted
// comes back at once: its new boot is another member.

// deadAfter is how long c's memberlist takes at most, among members
// members, from a member's last answer to declaring it dead: a probe
// round, then the longest suspicion (memberlist's own formula).
func deadAfter(c *memberlist.Config) func(members int) time.Duration {
	return func(members int) time.Duration {
		scale := math.Max(1, math.Log10(math.Max(1, float64(members))))
		suspicion := time.Duration(float64(c.SuspicionMult) * scale * float64(c.ProbeInterval))
		return time.Duration(max(1, c.SuspicionMaxTimeoutMult))*suspicion + 2*c.ProbeInterval + c.ProbeTimeout
	}
}

// sameBootMayRejoin says whether node r, Down and back in gossip in the
// boot that was taken Down, may rejoin: once this master has seen the
// Down for deadAfter.
func (m *Member) sameBootMayRejoin(r NodeRecord, members int) bool {
	seen, ok := m.downSeen[r.Transition]
	if !ok {
		m.downSeen[r.Transition] = time.Now()
		m.cfg.Log.Info("a node taken Down is in gossip in the same boot: it rejoins once gossip has had time to declare it dead",
			"node", r.Node, "down", r.Transition, "wait", m.deadAfter(members).Round(time.Millisecond))
		return false
	}
	return time.Since(seen) >= m.deadAfter(members)
}

// forgetDownsSeen drops the Downs that are no longer a node's state.
func (m *Member) forgetDownsSeen(records []NodeRecord) {
	if len(m.downSeen) == 0 {
		return
	}
	current := map[uint64]bool{}
	for _, r := range records {
		if r.State == Down {
			current[r.Transition] = true
		}
	}
	for t := range m.downSeen {
		if !current[t] {
			delete(m.downSeen, t)
		}
	}
}
