package clms

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// Timing profiles.
const (
	// ProfileAuto is ProfileSteady, or ProfileEmulated on an emulated CPU.
	ProfileAuto = "auto"
	// ProfileSteady is the default on real hardware: a node that stalls
	// alone for up to a second (a GC pause, a stuck NIC interrupt) is
	// not taken Down and fenced; a silent node is, in about 1.5 s.
	ProfileSteady = "steady"
	// ProfileLAN is Locus's fastest tuning, for operators who opt in:
	// sub-second detection on a quiet LAN, at the price of fencing a node
	// that stalls alone for a few hundred milliseconds.
	ProfileLAN = "lan"
	// ProfileEmulated stretches every timeout five to ten times, for
	// machines whose CPU is emulated (QEMU without KVM), where a guest
	// stalls for hundreds of milliseconds under load.
	ProfileEmulated = "emulated"
	// ProfileDefault is memberlist's DefaultLANConfig, for comparison.
	ProfileDefault = "default"
)

// timing is a profile's settings.
type timing struct {
	gossip                     *memberlist.Config
	heartbeat, election, lease time.Duration
}

func profileTiming(name string) (timing, error) {
	if name == ProfileAuto || name == "" {
		name = ProfileSteady
		if Emulated() {
			name = ProfileEmulated
		}
	}
	switch name {
	case ProfileSteady:
		return timing{SteadyGossipConfig(), time.Second, time.Second, 500 * time.Millisecond}, nil
	case ProfileLAN:
		return timing{LANGossipConfig(), 500 * time.Millisecond, 500 * time.Millisecond, 250 * time.Millisecond}, nil
	case ProfileEmulated:
		c := memberlist.DefaultLANConfig()
		c.ProbeInterval = time.Second
		c.ProbeTimeout = 500 * time.Millisecond
		c.SuspicionMult = 4
		c.GossipInterval = 200 * time.Millisecond
		c.EnableCompression = false
		return timing{c, 3 * time.Second, 3 * time.Second, 1500 * time.Millisecond}, nil
	case ProfileDefault:
		return timing{memberlist.DefaultLANConfig(), time.Second, time.Second, 500 * time.Millisecond}, nil
	}
	return timing{}, fmt.Errorf("clms: timing profile %q: want %s, %s, %s, %s or %s", name, ProfileAuto, ProfileSteady, ProfileLAN, ProfileEmulated, ProfileDefault)
}

// Emulated reports whether this machine's CPU is emulated (QEMU's TCG
// names its CPUs so in /proc/cpuinfo).
func Emulated() bool {
	b, err := os.ReadFile("/proc/cpuinfo")
	return err == nil && strings.Contains(string(b), "QEMU TCG CPU")
}

// SteadyGossipConfig is memberlist tuned so that a node silent for a
// second is still a member: it is suspected within a probe interval
// (200 ms), but declared dead only after a suspicion of 1.2 s
// (SuspicionMult 6 of the interval, however many confirm it, and no
// longer: SuspicionMaxTimeoutMult 1); a node that stalled and resumes
// refutes the suspicion within a gossip round. Lifeguard's awareness stretches a slow node's own
// timeouts, so a starved node does not accuse the others either.
func SteadyGossipConfig() *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.SuspicionMult = 6
	c.SuspicionMaxTimeoutMult = 1
	c.GossipInterval = 50 * time.Millisecond
	c.GossipNodes = 4
	c.TCPTimeout = time.Second
	c.PushPullInterval = 10 * time.Second
	// No LZW on the interconnect: a LAN has bandwidth to spare, and at
	// 128 members compressing and expanding every packet was two fifths
	// of the members' CPU (each packet makes a new LZW table).
	c.EnableCompression = false
	return c
}

// LANGossipConfig is memberlist tuned for a quiet LAN: a node that stops
// answering is suspected within a probe interval and declared dead after
// a short suspicion, while Lifeguard's awareness stretches the timeouts
// of a node that is itself slow (a saturated CPU), so it is not declared
// dead and does not accuse others.
func LANGossipConfig() *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	// 60 ms / 30 ms: a silent node is probed within about a round and
	// declared dead two intervals after the failed probe, for a Down on
	// every survivor under half a second at p99 (100 ms / 50 ms gave
	// 587 ms). Lifeguard multiplies both up to 8x on a node whose own
	// acks come late, which keeps a saturated CPU from flapping.
	c.ProbeInterval = 60 * time.Millisecond
	c.ProbeTimeout = 30 * time.Millisecond
	c.SuspicionMult = 2
	c.SuspicionMaxTimeoutMult = 4
	c.GossipInterval = 20 * time.Millisecond
	c.GossipNodes = 4
	c.TCPTimeout = time.Second
	c.PushPullInterval = 10 * time.Second
	// No LZW on the interconnect: a LAN has bandwidth to spare, and at
	// 128 members compressing and expanding every packet was two fifths
	// of the members' CPU (each packet makes a new LZW table).
	c.EnableCompression = false
	return c
}
