package dlm

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/events"
)

// fakeKernel records what the daemon writes, and checks the kernel's
// rule as it goes: when a lockspace starts anywhere, every other node
// running it runs it with the same members (all stopped before any
// started again).
type fakeKernel struct {
	node int
	w    *world
}

type kspace struct {
	running  bool
	members  []int
	id       bool
	renewed  []int
	answered []int // event_done results
}

type world struct {
	t  *testing.T
	mu sync.Mutex
	// per node: comms entries (node -> times set), lockspaces
	comms    map[int]map[int]int
	removed  map[int][]int // comms removals, in order
	spaces   map[int]map[string]*kspace
	status   clms.Status
	noQuorum map[int]bool
	leaving  map[int]bool // told the cluster it shuts down
	svcs     map[int]*Service
	events   map[int]chan Uevent
	boots    map[int]string
	feeds    map[int]*events.Feed // each node's event feed
}

func (k fakeKernel) Configure(string, int) error { return nil }
func (k fakeKernel) SetComm(n int, _ netip.Addr, local bool) error {
	k.w.mu.Lock()
	defer k.w.mu.Unlock()
	if k.w.comms[k.node] == nil {
		k.w.comms[k.node] = map[int]int{}
	}
	if _, ok := k.w.comms[k.node][n]; ok && k.w.comms[k.node][n] > 0 {
		return fmt.Errorf("comms/%d exists", n)
	}
	k.w.comms[k.node][n]++
	return nil
}
func (k fakeKernel) RemoveComm(n int) error {
	k.w.mu.Lock()
	defer k.w.mu.Unlock()
	k.w.comms[k.node][n] = 0
	k.w.removed[k.node] = append(k.w.removed[k.node], n)
	return nil
}
func (k fakeKernel) Lockspaces() ([]string, error) { return nil, nil }
func (k fakeKernel) sp(ls string) *kspace {
	if k.w.spaces[k.node] == nil {
		k.w.spaces[k.node] = map[string]*kspace{}
	}
	if k.w.spaces[k.node][ls] == nil {
		k.w.spaces[k.node][ls] = &kspace{}
	}
	return k.w.spaces[k.node][ls]
}
func (k fakeKernel) Stop(ls string) error {
	k.w.mu.Lock()
	defer k.w.mu.Unlock()
	k.sp(ls).running = false
	return nil
}
func (k fakeKernel) Start(ls string, members, renew []int, first bool) error {
	k.w.mu.Lock()
	defer k.w.mu.Unlock()
	for other, spaces := range k.w.spaces {
		if sp := spaces[ls]; other != k.node && sp != nil && sp.running && !slices.Equal(sp.members, members) {
			k.w.t.Errorf("node %d starts %s with %v while node %d runs it with %v", k.node, ls, members, other, sp.members)
		}
	}
	for _, m := range members {
		if m != k.node && k.w.comms[k.node][m] == 0 {
			k.w.t.Errorf("node %d starts %s with member %d but has no comms entry for it", k.node, ls, m)
		}
	}
	sp := k.sp(ls)
	if first == sp.id {
		k.w.t.Errorf("node %d: start of %s first=%v, but its id was written=%v", k.node, ls, first, sp.id)
	}
	sp.running, sp.members, sp.id, sp.renewed = true, slices.Clone(members), true, renew
	return nil
}
func (k fakeKernel) EventDone(ls string, result int) error {
	k.w.mu.Lock()
	defer k.w.mu.Unlock()
	sp := k.sp(ls)
	sp.answered = append(sp.answered, result)
	return nil
}
func (k fakeKernel) RemoveSpace(ls string) error {
	k.w.mu.Lock()
	defer k.w.mu.Unlock()
	sp := k.sp(ls)
	sp.members, sp.id = nil, false
	return nil
}
func (k fakeKernel) AckWithdraw(string) error { return nil }

// published waits until node n's feed has lockspace ls started with
// members as its last event.
func (w *world) published(n int, ls, members string) {
	w.t.Helper()
	w.mu.Lock()
	feed := w.feeds[n]
	w.mu.Unlock()
	var evs []events.Event
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		evs = feed.Since(0)
		if len(evs) > 0 {
			e := evs[len(evs)-1]
			if e.Kind == events.LockspaceStarted && e.Name == ls && e.Attrs[events.AttrMembers] == members {
				return
			}
		}
	}
	w.t.Errorf("node %d's events: %+v, want %s started with members %s last", n, evs, ls, members)
}

func newWorld(t *testing.T, nodes ...int) *world {
	w := &world{t: t, comms: map[int]map[int]int{}, removed: map[int][]int{}, spaces: map[int]map[string]*kspace{},
		noQuorum: map[int]bool{}, leaving: map[int]bool{}, svcs: map[int]*Service{}, events: map[int]chan Uevent{}, boots: map[int]string{},
		feeds: map[int]*events.Feed{}}
	w.status = clms.Status{Master: 1, Quorum: true, Term: 5}
	for _, n := range nodes {
		w.status.Nodes = append(w.status.Nodes, clms.NodeStatus{NodeRecord: clms.NodeRecord{Node: n, State: clms.Up, Addr: fmt.Sprintf("10.9.0.%d:7472", n)}})
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, n := range nodes {
		w.start(ctx, &wg, n, "boot-a")
	}
	return w
}

func (w *world) start(ctx context.Context, wg *sync.WaitGroup, n int, boot string) {
	feed := events.NewFeed(0)
	w.mu.Lock()
	w.feeds[n] = feed
	w.mu.Unlock()
	s, err := New(Config{Node: n, Cluster: "test", Addr: netip.MustParseAddr(fmt.Sprintf("10.9.0.%d", n)), Events: feed,
		Kernel: fakeKernel{node: n, w: w}, Boot: boot, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Status: func() clms.Status {
			w.mu.Lock()
			defer w.mu.Unlock()
			st := w.status
			st.Self = n
			st.Nodes = slices.Clone(st.Nodes)
			if w.noQuorum[n] {
				st.Quorum, st.Master = false, 0
			}
			st.Leaving = w.leaving[n]
			return st
		},
		Call: func(ctx context.Context, to int, method string, req []byte) ([]byte, error) {
			w.mu.Lock()
			peer := w.svcs[to]
			down := !memberOf(w.status, to)
			w.mu.Unlock()
			if peer == nil || down {
				return nil, fmt.Errorf("node %d unreachable", to)
			}
			return peer.Serve(ctx, n, method, req)
		}})
	if err != nil {
		w.t.Fatal(err)
	}
	ch := make(chan Uevent, 16)
	w.mu.Lock()
	w.svcs[n], w.events[n], w.boots[n] = s, ch, boot
	w.mu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	wg.Add(1)
	go func() { defer wg.Done(); s.Run(sctx, ch) }()
	w.t.Cleanup(cancel)
}

func (w *world) uevent(n int, action, ls string) {
	w.mu.Lock()
	ch := w.events[n]
	w.mu.Unlock()
	ch <- Uevent{Action: action, Subsystem: "dlm", DevPath: "/kernel/dlm/" + ls, Vars: map[string]string{"LOCKSPACE": ls}}
}

func (w *world) setState(n int, state clms.State) {
	w.mu.Lock()
	for i := range w.status.Nodes {
		if w.status.Nodes[i].Node == n {
			w.status.Nodes[i].State = state
		}
	}
	w.status.LastTransition++
	t := clms.Transition{ID: w.status.LastTransition, Node: n, State: state}
	svcs := maps(w.svcs)
	w.mu.Unlock()
	for _, s := range svcs {
		s.Transition(t)
	}
}

func maps(m map[int]*Service) []*Service {
	var out []*Service
	for _, s := range m {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// running waits until lockspace ls runs on exactly the nodes in want,
// each with want as its members.
func (w *world) running(ls string, want ...int) {
	w.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		w.mu.Lock()
		var got []int
		ok := true
		for n, spaces := range w.spaces {
			if sp := spaces[ls]; sp != nil && sp.running {
				got = append(got, n)
				if !slices.Equal(sp.members, want) {
					ok = false
				}
			}
		}
		w.mu.Unlock()
		slices.Sort(got)
		if ok && slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%s runs on %v (members agree: %v), want %v", ls, got, ok, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (w *world) answered(n int, ls string) []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if sp := w.spaces[n][ls]; sp != nil {
		return slices.Clone(sp.answered)
	}
	return nil
}

// TestLockspaceRounds: joins, a failure, a leave, a quorum loss and a
// new master, on three daemons over a fake kernel that checks the
// DLM's rule (all stopped before any starts) at every start.
func TestLockspaceRounds(t *testing.T) {
	w := newWorld(t, 1, 2, 3)
	w.uevent(2, "online", "ls1")
	w.running("ls1", 2)
	if got := w.answered(2, "ls1"); !slices.Equal(got, []int{0}) {
		t.Errorf("node 2's join answered %v, want [0]", got)
	}
	w.uevent(3, "online", "ls1")
	w.running("ls1", 2, 3)
	w.uevent(1, "online", "ls1")
	w.running("ls1", 1, 2, 3)

	// A member refuses an epoch older than the one it is at.
	if err := w.svcs[2].stop(stopRequest{Lockspace: "ls1", Epoch: Epoch{Term: 4, Seq: 99}}); err == nil {
		t.Error("node 2 took a stop from an older term")
	}

	// Node 3 fails: once it is Down the others run without it, and drop
	// its comms entry first (so its journals are recovered).
	w.mu.Lock()
	w.svcs[3] = nil
	delete(w.spaces, 3) // its kernel is gone with it
	delete(w.comms, 3)
	w.mu.Unlock()
	w.setState(3, clms.Down)
	w.running("ls1", 1, 2)
	w.mu.Lock()
	for _, n := range []int{1, 2} {
		if !slices.Contains(w.removed[n], 3) || w.comms[n][3] != 0 {
			t.Errorf("node %d kept node 3's comms entry (removed %v)", n, w.removed[n])
		}
	}
	w.mu.Unlock()
	// Each survivor tells its feed it runs without node 3.
	w.published(1, "ls1", "1,2")
	w.published(2, "ls1", "1,2")

	// It comes back (a new boot) and joins again: a fresh comms entry.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	w.start(ctx, &wg, 3, "boot-b")
	w.setState(3, clms.ComingUp)
	w.uevent(3, "online", "ls1")
	w.running("ls1", 1, 2, 3)

	// Node 1 leaves: the others go on without it; its kernel is told.
	w.uevent(1, "offline", "ls1")
	w.running("ls1", 2, 3)
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Equal(w.answered(1, "ls1"), []int{0, 0}) {
		if time.Now().After(deadline) {
			t.Fatalf("node 1's leave answered %v, want [0 0] (join, leave)", w.answered(1, "ls1"))
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Node 2 loses the quorum: it stops at once; back, it starts again.
	w.mu.Lock()
	w.noQuorum[2] = true
	w.mu.Unlock()
	deadline = time.Now().Add(5 * time.Second)
	for {
		w.mu.Lock()
		stopped2, running3 := !w.spaces[2]["ls1"].running, w.spaces[3]["ls1"].running
		w.mu.Unlock()
		if stopped2 {
			if !running3 {
				t.Error("node 3 stopped too: a member without quorum should block only itself until it is Down")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node 2 without quorum still runs ls1")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(2500 * time.Millisecond) // a reconcile scan sees node 2 stopped
	w.mu.Lock()
	if !w.spaces[3]["ls1"].running {
		t.Error("the master stopped node 3 because node 2 had no quorum")
	}
	w.noQuorum[2] = false
	w.mu.Unlock()
	w.running("ls1", 2, 3)

	// A new master (node 2, a new term) learns the lockspace from the
	// nodes and runs the next change.
	w.mu.Lock()
	w.status.Master, w.status.Term = 2, 6
	w.mu.Unlock()
	w.uevent(1, "online", "ls1")
	w.running("ls1", 1, 2, 3)
	st := w.svcs[3].State()
	if len(st.Spaces) != 1 || st.Spaces[0].Epoch.Term != 6 {
		t.Errorf("node 3 after the new master's round: %+v, want epoch of term 6", st)
	}
}

// TestJoinWaitsForMembership: a node the membership does not have yet
// (not admitted, or before its ComingUp) is not let into a lockspace;
// it is once it is a member.
func TestJoinWaitsForMembership(t *testing.T) {
	w := newWorld(t, 1, 2)
	w.setState(2, clms.NeverUp)
	w.uevent(2, "online", "ls")
	time.Sleep(700 * time.Millisecond)
	if got := w.answered(2, "ls"); got != nil {
		t.Fatalf("a node not yet a member was answered %v", got)
	}
	w.setState(2, clms.ComingUp)
	w.running("ls", 2)
}

// TestRefusesLeftoverLockspaces: a kernel with lockspaces nobody
// controls is refused, naming them.
func TestRefusesLeftoverLockspaces(t *testing.T) {
	_, err := New(Config{Node: 1, Addr: netip.MustParseAddr("10.0.0.1"), Kernel: leftover{}})
	if err == nil || !strings.Contains(err.Error(), "gfs2root") {
		t.Fatalf("New over a leftover lockspace: %v", err)
	}
}

type leftover struct{ fakeKernel }

func (leftover) Lockspaces() ([]string, error) { return []string{"gfs2root"}, nil }

// TestConcurrentLeaves: two members leave at once (a whole-cluster
// shutdown): each is answered, and the one that stays runs alone.
func TestConcurrentLeaves(t *testing.T) {
	w := newWorld(t, 1, 2, 3)
	for _, n := range []int{1, 2, 3} {
		w.uevent(n, "online", "ls")
	}
	w.running("ls", 1, 2, 3)
	w.uevent(2, "offline", "ls")
	w.uevent(3, "offline", "ls")
	w.running("ls", 1)
	deadline := time.Now().Add(5 * time.Second)
	for _, n := range []int{2, 3} {
		for !slices.Equal(w.answered(n, "ls"), []int{0, 0}) {
			if time.Now().After(deadline) {
				t.Fatalf("node %d's leave answered %v, want [0 0]", n, w.answered(n, "ls"))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestLeaveAtShutdownWithoutMaster: a node shutting down whose master
// does not answer leaves on its own within the bound.
func TestLeaveAtShutdownWithoutMaster(t *testing.T) {
	w := newWorld(t, 1, 2)
	w.uevent(2, "online", "ls")
	w.running("ls", 2)
	w.mu.Lock()
	w.noQuorum[2] = true // no master it can reach
	w.mu.Unlock()
	w.svcs[2].beginShutdown()
	got := leaveAlone(t, w)
	if got < leaveBound-time.Second {
		t.Errorf("left on its own after %v, before the %v bound", got, leaveBound)
	}
}

// TestLeaveWhileShuttingDown: a node the membership has ShuttingDown
// (its root unmounted before its daemon stops) whose master is gone
// leaves on its own within the bound, not waiting for good.
func TestLeaveWhileShuttingDown(t *testing.T) {
	w := newWorld(t, 1, 2)
	w.uevent(2, "online", "ls")
	w.running("ls", 2)
	w.setState(2, clms.ShuttingDown)
	w.mu.Lock()
	w.noQuorum[2] = true
	w.mu.Unlock()
	leaveAlone(t, w)
}

// leaveAlone has node 2 leave ls and waits until its leave is answered
// (both answers 0) within the bound and a margin; it returns how long
// that took.
func leaveAlone(t *testing.T, w *world) time.Duration {
	t.Helper()
	start := time.Now()
	w.uevent(2, "offline", "ls")
	for !slices.Equal(w.answered(2, "ls"), []int{0, 0}) {
		if time.Since(start) > leaveBound+3*time.Second {
			t.Fatalf("node 2's leave answered %v after %v", w.answered(2, "ls"), time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// TestLastOutOfClusterShutdown: in a whole-cluster shutdown the others
// leave first and the last node loses the quorum before its own
// ShuttingDown is committed. With every other node down or going, its
// lockspace keeps running (GFS2 needs its locks to unmount; stopped, the
// unmount never ends), and its leave is answered at once, not after the
// bound. A node without quorum whose peer is still Up stops, as before.
func TestLastOutOfClusterShutdown(t *testing.T) {
	w := newWorld(t, 1, 2, 3)
	for _, n := range []int{1, 2, 3} {
		w.uevent(n, "online", "ls")
	}
	w.running("ls", 1, 2, 3)
	w.setState(1, clms.ShuttingDown)
	w.setState(2, clms.ShuttingDown)
	w.uevent(2, "offline", "ls")
	w.running("ls", 1, 3)
	w.uevent(1, "offline", "ls")
	w.running("ls", 3)
	w.setState(2, clms.Down)
	w.mu.Lock()
	w.noQuorum[3], w.leaving[3] = true, true // node 1, the master, is gone
	w.mu.Unlock()
	time.Sleep(time.Second) // several of the daemon's quorum checks
	w.running("ls", 3)

	start := time.Now()
	w.uevent(3, "offline", "ls")
	for !slices.Equal(w.answered(3, "ls"), []int{0, 0}) {
		if time.Since(start) > leaveBound-time.Second {
			t.Fatalf("the last node's leave answered %v after %v: it waited for a master that is gone", w.answered(3, "ls"), time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The same loss with a peer still Up: that side may be recovering
	// this node's locks, so it stops.
	w2 := newWorld(t, 1, 2, 3)
	for _, n := range []int{1, 2, 3} {
		w2.uevent(n, "online", "ls")
	}
	w2.running("ls", 1, 2, 3)
	w2.setState(1, clms.ShuttingDown)
	w2.mu.Lock()
	w2.noQuorum[3], w2.leaving[3] = true, true
	w2.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		w2.mu.Lock()
		stopped := !w2.spaces[3]["ls"].running
		w2.mu.Unlock()
		if stopped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node 3 without quorum, node 2 still Up: its lockspace still runs")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
