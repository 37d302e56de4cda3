package clms

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/locus-ssi/locus/services/ics"
)

// cluster is a loopback cluster of members in this process, each with its
// own Raft and gossip sockets.
type cluster struct {
	t              *testing.T
	faults         *Faults
	selfFenceAfter time.Duration
	gateUp         bool
	waitForAll     int
	twoNode        bool
	fence          bool // a fence agent that stops the node (as a power-off would)
	// fenceAgent, if set, is the fence agent instead.
	fenceAgent func(ctx context.Context, node int) error
	// certAddr, if set, binds gossip claims to addresses (Config.CertAddr).
	certAddr func(node int) (netip.Addr, bool)
	// addr, if set, overrides node n's address (an impostor's).
	addr       map[int]string
	fenced     []int
	secure     func(n int) (*TLS, []byte) // Raft TLS and gossip key for node n
	selfFenced chan int
	// downs gets what each master's FailureDown was told.
	downs   chan failureDown
	mu      sync.Mutex
	members map[int]*Member
	console map[int]*syncBuffer
	dataDir map[int]string
}

type failureDown struct {
	master, node int
	d            time.Duration
	fenced       bool
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunLevelAndLeave: with GateUp a node stays ComingUp until it
// reports the cluster's run level; the run level is cluster state that
// only the master sets; a lost update of a node's state is sent again;
// a node that says it is leaving goes ShuttingDown,
// then Down (unfenced) once it is gone.
func TestRunLevelAndLeave(t *testing.T) {
	c := newCluster(t)
	c.gateUp = true
	m1 := c.start(1, false)
	c.waitAll("node 1 joins, ComingUp", 20*time.Second, states(ComingUp, 1))
	m1.SetReached(3)
	c.waitAll("node 1 Up at run level 3", 20*time.Second, states(Up, 1))
	m2, m3 := c.start(2, false), c.start(3, false)
	c.waitAll("nodes 2, 3 ComingUp", 20*time.Second, map[int]State{1: Up, 2: ComingUp, 3: ComingUp})
	m2.SetReached(2)
	m3.SetReached(3)
	c.waitAll("node 3 Up, node 2 still climbing", 20*time.Second, map[int]State{1: Up, 2: ComingUp, 3: Up})
	// Node 2 reaches the level but its update is lost (as when a busy
	// CPU kept memberlist from sending it): it is sent again well before
	// the next full state exchange (10 s).
	m2.reached.Store(3)
	c.waitAll("node 2 Up after its lost update was sent again", 5*time.Second, states(Up, 1, 2, 3))

	if err := m2.SetRunLevel(4); !errors.Is(err, ErrNotMaster) {
		t.Errorf("SetRunLevel on a non-master: %v, want ErrNotMaster", err)
	}
	if err := m1.SetRunLevel(9); err == nil {
		t.Errorf("SetRunLevel(9) succeeded")
	}
	if err := m1.SetRunLevel(4); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if m2.Status().RunLevel == 4 && m3.Status().RunLevel == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run level 4 not applied everywhere: %d, %d", m2.Status().RunLevel, m3.Status().RunLevel)
		}
	}

	m3.Leave()
	c.waitAll("node 3 ShuttingDown", 20*time.Second, map[int]State{1: Up, 2: Up, 3: ShuttingDown})
	c.kill(3)
	c.waitAll("node 3 Down after it left", 20*time.Second, map[int]State{1: Up, 2: Up, 3: Down})
	h := m2.History()
	if last := h[len(h)-1]; last.Node != 3 || last.State != Down || last.Reason != "shut down" {
		t.Errorf("last transition %+v, want node 3 Down, shut down", last)
	}
	c.checkHistories()

	// The rest of a whole-cluster shutdown: node 2 goes too. A leaving
	// node no longer counts for quorum, so node 1 alone still commits
	// its Down.
	// The master is leaving too (it goes last, as the CFS server does).
	m1.Leave()
	m2.Leave()
	c.waitAll("nodes 1, 2 ShuttingDown", 20*time.Second, map[int]State{1: ShuttingDown, 2: ShuttingDown, 3: Down})
	c.kill(2)
	c.waitAll("node 2 Down, node 1 left alone", 20*time.Second, map[int]State{1: ShuttingDown, 2: Down, 3: Down})
	if st := m1.Status(); !st.Quorum {
		t.Errorf("node 1, the last one, has no quorum: %+v", st)
	}
}

// TestRejoinAfterCleanup: a node that went Down comes back only once
// every node has finished its nodedown handlers for it.
func TestRejoinAfterCleanup(t *testing.T) {
	c := newCluster(t)
	c.start(1, false)
	c.waitAll("node 1 Up", 20*time.Second, states(Up, 1))
	m2 := c.start(2, false)
	c.start(3, false)
	c.waitAll("3 nodes Up", 20*time.Second, states(Up, 1, 2, 3))
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before the members close
	var sawDown atomic.Bool
	m2.OnTransition(func(tr Transition) {
		if tr.Node == 3 && tr.State == Down && !sawDown.Swap(true) {
			<-release // a slow cleanup: locks to recover, calls to fail
		}
	})
	c.kill(3)
	c.waitAll("node 3 Down", 20*time.Second, map[int]State{1: Up, 2: Up, 3: Down})
	c.start(3, false)
	// Node 3 is back in gossip, but node 2 has not finished cleaning up.
	time.Sleep(3 * time.Second)
	for _, m := range c.running() {
		for _, r := range m.Status().Nodes {
			if r.Node == 3 && r.State != Down && m.cfg.Node != 3 {
				t.Fatalf("node %d sees node 3 %s before node 2's nodedown handler finished", m.cfg.Node, r.State)
			}
		}
	}
	once.Do(func() { close(release) })
	c.waitAll("node 3 back Up after the cleanup", 20*time.Second, states(Up, 1, 2, 3))
	c.checkHistories()
}

// TestDownHandledReportedNotGossiped: a survivor's handled mark for a
// Down reaches the master in a direct report, not in a gossip broadcast
// to every member (at scale those broadcasts were most of the cluster's
// CPU), and the master lets the node rejoin on it.
func TestDownHandledReportedNotGossiped(t *testing.T) {
	c := newCluster(t)
	m1 := c.start(1, false)
	c.waitAll("node 1 Up", 20*time.Second, states(Up, 1))
	c.start(2, false)
	c.start(3, false)
	c.waitAll("3 nodes Up", 20*time.Second, states(Up, 1, 2, 3))
	c.kill(3)
	c.waitAll("node 3 Down", 20*time.Second, map[int]State{1: Up, 2: Up, 3: Down})
	var down uint64
	for _, r := range m1.Status().Nodes {
		if r.Node == 3 {
			down = r.Transition
		}
	}
	c.start(3, false)
	c.waitAll("node 3 back Up", 20*time.Second, states(Up, 1, 2, 3))
	// The master now (an election under load may have moved it: node 2
	// then reports to the new one within a second).
	deadline := time.Now().Add(5 * time.Second)
	for {
		var master *Member
		for _, m := range c.running() {
			if m.Status().Master == m.cfg.Node {
				master = m
			}
		}
		md, ok := meta{}, false
		if master != nil {
			md, ok = master.gossip.nodes()[2]
		}
		if ok && md.Handled >= down {
			t.Fatalf("node 2 gossiped its handled mark %d (>= the Down %d) to every member", md.Handled, down)
		}
		if ok && master.marks.of(2, md.Boot) >= down {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the master has no report from node 2 of handling node 3's Down %d", down)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.checkHistories()
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{t: t, members: map[int]*Member{}, console: map[int]*syncBuffer{}, dataDir: map[int]string{}, selfFenced: make(chan int, 64), downs: make(chan failureDown, 64)}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, m := range c.members {
			m.Close()
		}
	})
	return c
}

// start starts node n, joining through any running member.
func (c *cluster) start(n int, durable bool) *Member {
	c.t.Helper()
	c.mu.Lock()
	var join []string
	for _, m := range c.members {
		join = append(join, m.GossipAddr())
	}
	c.mu.Unlock()
	// Node N on 127.0.78.N with the real ports, as on an interconnect: a
	// node that restarts has the same addresses.
	cfg := Config{Node: n, Addr: fmt.Sprintf("127.0.78.%d", n), RaftPort: DefaultRaftPort, GossipPort: DefaultGossipPort,
		Bootstrap: len(join) == 0 || (c.twoNode && n == 1), TwoNode: c.twoNode, Join: join, Console: &syncBuffer{}, Faults: c.faults,
		SelfFenceAfter: c.selfFenceAfter, SelfFence: func() { c.selfFenced <- n },
		GateUp: c.gateUp, RunLevel: 3, WaitForAll: c.waitForAll,
		FailureDown: func(node int, d time.Duration, fenced bool) {
			select {
			case c.downs <- failureDown{n, node, d, fenced}:
			default:
			}
		}}
	if c.secure != nil {
		cfg.TLS, cfg.GossipKey = c.secure(n)
	}
	if c.fence {
		cfg.Fence = func(ctx context.Context, node int) error {
			c.mu.Lock()
			c.fenced = append(c.fenced, node)
			m := c.members[node]
			delete(c.members, node)
			c.mu.Unlock()
			if m != nil {
				m.Close()
			}
			return nil
		}
	}
	if c.fenceAgent != nil {
		cfg.Fence = c.fenceAgent
	}
	cfg.CertAddr = c.certAddr
	if a, ok := c.addr[n]; ok {
		cfg.Addr = a
	}
	if durable {
		if c.dataDir[n] == "" {
			c.dataDir[n] = c.t.TempDir()
		}
		cfg.DataDir = c.dataDir[n]
	}
	m, err := Start(cfg)
	if err != nil {
		c.t.Fatalf("start node %d: %v", n, err)
	}
	c.mu.Lock()
	c.members[n] = m
	c.console[n] = cfg.Console.(*syncBuffer)
	c.mu.Unlock()
	return m
}

// kill stops node n as a crash would.
func (c *cluster) kill(n int) {
	c.mu.Lock()
	m := c.members[n]
	delete(c.members, n)
	c.mu.Unlock()
	m.Close()
}

func (c *cluster) running() []*Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Member
	for _, m := range c.members {
		out = append(out, m)
	}
	return out
}

// waitAll waits until every running member sees want (node -> state) and
// one master, and returns that master.
func (c *cluster) waitAll(what string, timeout time.Duration, want map[int]State) int {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		master, ok := 0, true
		for _, m := range c.running() {
			st := m.Status()
			got := map[int]State{}
			for _, r := range st.Nodes {
				got[r.Node] = r.State
			}
			for n, s := range want {
				if got[n] != s {
					ok = false
					last = fmt.Sprintf("node %d sees node %d %s, want %s", m.cfg.Node, n, got[n], s)
				}
			}
			if master == 0 {
				master = st.Master
			}
			if st.Master == 0 || st.Master != master {
				ok = false
				last = fmt.Sprintf("node %d sees master %d (others %d)", m.cfg.Node, st.Master, master)
			}
		}
		if ok {
			return master
		}
		// Asking every member costs each a little: ask big clusters less
		// often.
		time.Sleep(time.Duration(max(1, len(c.running())/8)) * 20 * time.Millisecond)
	}
	c.t.Fatalf("%s: not reached in %s: %s", what, timeout, last)
	return 0
}

// checkHistories asserts that every running member applied the same
// transition for every id it has: one sequence, whoever was master.
func (c *cluster) checkHistories() {
	c.t.Helper()
	seen := map[uint64]Transition{}
	for _, m := range c.running() {
		prev := uint64(0)
		for _, tr := range m.History() {
			if prev != 0 && tr.ID != prev+1 {
				c.t.Errorf("node %d skipped from transition %d to %d", m.cfg.Node, prev, tr.ID)
			}
			prev = tr.ID
			if o, ok := seen[tr.ID]; ok && (o.Node != tr.Node || o.State != tr.State || o.Master != tr.Master) {
				c.t.Errorf("transition %d differs: %+v vs %+v", tr.ID, o, tr)
			}
			seen[tr.ID] = tr
		}
	}
}

func states(s State, nodes ...int) map[int]State {
	m := map[int]State{}
	for _, n := range nodes {
		m[n] = s
	}
	return m
}

func TestFiveNodesJoinFailAndRejoin(t *testing.T) {
	c := newCluster(t)
	t0 := time.Now()
	c.start(1, true)
	for n := 2; n <= 5; n++ {
		c.start(n, n == 2)
	}
	master := c.waitAll("five nodes Up", 15*time.Second, states(Up, 1, 2, 3, 4, 5))
	t.Logf("five nodes Up in %v", time.Since(t0).Round(time.Millisecond))
	if master != 1 {
		t.Errorf("master is node %d, want the founding node 1", master)
	}
	c.checkHistories()

	// A voter fails: every survivor applies its Down, with the same id.
	start := time.Now()
	c.kill(3)
	want := states(Up, 1, 2, 4, 5)
	want[3] = Down
	c.waitAll("node 3 Down", 10*time.Second, want)
	t.Logf("node 3 Down everywhere %v after it stopped", time.Since(start).Round(time.Millisecond))
	c.checkHistories()
	// The master measured the Down from gossip's loss of node 3.
	select {
	case fd := <-c.downs:
		if fd.master != 1 || fd.node != 3 || fd.fenced || fd.d <= 0 || fd.d > time.Since(start) {
			t.Errorf("FailureDown: %+v, want master 1 telling of node 3, unfenced, within the %v since the kill", fd, time.Since(start))
		}
		t.Logf("the master committed node 3's Down %v after gossip lost it", fd.d.Round(time.Millisecond))
	default:
		t.Error("the master did not tell FailureDown of node 3's Down")
	}
	for _, m := range c.running() {
		if got := c.console[m.cfg.Node].String(); !bytes.Contains([]byte(got), []byte("node 3 Down")) {
			t.Errorf("node %d's console lacks the Down line:\n%s", m.cfg.Node, got)
		}
	}

	// The master fails: a new one takes over and takes it Down.
	start = time.Now()
	c.kill(1)
	want = states(Up, 2, 4, 5)
	want[1], want[3] = Down, Down
	newMaster := c.waitAll("node 1 Down", 15*time.Second, want)
	t.Logf("master failover: node %d is master, node 1 Down everywhere %v after it stopped", newMaster, time.Since(start).Round(time.Millisecond))
	if newMaster == 1 {
		t.Error("the dead master is still master")
	}
	c.checkHistories()

	// Node 3 (diskless) reboots with empty state: it comes back Up
	// through ComingUp, under a new transition id.
	start = time.Now()
	m3 := c.start(3, false)
	want[3] = Up
	c.waitAll("node 3 back", 15*time.Second, want)
	t.Logf("node 3 rejoined with empty state in %v", time.Since(start).Round(time.Millisecond))
	c.checkHistories()
	// What node 3 replayed while catching up (node 1's Down among it) is
	// history to it; its own Up, committed after it joined, is live.
	// (Live is exact for transitions whose handlers ran.)
	for h := m3.History(); m3.handled.Load() < h[len(h)-1].ID; h = m3.History() {
		time.Sleep(10 * time.Millisecond)
	}
	var joined uint64
	for _, tr := range m3.History() {
		if tr.Node == 3 && tr.State == ComingUp {
			joined = tr.ID
		}
	}
	for _, tr := range m3.History() {
		if live := m3.Live(tr); live != (joined != 0 && tr.ID > joined) {
			t.Errorf("node 3: transition %d (node %d %s): Live %v, its join was %d", tr.ID, tr.Node, tr.State, live, joined)
		}
		if tr.Node == 1 && tr.State == Down && m3.Live(tr) {
			t.Errorf("node 3 takes node 1's Down (transition %d, before it joined) as live", tr.ID)
		}
	}
	for _, m := range c.running() {
		st := m.Status()
		if !st.Quorum {
			t.Errorf("node %d says it has no quorum: %+v", m.cfg.Node, st)
		}
	}
}

// TestWaitForAll: with wait_for_all for three nodes, two nodes join
// (ComingUp, so they can boot) but none is taken Up, and status says why;
// the third makes the cluster form and all go Up. Once formed, a node
// that fails and returns does not make the cluster wait again.
func TestWaitForAll(t *testing.T) {
	c := newCluster(t)
	c.waitForAll = 3
	c.start(1, true)
	c.start(2, false)
	c.waitAll("two nodes joined, held ComingUp", 15*time.Second, states(ComingUp, 1, 2))
	time.Sleep(2 * time.Second)
	for _, m := range c.running() {
		st := m.Status()
		for _, r := range st.Nodes {
			if r.State == Up {
				t.Fatalf("node %d sees node %d Up before all three were seen", m.cfg.Node, r.Node)
			}
		}
		if st.Waiting == "" {
			t.Errorf("node %d's status does not say it waits: %+v", m.cfg.Node, st)
		}
	}
	c.start(3, false)
	c.waitAll("all three Up", 15*time.Second, states(Up, 1, 2, 3))
	for _, m := range c.running() {
		if w := m.Status().Waiting; w != "" {
			t.Errorf("node %d still says %q", m.cfg.Node, w)
		}
	}
	c.kill(3)
	c.waitAll("node 3 Down", 15*time.Second, map[int]State{1: Up, 2: Up, 3: Down})
	c.start(3, false)
	c.waitAll("node 3 back without waiting for all", 20*time.Second, states(Up, 1, 2, 3))
	c.checkHistories()
}

func TestStaleTransitionRefused(t *testing.T) {
	f := newFSM(nil)
	if _, err := f.applyLocked(command{Node: 2, State: ComingUp}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.applyLocked(command{Node: 2, State: Up, Expect: 1}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []command{
		{Node: 2, State: Down, Expect: 1},     // decided before the Up
		{Node: 2, State: ComingUp, Expect: 2}, // Up -> ComingUp is no transition
		{Node: 0, State: ComingUp},            // no such node
		{Node: 3, State: Up},                  // NeverUp -> Up skips ComingUp
	} {
		if _, err := f.applyLocked(c); err == nil {
			t.Errorf("%+v was applied", c)
		}
	}
	if _, last := f.snapshot(); last != 2 {
		t.Errorf("refused commands moved the transition id to %d", last)
	}
}

func TestSixtyFourNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("64 members")
	}
	c := newCluster(t)
	t0 := time.Now()
	c.start(1, true)
	for n := 2; n <= 64; n++ {
		c.start(n, false)
	}
	all := make([]int, 64)
	for i := range all {
		all[i] = i + 1
	}
	c.waitAll("64 nodes Up", 3*time.Minute, states(Up, all...))
	t.Logf("64 nodes Up in %v", time.Since(t0).Round(time.Millisecond))
	voters := 0
	for _, r := range c.members[1].Status().Nodes {
		if r.Voter {
			voters++
		}
	}
	if voters != 5 {
		t.Errorf("%d voters, want 5", voters)
	}
	// A non-voter and the master fail together.
	start := time.Now()
	c.kill(40)
	c.kill(1)
	want := states(Up, all[1:]...)
	want[1], want[40] = Down, Down
	master := c.waitAll("nodes 1 and 40 Down", time.Minute, want)
	t.Logf("master %d; nodes 1 and 40 Down on all 62 survivors %v after they stopped", master, time.Since(start).Round(time.Millisecond))
	c.checkHistories()
}

// FuzzApply feeds the state machine arbitrary log entries: garbage is
// refused with an error, never applied, never a crash; the transition id
// only moves on a valid transition.
func FuzzApply(f *testing.F) {
	f.Add([]byte(`{"node":2,"state":"ComingUp","expect":0}`))
	f.Add([]byte(`{"node":2,"state":"Up","expect":1}`))
	f.Add([]byte(`{"node":-1,"state":"Down"}`))
	f.Add([]byte(`{"node":2,"state":"Up"`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := newFSM(nil)
		fsm.Apply(&raft.Log{Index: 1, Data: []byte(`{"node":2,"state":"ComingUp","expect":0}`)})
		before, _ := fsm.record(2)
		_, lastBefore := fsm.snapshot()
		res := fsm.Apply(&raft.Log{Index: 2, Data: data})
		_, last := fsm.snapshot()
		switch r := res.(type) {
		case error:
			if after, _ := fsm.record(2); last != lastBefore || after != before {
				t.Fatalf("a refused entry changed state: %v", r)
			}
		case Transition:
			if last != lastBefore+1 || r.ID != last {
				t.Fatalf("applied transition %+v, ids %d -> %d", r, lastBefore, last)
			}
		case nil, RunLevelSet, RecordsWritten:
			if last != lastBefore {
				t.Fatalf("a %T entry moved the transition id", r)
			}
		default:
			t.Fatalf("Apply returned %T", res)
		}
	})
}

// The whole cluster restarts: node 1 keeps its Raft log on disk, the
// others come back with nothing. Node 1 is master again, and the others
// (whose old boots it remembers) go Down and come back Up.
func TestWholeClusterRestart(t *testing.T) {
	c := newCluster(t)
	c.start(1, true)
	for n := 2; n <= 3; n++ {
		c.start(n, false)
	}
	c.waitAll("three Up", 15*time.Second, states(Up, 1, 2, 3))
	for n := 3; n >= 1; n-- {
		c.kill(n)
	}
	c.start(1, true)
	for n := 2; n <= 3; n++ {
		c.start(n, false)
	}
	master := c.waitAll("three Up after the restart", 30*time.Second, states(Up, 1, 2, 3))
	t.Logf("master after restart: node %d", master)
	c.checkHistories()
}

// A partition: the master and one other node are cut off from the other
// three. The majority elects a master and takes the two Down; the
// minority grants nothing and says it has no quorum; after the heal the
// two come back Up. One sequence of transitions throughout.
func TestPartition(t *testing.T) {
	c := newCluster(t)
	c.faults = NewFaults()
	c.selfFenceAfter = 2 * time.Second
	c.start(1, true)
	for n := 2; n <= 5; n++ {
		c.start(n, false)
	}
	c.waitAll("five Up", 15*time.Second, states(Up, 1, 2, 3, 4, 5))
	minority, majority := []string{"127.0.78.1", "127.0.78.2"}, []string{"127.0.78.3", "127.0.78.4", "127.0.78.5"}
	start := time.Now()
	c.faults.Partition(minority, majority)

	// The majority side.
	want := states(Up, 3, 4, 5)
	want[1], want[2] = Down, Down
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok := true
		for _, n := range []int{3, 4, 5} {
			st := c.members[n].Status()
			got := map[int]State{}
			for _, r := range st.Nodes {
				got[r.Node] = r.State
			}
			for k, v := range want {
				ok = ok && got[k] == v
			}
			ok = ok && st.Quorum && st.Master >= 3
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the majority did not take the minority Down: %+v", c.members[3].Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("majority: new master, nodes 1 and 2 Down, %v after the cut", time.Since(start).Round(time.Millisecond))
	// The minority side: no quorum, and it committed nothing.
	for deadline := time.Now().Add(10 * time.Second); ; {
		s1, s2 := c.members[1].Status(), c.members[2].Status()
		if !s1.Quorum && !s2.Quorum {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the minority still claims quorum: %+v / %+v", s1, s2)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.checkHistories()
	// Cut off for two seconds, the minority fences itself; the majority
	// never does.
	fenced := map[int]bool{}
	for timeout := time.After(10 * time.Second); len(fenced) < 2; {
		select {
		case n := <-c.selfFenced:
			fenced[n] = true
		case <-timeout:
			t.Fatalf("self-fenced: %v, want nodes 1 and 2", fenced)
		}
	}
	if !fenced[1] || !fenced[2] {
		t.Errorf("self-fenced: %v, want nodes 1 and 2", fenced)
	}

	c.faults.Heal()
	c.waitAll("healed", 60*time.Second, states(Up, 1, 2, 3, 4, 5))
	c.checkHistories()
}

// TestNoSelfFenceInElection: a node without a master that still gossips
// with a majority of the voters is in an election, not cut off: it must
// not fence itself however long the election takes (here Raft is cut
// between every pair for four times SelfFenceAfter, gossip is not).
func TestNoSelfFenceInElection(t *testing.T) {
	c := newCluster(t)
	c.faults = NewFaults()
	c.selfFenceAfter = time.Second
	c.start(1, true)
	c.start(2, false)
	c.start(3, false)
	c.waitAll("three Up", 15*time.Second, states(Up, 1, 2, 3))
	c.faults.PartitionRaft([]string{"127.0.78.1"}, []string{"127.0.78.2", "127.0.78.3"})
	c.faults.PartitionRaft([]string{"127.0.78.2"}, []string{"127.0.78.3"})
	quorum := func(want bool, within time.Duration, what string) {
		t.Helper()
		for deadline := time.Now().Add(within); ; {
			ok := true
			for n := 1; n <= 3; n++ {
				ok = ok && c.members[n].Status().Quorum == want
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	quorum(false, 10*time.Second, "Raft cut between every pair, a node still claims quorum")
	select {
	case n := <-c.selfFenced:
		t.Fatalf("node %d fenced itself while it gossiped with every voter", n)
	case <-time.After(4 * c.selfFenceAfter):
	}
	c.faults.Heal()
	quorum(true, 20*time.Second, "healed, no quorum again")
	select {
	case n := <-c.selfFenced:
		t.Fatalf("node %d fenced itself", n)
	default:
	}
}

// TestTwoNode: corosync's two_node on Raft. Node 1 founds the cluster
// and votes; node 2 follows. When node 1 dies, node 2 fences it and goes
// on alone as master; node 1 comes back and joins under node 2 (it does
// not found a second cluster); then node 2 dies and node 1 goes on alone.
// Through a split, the master fences the follower first and only one
// side goes on.
func TestTwoNode(t *testing.T) {
	c := newCluster(t)
	c.twoNode, c.fence = true, true
	c.faults = NewFaults()
	c.start(1, false)
	c.waitAll("node 1 founds the cluster", 20*time.Second, states(Up, 1))
	c.start(2, false)
	if master := c.waitAll("2 nodes Up", 20*time.Second, states(Up, 1, 2)); master != 1 {
		t.Fatalf("master is node %d, want 1", master)
	}
	voters := func(m *Member) (v []int) {
		for _, r := range m.Status().Nodes {
			if r.Voter {
				v = append(v, r.Node)
			}
		}
		return v
	}
	if v := voters(c.members[2]); len(v) != 1 || v[0] != 1 {
		t.Errorf("voters %v, want only the master, node 1", v)
	}

	c.mu.Lock()
	c.fenced = nil
	c.mu.Unlock()
	start := time.Now()
	c.kill(1)
	master := c.waitAll("node 2 alone", 20*time.Second, map[int]State{1: Down, 2: Up})
	t.Logf("node 1 (master) killed: node 2 is master %v later", time.Since(start).Round(time.Millisecond))
	if master != 2 {
		t.Fatalf("master %d, want 2", master)
	}
	// Fenced once, by two_node; the Down it then commits does not power
	// the node off again (with a reboot agent, that would hit its next
	// boot).
	c.mu.Lock()
	fencedOnce := slices.Equal(c.fenced, []int{1})
	fencedList := append([]int(nil), c.fenced...)
	c.mu.Unlock()
	if !fencedOnce {
		t.Errorf("fences after node 1 was killed: %v, want [1]", fencedList)
	}
	m2 := c.running()[0]
	if st := m2.Status(); !st.Quorum {
		t.Errorf("node 2 alone has no quorum: %+v", st)
	}
	h := m2.History()
	if last := h[len(h)-1]; last.Node != 1 || last.State != Down || !bytes.HasSuffix([]byte(last.Reason), []byte(ReasonFenced)) {
		t.Errorf("last transition %+v, want node 1 Down, fenced", last)
	}

	start = time.Now()
	c.start(1, false) // the founding node, back: it must join, not found
	if master := c.waitAll("node 1 back under node 2", 30*time.Second, states(Up, 1, 2)); master != 2 {
		t.Fatalf("master %d after node 1 came back, want 2", master)
	}
	t.Logf("node 1 back Up under node 2 in %v", time.Since(start).Round(time.Millisecond))
	c.checkHistories()

	c.kill(2)
	if master := c.waitAll("node 1 alone", 20*time.Second, map[int]State{1: Up, 2: Down}); master != 1 {
		t.Fatalf("master %d, want 1", master)
	}
	c.start(2, false)
	c.waitAll("node 2 back", 30*time.Second, states(Up, 1, 2))

	// A split: both lose each other. The master fences at once; the
	// follower waits, so it is the one powered off.
	c.mu.Lock()
	c.fenced = nil
	c.mu.Unlock()
	c.faults.Partition([]string{"127.0.78.1"}, []string{"127.0.78.2"})
	c.waitAll("the master alone after the split", 20*time.Second, map[int]State{1: Up, 2: Down})
	time.Sleep(3 * time.Second) // the follower's fence delay, and more
	c.mu.Lock()
	fenced := append([]int(nil), c.fenced...)
	_, alive1 := c.members[1]
	c.mu.Unlock()
	if len(fenced) == 0 || fenced[0] != 2 || !alive1 {
		t.Errorf("after the split: fenced %v, node 1 running %v; want node 2 fenced first and node 1 running", fenced, alive1)
	}
}

// TestTwoNodeWithoutFence: without a fence agent the follower cannot
// know the master is off, so it does not take over, and says why.
func TestTwoNodeWithoutFence(t *testing.T) {
	c := newCluster(t)
	c.twoNode = true
	c.start(1, false)
	c.waitAll("node 1 founds the cluster", 20*time.Second, states(Up, 1))
	m2 := c.start(2, false)
	c.waitAll("2 nodes Up", 20*time.Second, states(Up, 1, 2))
	c.kill(1)
	time.Sleep(5 * time.Second)
	if st := m2.Status(); st.Master != 0 || st.Quorum {
		t.Errorf("node 2 without a fence agent: master %d, quorum %v; want neither", st.Master, st.Quorum)
	}
}

// TestTLSAndGossipKey: with Raft over mutual TLS and sealed gossip, the
// cluster forms as usual; a node without the gossip key is never seen;
// a Raft connection with a certificate from another CA, or with a node's
// certificate used from another address, is refused at its handshake.
func TestTLSAndGossipKey(t *testing.T) {
	ca, err := ics.LoadOrCreateCA(t.TempDir(), "test")
	if err != nil {
		t.Fatal(err)
	}
	other, err := ics.LoadOrCreateCA(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	identity := func(ca *ics.CA, n int, ip string) *TLS {
		t.Helper()
		key, csr, err := ics.NewKey(n)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.Issue(csr, n, net.ParseIP(ip), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		server, client, err := ics.Identity{Node: n, CertPEM: cert, KeyPEM: key, CAPEM: ca.CertPEM}.MutualTLS()
		if err != nil {
			t.Fatal(err)
		}
		return &TLS{Server: server, Client: client}
	}
	key := bytes.Repeat([]byte{7}, 32)
	c := newCluster(t)
	c.secure = func(n int) (*TLS, []byte) { return identity(ca, n, fmt.Sprintf("127.0.78.%d", n)), key }
	for n := 1; n <= 3; n++ {
		c.start(n, false)
	}
	c.waitAll("3 nodes Up over TLS", 20*time.Second, states(Up, 1, 2, 3))

	// Node 4 has a certificate but not the gossip key: no member hears it.
	c.secure = func(n int) (*TLS, []byte) { return identity(ca, n, "127.0.78.4"), bytes.Repeat([]byte{8}, 32) }
	c.start(4, false)
	time.Sleep(3 * time.Second)
	for _, m := range c.running() {
		if m.cfg.Node == 4 {
			continue
		}
		for _, r := range m.Status().Nodes {
			if r.Node == 4 {
				t.Errorf("node %d lists node 4 (%s), which lacks the gossip key", m.cfg.Node, r.State)
			}
		}
	}
	c.kill(4)

	// dial opens a Raft connection to node 1 with id from address from,
	// sends what write writes, and reads: TLS 1.3 has the server judge
	// the client's certificate after the client's handshake is done, so
	// its verdict (or Raft's answer) arrives on the read.
	dial := func(id *TLS, from string, write func(io.Writer) error) error {
		d := &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		cfg := id.Client.Clone()
		cfg.ServerName = "127.0.78.1"
		conn, err := tls.DialWithDialer(d, "tcp", fmt.Sprintf("127.0.78.1:%d", DefaultRaftPort), cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		if write != nil {
			if err := write(conn); err != nil {
				return err
			}
		}
		_, err = conn.Read(make([]byte, 1))
		return err
	}
	if err := dial(identity(ca, 2, "127.0.78.2"), "127.0.78.9", nil); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("node 2's certificate used from 127.0.78.9: %v, want refused", err)
	}
	if err := dial(identity(other, 5, "127.0.78.5"), "127.0.78.5", nil); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a certificate from another CA: %v, want refused", err)
	}
	// A certificate from the cluster CA at its own address is accepted
	// (the connection waits for Raft's first message).
	if err := dial(identity(ca, 5, "127.0.78.5"), "127.0.78.5", nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("node 5's own certificate: %v, want an open connection", err)
	}
	// Node 2's own certificate, at its own address, asking as node 2 is
	// answered; asking for a vote as node 3, or sending entries as node
	// 1 (the leader), closes the connection before Raft sees it.
	rpc := func(typ byte, req any) error {
		return dial(identity(ca, 2, "127.0.78.2"), "127.0.78.2", func(w io.Writer) error {
			w.Write([]byte{typ})
			return codec.NewEncoder(w, &codec.MsgpackHandle{}).Encode(req)
		})
	}
	vote := func(id string) *raft.RequestVoteRequest {
		return &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte(id), Addr: []byte(fmt.Sprintf("127.0.78.2:%d", DefaultRaftPort))}, Term: 1}
	}
	if err := rpc(rpcRequestVote, vote("2")); err != nil {
		t.Errorf("a vote request as node 2 with node 2's certificate: %v, want an answer", err)
	}
	if err := rpc(rpcRequestVote, vote("3")); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a vote request as node 3 with node 2's certificate: %v, want the connection closed", err)
	}
	entries := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("1"), Addr: []byte(fmt.Sprintf("127.0.78.1:%d", DefaultRaftPort))}, Term: 99}
	if err := rpc(rpcAppendEntries, entries); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("entries as node 1 (the leader) with node 2's certificate: %v, want the connection closed", err)
	}
	// And Raft never saw them: a term of 99 would have made node 1 (the
	// leader) step down to it.
	c.mu.Lock()
	m1 := c.members[1]
	c.mu.Unlock()
	if term := m1.Status().Term; term >= 99 {
		t.Errorf("node 1's Raft term is %d after forged entries of term 99: the guard let them through", term)
	}
	spoofAddr := vote("2")
	spoofAddr.Addr = []byte(fmt.Sprintf("127.0.78.3:%d", DefaultRaftPort))
	if err := rpc(rpcRequestVote, spoofAddr); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a vote request claiming node 3's address: %v, want the connection closed", err)
	}
	if err := rpc(9, vote("2")); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("an unknown RPC type: %v, want the connection closed", err)
	}
	c.waitAll("the cluster unchanged", 5*time.Second, states(Up, 1, 2, 3))
}

// FuzzGossipMeta feeds the gossip table arbitrary metadata from a peer:
// whatever it is, the table keeps the member (it is alive) but lists it
// as a Locus node only with a node number and a Raft address, and
// nothing crashes.
func FuzzGossipMeta(f *testing.F) {
	f.Add([]byte(`{"n":2,"r":"10.77.0.2:7472","b":"ab12","g":"10.77.0.2:7473","l":3,"h":7,"c":true}`))
	f.Add([]byte(`{"n":0,"r":"x"}`))
	f.Add([]byte(`{"n":2}`))
	f.Add([]byte(`{"n":"2","r":5}`))
	f.Add([]byte{0xff, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		g := newGossipTable(make(kick, 1), nil, nil)
		g.NotifyJoin(&memberlist.Node{Name: "node2", Addr: net.IPv4(10, 77, 0, 2), Port: 7473, Meta: data})
		if got := len(g.members()); got != 1 {
			t.Fatalf("%d members after one join", got)
		}
		for n, md := range g.nodes() {
			if n < 1 || md.Raft == "" || n != md.Node {
				t.Fatalf("listed node %d with %+v", n, md)
			}
		}
		g.NotifyLeave(&memberlist.Node{Name: "node2"})
		if len(g.members()) != 0 {
			t.Fatal("a member left but is still listed")
		}
	})
}

// TestFencingOffTheHotPath: the master fences each failed node off its
// loop. A hung agent (node 6's) delays only node 6's Down, not node 3's;
// a failing agent (node 7's) is tried again after a growing pause, not
// ten times a second, while node 7 stays as it was and the master's
// status says why; once the agent works, node 7 goes Down, fenced.
func TestFencingOffTheHotPath(t *testing.T) {
	c := newCluster(t)
	var mu sync.Mutex
	calls := map[int]int{}
	fixed := false
	c.fenceAgent = func(ctx context.Context, node int) error {
		mu.Lock()
		calls[node]++
		works := fixed
		mu.Unlock()
		switch node {
		case 6:
			<-ctx.Done() // hangs until the deadline (or the member stops)
			return ctx.Err()
		case 7:
			if !works {
				return errors.New("BMC unreachable")
			}
		}
		return nil
	}
	all := []int{1, 2, 3, 4, 5, 6, 7}
	for _, n := range all {
		c.start(n, false)
	}
	c.waitAll("seven Up", 30*time.Second, states(Up, all...))
	// 6 and 7 are non-voters (five voters at most): killing them and
	// node 3 leaves the voters their majority.
	c.kill(6)
	time.Sleep(500 * time.Millisecond) // node 6's fence is hanging by now
	start := time.Now()
	c.kill(3)
	c.kill(7)
	want := map[int]State{1: Up, 2: Up, 3: Down, 4: Up, 5: Up, 6: Up, 7: Up}
	c.waitAll("node 3 Down while node 6's fence hangs", 10*time.Second, want)
	t.Logf("node 3 Down %v after its kill, node 6's fence hanging", time.Since(start).Round(time.Millisecond))
	time.Sleep(3 * time.Second)
	mu.Lock()
	n7 := calls[7]
	mu.Unlock()
	if n7 < 2 || n7 > 4 {
		t.Errorf("node 7's failing agent ran %d times in about 3 s, want 2-4 (pauses of 1, 2, 4 s)", n7)
	}
	var master *Member
	for _, m := range c.running() {
		if m.Status().Master == m.cfg.Node {
			master = m
		}
	}
	if master == nil {
		t.Fatal("no master")
	}
	for _, r := range master.Status().Nodes {
		switch r.Node {
		case 7:
			if r.State != Up || !strings.Contains(r.Fence, "not fenced") || !strings.Contains(r.Fence, "BMC unreachable") {
				t.Errorf("node 7 on the master: %s, fence %q; want Up, not fenced, saying why", r.State, r.Fence)
			}
		case 6:
			if r.State != Up || !strings.HasPrefix(r.Fence, "fencing") {
				t.Errorf("node 6 on the master: %s, fence %q; want Up, fencing", r.State, r.Fence)
			}
		}
	}
	mu.Lock()
	fixed = true
	mu.Unlock()
	want[7] = Down
	c.waitAll("node 7 Down once its agent works", 20*time.Second, want)
	for _, tr := range master.History() {
		if tr.Node == 7 && tr.State == Down && !strings.HasSuffix(tr.Reason, ReasonFenced) {
			t.Errorf("node 7's Down = %q, want it fenced", tr.Reason)
		}
	}
}

// TestGossipClaimsBoundToAddresses: with the spec's addresses bound to
// node numbers (as certificates bind them), a member claiming node 3
// from another address is never taken for node 3: the master does not
// bring it in, and its status reports the refusal; the gossip table
// refuses a name that does not match the number too.
func TestGossipClaimsBoundToAddresses(t *testing.T) {
	certAddr := func(n int) (netip.Addr, bool) {
		return netip.AddrFrom4([4]byte{127, 0, 78, byte(n)}), n >= 1 && n < 255
	}
	g := newGossipTable(make(kick, 1), certAddr, nil)
	join := func(name, ip string, n int) {
		md := fmt.Sprintf(`{"n":%d,"r":"%s:7472","b":"b1","g":"%s:7473"}`, n, ip, ip)
		g.NotifyJoin(&memberlist.Node{Name: name, Addr: net.ParseIP(ip), Port: 7473, Meta: []byte(md)})
	}
	join("node2", "127.0.78.2", 2)
	join("node3", "127.0.78.9", 3) // node 3's number from another address
	join("node5", "127.0.78.4", 4) // node 4's number under another name
	if got := g.nodes(); len(got) != 1 || got[2].Node != 2 {
		t.Errorf("nodes = %v, want node 2 only", got)
	}
	if r := g.refused(); len(r) != 2 || !strings.Contains(strings.Join(r, "\n"), "certificate names 127.0.78.3") {
		t.Errorf("refused = %q, want the two impostors, one for its address", r)
	}

	c := newCluster(t)
	c.certAddr = certAddr
	c.addr = map[int]string{3: "127.0.78.9"}
	c.start(1, false)
	c.start(2, false)
	c.waitAll("two Up", 20*time.Second, states(Up, 1, 2))
	c.start(3, false) // an impostor: node 3's number, 127.0.78.9
	deadline := time.Now().Add(3 * time.Second)
	var st Status
	for time.Now().Before(deadline) {
		st = c.members[1].Status()
		if len(st.Refused) > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(st.Refused) == 0 || !strings.Contains(st.Refused[0], "node 3") {
		t.Errorf("master's status refused = %q, want the impostor claiming node 3", st.Refused)
	}
	time.Sleep(time.Second)
	for _, r := range c.members[1].Status().Nodes {
		if r.Node == 3 {
			t.Errorf("the impostor was taken in as node 3: %+v", r)
		}
	}
}

// FuzzRaftRPC feeds the Raft guard arbitrary bytes as a request from node
// 2 at 127.0.78.2: it never crashes, and whatever it lets through names
// node 2.
func FuzzRaftRPC(f *testing.F) {
	enc := func(typ byte, req any) []byte {
		var b bytes.Buffer
		b.WriteByte(typ)
		codec.NewEncoder(&b, &codec.MsgpackHandle{}).Encode(req)
		return b.Bytes()
	}
	hdr := raft.RPCHeader{ID: []byte("2"), Addr: []byte("127.0.78.2:7472")}
	f.Add(enc(rpcAppendEntries, &raft.AppendEntriesRequest{RPCHeader: hdr, Term: 3, Entries: []*raft.Log{{Index: 1, Data: []byte("x")}}}))
	f.Add(enc(rpcRequestVote, &raft.RequestVoteRequest{RPCHeader: hdr, Term: 1}))
	f.Add(enc(rpcInstallSnapshot, &raft.InstallSnapshotRequest{RPCHeader: hdr, Size: 3}))
	f.Add(enc(rpcTimeoutNow, &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ID: []byte("3")}}))
	f.Add([]byte{0, 0xc1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var buf bytes.Buffer
		why, err := readRPC(bytes.NewReader(b), &buf, codec.NewDecoder(nil, &codec.MsgpackHandle{}), 2, "127.0.78.2")
		if why == "" && err == nil && !bytes.HasPrefix(b, buf.Bytes()) {
			t.Fatalf("passed on %d bytes that are not what came", buf.Len())
		}
	})
}
