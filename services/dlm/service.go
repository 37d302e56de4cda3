package dlm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/dlm/lockdev"
	"github.com/locus-ssi/locus/services/events"
	"github.com/locus-ssi/locus/services/ics"
	"golang.org/x/sys/unix"
)

// DefaultPort is the DLM's TCP port (the kernel's default, 21064).
const DefaultPort = 21064

// Config is a node's DLM control daemon's.
type Config struct {
	Node    int
	Cluster string
	Port    int
	// Addr is this node's interconnect address: the DLM's connections
	// come from and go to it.
	Addr   netip.Addr
	Kernel Kernel
	// Status is the membership as this node sees it.
	Status func() clms.Status
	// Call reaches another node's daemon (over ICS: Serve is its other
	// end).
	Call func(ctx context.Context, node int, method string, req []byte) ([]byte, error)
	// Boot names this kernel's boot (/proc/sys/kernel/random/boot_id): a
	// node's DLM state lives as long as its boot.
	Boot string
	// DevDir is where the DLM's devices are (/dev), for the /dev/misc
	// names C clients look for; "" makes none.
	DevDir string
	// Events, if set, gets a LockspaceStarted event each time a
	// lockspace starts on this node.
	Events events.Publisher
	Log    *slog.Logger
}

// Epoch orders a lockspace's changes: the Raft term of the master that
// made it, then a sequence within the term.
type Epoch struct {
	Term uint64 `json:"term"`
	Seq  uint64 `json:"seq"`
}

// Less orders epochs.
func (e Epoch) Less(o Epoch) bool { return e.Term < o.Term || e.Term == o.Term && e.Seq < o.Seq }

func (e Epoch) String() string { return fmt.Sprintf("%d.%d", e.Term, e.Seq) }

// Member is one node in a lockspace: which boot of it, and where.
type Member struct {
	Node int    `json:"node"`
	Addr string `json:"addr"`
	Boot string `json:"boot"`
}

// space is this node's part in one lockspace.
type space struct {
	name        string
	joining     bool // the kernel waits for the answer to its join
	leaving     bool // ... to its leave
	started     bool // running (control=1 since the last stop)
	everStarted bool // its id written
	epoch       Epoch
	members     []Member
}

// SpaceState is what a node reports of one of its lockspaces.
type SpaceState struct {
	Name    string   `json:"name"`
	Epoch   Epoch    `json:"epoch"`
	Members []Member `json:"members"`
	Started bool     `json:"started"`
	Joining bool     `json:"joining,omitempty"`
	Leaving bool     `json:"leaving,omitempty"`
}

// NodeState is a node's report: its boot and its lockspaces.
type NodeState struct {
	Node int    `json:"node"`
	Boot string `json:"boot"`
	// NoQuorum: the node has stopped its lockspaces for want of quorum,
	// and takes no start until it has it again.
	NoQuorum bool `json:"no_quorum,omitempty"`
	// Plocks are the POSIX locks this node's processes hold.
	Plocks []PlockRange `json:"plocks,omitempty"`
	Spaces []SpaceState `json:"spaces"`
}

// Service is a node's DLM control daemon.
type Service struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	spaces  map[string]*space
	comms   map[int]string // node -> the boot its comms entry is for
	stopAll bool           // stopped for want of quorum
	lastOut bool           // no quorum, but the others are all leaving
	// shutdown is when the node began to shut down: joins are refused,
	// and leaves the master does not answer within leaveBound end here.
	shutdown time.Time

	coord       *coordinator
	ownPlocks   *plockTable // the POSIX locks this node's processes hold
	reconciling atomic.Bool

	kick chan struct{} // wakes the loop (a transition, a request)
}

// ICS methods.
const (
	methodChange = "dlm.change" // to the master: a node joins or leaves a lockspace
	methodStop   = "dlm.stop"
	methodStart  = "dlm.start"
	methodLeft   = "dlm.left"
	methodState  = "dlm.state"
	methodLocks  = "dlm.locks"
	methodPlock  = "dlm.plock" // to the master: a POSIX lock operation
)

// New configures the kernel's DLM for this node: it refuses a kernel
// that already has lockspaces (left by a daemon that is gone: nothing
// controls them, so the node must reboot), writes the cluster's
// settings, and this node's own comms entry. The caller holds the
// monitor device open first (OpenMonitor), so the kernel knows a daemon
// is there before the node has an id.
func New(cfg Config) (*Service, error) {
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if !cfg.Addr.IsValid() {
		return nil, errors.New("dlm: no interconnect address for this node")
	}
	left, err := cfg.Kernel.Lockspaces()
	if err != nil {
		return nil, err
	}
	if len(left) > 0 {
		return nil, fmt.Errorf("dlm: the kernel has lockspaces no daemon controls (%s): reboot the node", strings.Join(left, ", "))
	}
	if err := cfg.Kernel.Configure(cfg.Cluster, cfg.Port); err != nil {
		return nil, err
	}
	if err := cfg.Kernel.SetComm(cfg.Node, cfg.Addr, true); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: cfg.Log, spaces: map[string]*space{}, comms: map[int]string{cfg.Node: cfg.Boot},
		kick: make(chan struct{}, 1)}
	s.coord = newCoordinator(s)
	s.ownPlocks = newPlockTable()
	return s, nil
}

// Methods are the daemon's ICS methods, for Register.
var Methods = []string{methodChange, methodStop, methodStart, methodLeft, methodState, methodLocks, methodPlock}

// Register serves the daemon's ICS methods on n.
func (s *Service) Register(n *ics.Node) {
	for _, m := range Methods {
		n.Handle(m, func(ctx context.Context, from int, req []byte) ([]byte, error) { return s.Serve(ctx, from, m, req) })
	}
}

// Serve answers one call from node from.
func (s *Service) Serve(ctx context.Context, from int, method string, b []byte) ([]byte, error) {
	switch method {
	case methodChange:
		return s.handleChange(ctx, from, b)
	case methodPlock:
		return s.handlePlock(ctx, from, b)
	case methodStop:
		return nil, decodeThen(b, from, s.stop)
	case methodStart:
		return nil, decodeThen(b, from, s.start)
	case methodLeft:
		return nil, decodeThen(b, from, s.left)
	case methodState:
		return json.Marshal(s.State())
	case methodLocks:
		var ls string
		if err := json.Unmarshal(b, &ls); err != nil {
			return nil, fmt.Errorf("dlm: locks request from node %d: %w", from, err)
		}
		locks, err := LocalLocks(s.cfg.Node, ls)
		if err != nil {
			return nil, err
		}
		return json.Marshal(locks)
	}
	return nil, fmt.Errorf("dlm: no method %q", method)
}

// decodeThen decodes a member-side step and runs it.
func decodeThen[T any](b []byte, from int, f func(T) error) error {
	var req T
	if err := json.Unmarshal(b, &req); err != nil {
		return fmt.Errorf("dlm: request from node %d: %w", from, err)
	}
	return f(req)
}

func (s *Service) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Transition tells the daemon of a committed membership change.
func (s *Service) Transition(t clms.Transition) {
	if t.State == clms.Down && t.Node != s.cfg.Node {
		// Its POSIX locks go (on the master, which holds the table).
		s.coord.plocks.dropNode(t.Node)
		// A Down node (fenced, when the cluster fences) is out of every
		// lockspace: its comms entry goes before the next start, so the
		// kernel recovers its journals.
		s.mu.Lock()
		if _, ok := s.comms[t.Node]; ok {
			if err := s.cfg.Kernel.RemoveComm(t.Node); err != nil {
				s.log.Error("comms of a Down node", "node", t.Node, "err", err)
			} else {
				delete(s.comms, t.Node)
			}
		}
		s.mu.Unlock()
	}
	s.poke()
}

// State reports this node's lockspaces.
func (s *Service) State() NodeState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := NodeState{Node: s.cfg.Node, Boot: s.cfg.Boot, NoQuorum: s.stopAll, Plocks: s.ownPlocks.ranges()}
	for _, sp := range s.spaces {
		st.Spaces = append(st.Spaces, SpaceState{Name: sp.name, Epoch: sp.epoch, Members: slices.Clone(sp.members),
			Started: sp.started, Joining: sp.joining, Leaving: sp.leaving})
	}
	sort.Slice(st.Spaces, func(i, j int) bool { return st.Spaces[i].Name < st.Spaces[j].Name })
	return st
}

// self is this node as a lockspace member.
func (s *Service) self() Member {
	return Member{Node: s.cfg.Node, Addr: s.cfg.Addr.String(), Boot: s.cfg.Boot}
}

// Run handles the kernel's uevents (from events, nil if the caller has
// none) and the membership until ctx ends.
func (s *Service) Run(ctx context.Context, events <-chan Uevent) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			s.uevent(ctx, u)
		case <-s.kick:
		case <-tick.C:
		}
		st := s.cfg.Status()
		s.checkQuorum(st)
		if st.Master == s.cfg.Node && st.Quorum {
			// Off the loop: a round waits on the nodes, the uevents must not.
			if s.reconciling.CompareAndSwap(false, true) {
				go func() {
					defer s.reconciling.Store(false)
					s.coord.reconcile(ctx, st)
				}()
			}
		} else {
			s.coord.resign()
		}
	}
}

// checkQuorum stops every lockspace when this node has no quorum: the
// other side may be recovering this node's locks. They start again
// only when a master that has the quorum says so. The exception is a
// whole-cluster shutdown, where the last nodes lose the quorum as the
// others go: when every other node is Down or on its way out, none is
// recovering this node's locks, and a stopped lockspace would only hang
// this node's own unmount (GFS2 needs its locks to leave).
func (s *Service) checkQuorum(st clms.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.Quorum {
		s.stopAll, s.lastOut = false, false
		return
	}
	if s.stopAll {
		return
	}
	if othersLeaving(st) {
		if !s.lastOut {
			s.lastOut = true
			s.log.Warn("no quorum, but every other node is down or shutting down: lockspaces kept running until this node leaves them")
		}
		return
	}
	s.stopAll = true
	for _, sp := range s.spaces {
		if sp.started {
			if err := s.cfg.Kernel.Stop(sp.name); err != nil {
				s.log.Error("stop a lockspace without quorum", "lockspace", sp.name, "err", err)
				continue
			}
			sp.started = false
			s.log.Warn("no quorum: lockspace stopped until a master restarts it", "lockspace", sp.name)
		}
	}
}

// uevent handles one kernel uevent.
func (s *Service) uevent(ctx context.Context, u Uevent) {
	switch u.Subsystem {
	case "dlm":
		ls := u.Vars["LOCKSPACE"]
		if ls == "" {
			ls = filepath.Base(u.DevPath)
		}
		switch u.Action {
		case "online":
			s.mu.Lock()
			if s.spaces[ls] == nil {
				s.spaces[ls] = &space{name: ls}
			}
			s.spaces[ls].joining = true
			s.mu.Unlock()
			s.log.Info("lockspace join", "lockspace", ls)
			go s.request(ctx, ls, "join")
		case "offline":
			s.mu.Lock()
			sp := s.spaces[ls]
			if sp != nil {
				sp.leaving, sp.joining = true, false
			}
			s.mu.Unlock()
			if sp == nil {
				// Never joined (the join failed before we knew it): the
				// kernel still waits for the answer.
				if err := s.cfg.Kernel.EventDone(ls, 0); err != nil {
					s.log.Error("answer a leave", "lockspace", ls, "err", err)
				}
				return
			}
			s.log.Info("lockspace leave", "lockspace", ls)
			go s.request(ctx, ls, "leave")
		}
	case "gfs2":
		if u.Action == "offline" {
			table := u.Vars["LOCKTABLE"]
			if table == "" {
				table = filepath.Base(u.DevPath)
			}
			s.log.Error("GFS2 withdrew: the filesystem is unusable on this node until it is remounted", "table", table)
			if err := s.cfg.Kernel.AckWithdraw(table); err != nil {
				s.log.Error("acknowledge a GFS2 withdraw", "table", table, "err", err)
			}
		}
	case "misc":
		s.miscDevice(u)
	}
}

// miscDevice keeps /dev/misc/<name> for the DLM's devices, as udev's
// rule does where there is udev: libdlm opens them there.
func (s *Service) miscDevice(u Uevent) {
	name := u.Vars["DEVNAME"]
	if s.cfg.DevDir == "" || !strings.HasPrefix(name, "dlm") || strings.Contains(name, "/") {
		return
	}
	link := filepath.Join(s.cfg.DevDir, "misc", name)
	switch u.Action {
	case "add":
		os.MkdirAll(filepath.Dir(link), 0o755)
		os.Remove(link)
		if err := os.Symlink(filepath.Join("..", name), link); err != nil {
			s.log.Warn("device name for C clients", "link", link, "err", err)
		}
	case "remove":
		os.Remove(link)
	}
}

// LinkMiscDevices makes /dev/misc names for the DLM devices already there.
func (s *Service) LinkMiscDevices() {
	if s.cfg.DevDir == "" {
		return
	}
	names, _ := filepath.Glob(filepath.Join(s.cfg.DevDir, "dlm*"))
	for _, n := range names {
		s.miscDevice(Uevent{Action: "add", Subsystem: "misc", Vars: map[string]string{"DEVNAME": filepath.Base(n)}})
	}
}

// changeRequest is a node's join or leave, sent to the master.
type changeRequest struct {
	Lockspace string `json:"lockspace"`
	Op        string `json:"op"` // join, leave
	Member    Member `json:"member"`
}

// request asks the master to add this node to, or drop it from,
// lockspace ls, until it is done or no longer wanted. The kernel waits
// meanwhile (a mount, a lockspace creation); this goroutine never holds
// the daemon's lock while it waits, so the daemon goes on serving.
func (s *Service) request(ctx context.Context, ls, op string) {
	req, _ := json.Marshal(changeRequest{Lockspace: ls, Op: op, Member: s.self()})
	begun := time.Now()
	for attempt := 1; ; attempt++ {
		s.mu.Lock()
		sp := s.spaces[ls]
		wanted := sp != nil && (op == "join" && sp.joining || op == "leave" && sp.leaving)
		s.mu.Unlock()
		if !wanted {
			return // answered (by a round another request or a new master ran)
		}
		if s.shuttingDown(ls, op, begun) {
			return
		}
		var err error
		if st := s.cfg.Status(); !memberOf(st, s.cfg.Node) {
			err = errors.New("this node is not yet a cluster member")
		} else {
			// At shutdown an attempt ends by the leave's bound, so the
			// node then leaves on its own.
			actx, cancel := context.WithCancel(ctx)
			if op == "leave" && s.leavingNode() {
				actx, cancel = context.WithDeadline(ctx, begun.Add(leaveBound))
			}
			_, err = s.onMaster(actx, st, methodChange, req, 30*time.Second)
			cancel()
		}
		if err == nil {
			return
		}
		if attempt == 1 || attempt%20 == 0 {
			s.log.Info("lockspace "+op+" waits", "lockspace", ls, "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// onMaster calls method on the master (in this process when this node
// is the master), with a deadline of within.
func (s *Service) onMaster(ctx context.Context, st clms.Status, method string, req []byte, within time.Duration) ([]byte, error) {
	switch {
	case !st.Quorum || st.Master == 0:
		return nil, errors.New("no master with the quorum")
	case st.Master == s.cfg.Node:
		return s.Serve(ctx, s.cfg.Node, method, req)
	}
	cctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	return s.cfg.Call(cctx, st.Master, method, req)
}

// leaveBound is how long a shutting-down node waits for the master to
// take it out of a lockspace before it leaves on its own (the others
// then see it fail, and recover its locks after its fenced Down).
const leaveBound = 5 * time.Second

// leavingNode says whether this node is on its way out: its daemon
// stopping, or the node shutting down in the membership (its root is
// unmounted before the daemon stops, and the master may be gone first,
// so its own row may never say ShuttingDown).
func (s *Service) leavingNode() bool {
	return s.leavingIn(s.cfg.Status())
}

func (s *Service) leavingIn(st clms.Status) bool {
	s.mu.Lock()
	stopping := !s.shutdown.IsZero()
	s.mu.Unlock()
	if stopping || st.Leaving {
		return true
	}
	for _, n := range st.Nodes {
		if n.Node == s.cfg.Node {
			return n.State == clms.ShuttingDown || n.State == clms.GoingDown
		}
	}
	return false
}

func (s *Service) beginShutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown.IsZero() {
		s.shutdown = time.Now()
	}
}

// shuttingDown ends a join or leave of ls here, if the node is on its
// way out: a join is refused at the daemon's stop (the kernel then sends
// its leave); a leave of a lockspace never started, one the master has
// not answered within leaveBound of its start (begun), or one no master
// will answer (no quorum, every other node gone or going: the last out
// of a whole-cluster shutdown) is answered without a round.
func (s *Service) shuttingDown(ls, op string, begun time.Time) bool {
	st := s.cfg.Status()
	leaving := s.leavingIn(st)
	last := !st.Quorum && othersLeaving(st)
	s.mu.Lock()
	defer s.mu.Unlock()
	sp := s.spaces[ls]
	if !leaving || sp == nil {
		return false
	}
	switch {
	case op == "join" && !s.shutdown.IsZero():
		sp.joining = false
		if err := s.cfg.Kernel.EventDone(ls, -int(unix.EINTR)); err != nil {
			s.log.Error("refuse a join at shutdown", "lockspace", ls, "err", err)
		}
		return true
	case op == "leave" && (!sp.everStarted || last || time.Since(begun) > leaveBound):
		if sp.started {
			s.cfg.Kernel.Stop(ls)
		}
		s.cfg.Kernel.RemoveSpace(ls)
		delete(s.spaces, ls)
		if err := s.cfg.Kernel.EventDone(ls, 0); err != nil {
			s.log.Error("leave at shutdown", "lockspace", ls, "err", err)
		}
		if last {
			s.log.Info("lockspace left: the last node of a cluster shutting down", "lockspace", ls)
		} else {
			s.log.Warn("lockspace left without the master: the others see this node fail", "lockspace", ls)
		}
		return true
	}
	return false
}

// othersLeaving says whether every other node in st is Down or
// ShuttingDown (or never came up). A ShuttingDown node leaves its
// lockspaces through the master, and a Down for this node would need
// the master to fence it first: none of them recovers this node's locks
// behind its back.
func othersLeaving(st clms.Status) bool {
	for _, n := range st.Nodes {
		if n.Node == st.Self {
			continue
		}
		if n.State != clms.Down && n.State != clms.NeverUp && n.State != clms.ShuttingDown {
			return false
		}
	}
	return true
}

// memberOf says whether node is admitted and alive in st (ComingUp or
// Up: a node mounts the shared root before it is Up).
func memberOf(st clms.Status, node int) bool {
	for _, n := range st.Nodes {
		if n.Node == node {
			return n.State == clms.ComingUp || n.State == clms.Up || n.State == clms.ShuttingDown
		}
	}
	return false
}

// stopRequest, startRequest and leftRequest are the coordinator's steps.
type stopRequest struct {
	Lockspace string `json:"lockspace"`
	Epoch     Epoch  `json:"epoch"`
}

type startRequest struct {
	Lockspace string   `json:"lockspace"`
	Epoch     Epoch    `json:"epoch"`
	Members   []Member `json:"members"`
	// Failed are the members gone since the last start (Down, or a boot
	// replaced by a new one): their comms entries go, so their journals
	// are recovered.
	Failed []Member `json:"failed,omitempty"`
}

// errStale refuses a step from an older epoch than one seen.
var errStale = errors.New("dlm: stale epoch")

// errNotMember says this node does not have the lockspace.
var errNotMember = errors.New("dlm: not in the lockspace")

func (s *Service) stop(r stopRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sp := s.spaces[r.Lockspace]
	if sp == nil {
		return fmt.Errorf("%w %s", errNotMember, r.Lockspace)
	}
	if r.Epoch.Less(sp.epoch) {
		return fmt.Errorf("%w: stop %s at %v, this node is at %v", errStale, r.Lockspace, r.Epoch, sp.epoch)
	}
	if sp.started {
		if err := s.cfg.Kernel.Stop(sp.name); err != nil {
			return err
		}
		sp.started = false
	}
	sp.epoch = r.Epoch
	return nil
}

func (s *Service) start(r startRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sp := s.spaces[r.Lockspace]
	if sp == nil || sp.leaving {
		return fmt.Errorf("%w %s", errNotMember, r.Lockspace)
	}
	if r.Epoch.Less(sp.epoch) {
		return fmt.Errorf("%w: start %s at %v, this node is at %v", errStale, r.Lockspace, r.Epoch, sp.epoch)
	}
	if s.stopAll {
		return fmt.Errorf("dlm: start %s: this node has no quorum", r.Lockspace)
	}
	for _, f := range r.Failed {
		if f.Node == s.cfg.Node {
			continue
		}
		if boot, ok := s.comms[f.Node]; ok && boot == f.Boot {
			if err := s.cfg.Kernel.RemoveComm(f.Node); err != nil {
				return err
			}
			delete(s.comms, f.Node)
		}
	}
	var nodes, renew []int
	self := false
	for _, m := range r.Members {
		nodes = append(nodes, m.Node)
		if m.Node == s.cfg.Node {
			self = true
			continue
		}
		if boot, ok := s.comms[m.Node]; !ok || boot != m.Boot {
			// New, or a new boot of it: a fresh comms entry (the old
			// one's connections closed, its journals recoverable).
			if ok {
				if err := s.cfg.Kernel.RemoveComm(m.Node); err != nil {
					return err
				}
				delete(s.comms, m.Node)
			}
			addr, err := netip.ParseAddr(m.Addr)
			if err != nil {
				return fmt.Errorf("dlm: start %s: member %d's address %q: %w", r.Lockspace, m.Node, m.Addr, err)
			}
			if err := s.cfg.Kernel.SetComm(m.Node, addr, false); err != nil {
				return err
			}
			s.comms[m.Node] = m.Boot
		}
		for _, old := range sp.members {
			if old.Node == m.Node && old.Boot != m.Boot {
				renew = append(renew, m.Node)
			}
		}
	}
	if !self {
		return fmt.Errorf("dlm: start %s: this node is not among its members", r.Lockspace)
	}
	if err := s.cfg.Kernel.Start(sp.name, nodes, renew, !sp.everStarted); err != nil {
		return err
	}
	sp.started, sp.everStarted, sp.epoch, sp.members = true, true, r.Epoch, slices.Clone(r.Members)
	if sp.joining {
		sp.joining = false
		if err := s.cfg.Kernel.EventDone(sp.name, 0); err != nil {
			return err
		}
		s.log.Info("lockspace joined", "lockspace", sp.name, "epoch", r.Epoch, "members", nodes)
	} else {
		s.log.Info("lockspace started", "lockspace", sp.name, "epoch", r.Epoch, "members", nodes, "renewed", renew)
	}
	if s.cfg.Events != nil {
		ms := make([]string, len(nodes))
		for i, n := range nodes {
			ms[i] = strconv.Itoa(n)
		}
		s.cfg.Events.Publish(events.Event{Source: events.SourceLocusd, Kind: events.LockspaceStarted, Name: sp.name,
			Detail: r.Epoch.String(), Attrs: map[string]string{events.AttrMembers: strings.Join(ms, ",")}})
	}
	return nil
}

// left ends this node's leave of a lockspace, once the others run
// without it.
func (s *Service) left(r stopRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sp := s.spaces[r.Lockspace]
	if sp == nil || !sp.leaving {
		return fmt.Errorf("%w %s (not leaving)", errNotMember, r.Lockspace)
	}
	if sp.started {
		if err := s.cfg.Kernel.Stop(sp.name); err != nil {
			return err
		}
	}
	if err := s.cfg.Kernel.RemoveSpace(sp.name); err != nil {
		return err
	}
	delete(s.spaces, sp.name)
	if err := s.cfg.Kernel.EventDone(sp.name, 0); err != nil {
		return err
	}
	s.log.Info("lockspace left", "lockspace", sp.name, "epoch", r.Epoch)
	return nil
}

// call runs a member-side step on node: in this process for this node,
// else over ICS.
func (s *Service) call(ctx context.Context, node int, method string, req any) ([]byte, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if node == s.cfg.Node {
		switch method {
		case methodStop:
			return nil, s.stop(req.(stopRequest))
		case methodStart:
			return nil, s.start(req.(startRequest))
		case methodLeft:
			return nil, s.left(req.(stopRequest))
		case methodState:
			return json.Marshal(s.State())
		case methodLocks:
			locks, err := LocalLocks(s.cfg.Node, req.(string))
			if err != nil {
				return nil, err
			}
			return json.Marshal(locks)
		}
		return nil, fmt.Errorf("dlm: no local method %s", method)
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return s.cfg.Call(cctx, node, method, b)
}

// handleChange is the master's side of a join or leave.
func (s *Service) handleChange(ctx context.Context, from int, b []byte) ([]byte, error) {
	var r changeRequest
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("dlm: change request from node %d: %w", from, err)
	}
	if r.Member.Node != from {
		return nil, fmt.Errorf("dlm: node %d asked to change node %d's lockspaces", from, r.Member.Node)
	}
	if _, err := netip.ParseAddr(r.Member.Addr); err != nil {
		return nil, fmt.Errorf("dlm: node %d's address %q: %w", from, r.Member.Addr, err)
	}
	st := s.cfg.Status()
	if st.Master != s.cfg.Node || !st.Quorum {
		return nil, errors.New("dlm: this node is not the master")
	}
	if !memberOf(st, from) {
		return nil, fmt.Errorf("dlm: node %d is not a cluster member", from)
	}
	if want, ok := st.NodeIP(from); ok && want.String() != r.Member.Addr {
		return nil, fmt.Errorf("dlm: node %d says its address is %s, the membership has %s", from, r.Member.Addr, want)
	}
	switch r.Op {
	case "join", "leave":
		return nil, s.coord.change(ctx, st, r.Lockspace, r.Member, r.Op == "leave")
	}
	return nil, fmt.Errorf("dlm: change %q: want join or leave", r.Op)
}

// Locks gathers lockspace ls's locks from every member node (each
// reports those held from it), sorted by resource, then holders before
// waiters.
func (s *Service) Locks(ctx context.Context, ls string) ([]LockInfo, error) {
	if err := lockdev.CheckLockspaceName(ls); err != nil {
		return nil, err
	}
	var out []LockInfo
	var errs []error
	for _, n := range s.liveNodes() {
		b, err := s.call(ctx, n, methodLocks, ls)
		if err != nil {
			errs = append(errs, fmt.Errorf("node %d: %w", n, err))
			continue
		}
		var locks []LockInfo
		if err := json.Unmarshal(b, &locks); err != nil {
			errs = append(errs, fmt.Errorf("node %d: %w", n, err))
			continue
		}
		out = append(out, locks...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Resource != b.Resource {
			return a.Resource < b.Resource
		}
		if (a.State == "granted") != (b.State == "granted") {
			return a.State == "granted"
		}
		return a.For > b.For
	})
	return out, errors.Join(errs...)
}

// Nodes gathers every live node's report of its lockspaces.
func (s *Service) Nodes(ctx context.Context) ([]NodeState, error) {
	var out []NodeState
	var errs []error
	for _, n := range s.liveNodes() {
		b, err := s.call(ctx, n, methodState, struct{}{})
		var ns NodeState
		if err == nil {
			err = json.Unmarshal(b, &ns)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("node %d: %w", n, err))
			continue
		}
		out = append(out, ns)
	}
	return out, errors.Join(errs...)
}

// liveNodes are the members of the cluster, this node first.
func (s *Service) liveNodes() []int {
	st := s.cfg.Status()
	out := []int{s.cfg.Node}
	for _, n := range st.Nodes {
		if n.Node != s.cfg.Node && memberOf(st, n.Node) {
			out = append(out, n.Node)
		}
	}
	return out
}
