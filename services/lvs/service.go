package lvs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/ics"
)

// Membership is what the service needs of CLMS (a *clms.Member).
type Membership interface {
	Status() clms.Status
	Records(prefix string) []clms.Record
	WriteRecords(ws ...clms.RecordWrite) error
	WatchRecords(ch chan<- struct{}) func()
}

// Config configures a node's part of the cluster IP.
type Config struct {
	Node   int
	Spec   clusterspec.ClusterIP
	Member func() Membership
	Call   func(ctx context.Context, node int, method string, req []byte) ([]byte, error)
	// Running says whether this node runs an instance of an HA service.
	Running func(service string) bool
	// Servers are the nodes that may be real servers (nil: every node):
	// only they have the address on their loopback. Any other node is
	// an ordinary client of the cluster IP.
	Servers []int
	Kernel  Kernel
	// QuorumGrace is how long a director without quorum keeps the
	// address (default 2s).
	QuorumGrace time.Duration
	Log         *slog.Logger
}

// ICS methods.
const (
	methodReal     = "lvs.realserver"
	methodTable    = "lvs.table"
	methodReleased = "lvs.released"
	methodMove     = "lvs.move"
)

// Service is a node's part of the cluster IP.
type Service struct {
	cfg   Config
	vip   netip.Addr
	iface string
	log   *slog.Logger
	kick  chan struct{}

	mu       sync.Mutex
	prepared bool
	director bool   // this node holds the address
	gen      uint64 // of the director record it holds it for
	table    []VirtualService
	lostAt   time.Time
	lastErr  string
	took     time.Time // when this node last took the address
	backupOK bool      // the backup sync daemon runs (so a preloaded table is inert)
	wg       sync.WaitGroup
}

// New checks the spec's cluster IP and makes the service.
func New(cfg Config) (*Service, error) {
	vip, err := netip.ParseAddr(cfg.Spec.Address)
	if err != nil || !vip.Is4() {
		return nil, fmt.Errorf("lvs: cluster IP %q: want an IPv4 address", cfg.Spec.Address)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.QuorumGrace == 0 {
		cfg.QuorumGrace = 2 * time.Second
	}
	if cfg.Kernel == nil {
		cfg.Kernel = NewKernel()
	}
	if cfg.Spec.SyncID == 0 {
		cfg.Spec.SyncID = 1
	}
	iface := cfg.Spec.Interface
	if iface == "" {
		iface = clusterspec.DefaultClusterIPInterface
	}
	return &Service{cfg: cfg, vip: vip, iface: iface, log: cfg.Log, kick: make(chan struct{}, 1)}, nil
}

func portKey(p clusterspec.ClusterPort) string { return fmt.Sprintf("%s/%d", p.Proto(), p.Port) }

// Register serves the service's ICS methods on n.
func (s *Service) Register(n *ics.Node) {
	n.Handle(methodReal, func(ctx context.Context, from int, _ []byte) ([]byte, error) {
		ports, err := s.realPorts()
		if err != nil {
			return nil, err
		}
		return json.Marshal(ports)
	})
	n.Handle(methodTable, func(ctx context.Context, from int, _ []byte) ([]byte, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.director {
			return nil, fmt.Errorf("lvs: node %d is not the director", s.cfg.Node)
		}
		return json.Marshal(s.table)
	})
	n.Handle(methodReleased, func(ctx context.Context, from int, b []byte) ([]byte, error) {
		var gen uint64
		if err := json.Unmarshal(b, &gen); err != nil {
			return nil, fmt.Errorf("lvs: released from node %d: %w", from, err)
		}
		m := s.member()
		if m == nil {
			return nil, errors.New("lvs: no membership")
		}
		if st := m.Status(); st.Master != s.cfg.Node || !st.Quorum {
			return nil, fmt.Errorf("lvs: node %d is not the master", s.cfg.Node)
		}
		return nil, s.applyReleased(m, from, gen)
	})
	n.Handle(methodMove, func(ctx context.Context, from int, b []byte) ([]byte, error) {
		var r moveRequest
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("lvs: move from node %d: %w", from, err)
		}
		return nil, s.move(r)
	})
}

// applyReleased records, on the master, that node gave the address of
// director generation gen up.
func (s *Service) applyReleased(m Membership, node int, gen uint64) error {
	cur, v, _ := readDirector(m.Records(directorKey))
	if ws := planReleased(cur, v, node, gen, time.Now()); ws != nil {
		if err := m.WriteRecords(ws...); err != nil {
			return err
		}
		s.poke()
	}
	return nil
}

type moveRequest struct {
	To int    `json:"to"`
	By string `json:"by"`
}

// Move moves the cluster IP to node to (an operator's verb, by names
// who asked): the director gives it up, then to takes it. It returns
// once the master recorded the move; the report shows it done.
func (s *Service) Move(ctx context.Context, to int, by string) error {
	m := s.member()
	if m == nil {
		return errors.New("lvs: no membership on this node yet")
	}
	r := moveRequest{To: to, By: by}
	st := m.Status()
	if st.Master == s.cfg.Node {
		return s.move(r)
	}
	if !st.Quorum || st.Master == 0 {
		return errors.New("lvs: move the cluster IP: the cluster has no master now")
	}
	b, _ := json.Marshal(r)
	_, err := s.cfg.Call(ctx, st.Master, methodMove, b)
	return err
}

// move is the master's part of Move.
func (s *Service) move(r moveRequest) error {
	m := s.member()
	if m == nil {
		return errors.New("lvs: no membership")
	}
	st := m.Status()
	if st.Master != s.cfg.Node || !st.Quorum {
		return fmt.Errorf("lvs: node %d is not the master", s.cfg.Node)
	}
	cur, v, _ := readDirector(m.Records(directorKey))
	why := fmt.Sprintf("moved to node %d", r.To)
	if r.By != "" {
		why += " by " + r.By
	}
	ws, err := planMove(s.cfg.Spec.Directors, cur, v, st, r.To, why, time.Now())
	if err != nil || ws == nil {
		return err
	}
	if err := m.WriteRecords(ws...); err != nil {
		return fmt.Errorf("lvs: move the cluster IP: %w", err)
	}
	s.log.Info("lvs: cluster IP moving", "from", cur.Node, "to", r.To, "by", r.By)
	s.poke()
	return nil
}

// realPorts says which ports this node serves as a real server: its HA
// service has a running instance here, or (register: listen) it
// listens on the port.
func (s *Service) realPorts() (map[string]bool, error) {
	out := map[string]bool{}
	var listen []string
	for _, p := range s.cfg.Spec.Ports {
		switch {
		case p.Service != "":
			out[portKey(p)] = s.cfg.Running != nil && s.cfg.Running(p.Service)
		case p.Register == clusterspec.RegisterListen:
			listen = append(listen, portKey(p))
		}
	}
	if len(listen) > 0 {
		got, err := s.cfg.Kernel.Listening(s.vip, listen)
		if err != nil {
			return nil, err
		}
		for _, k := range listen {
			out[k] = got[k]
		}
	}
	return out, nil
}

func (s *Service) member() Membership {
	if s.cfg.Member == nil {
		return nil
	}
	return s.cfg.Member()
}

func (s *Service) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Transition pokes the service at every membership change.
func (s *Service) Transition(clms.Transition) { s.poke() }

// Run keeps the cluster IP until ctx ends; then this node gives it up.
func (s *Service) Run(ctx context.Context) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var unwatch func()
	defer func() {
		if unwatch != nil {
			unwatch()
		}
		s.release()
		s.cfg.Kernel.SetAddr("lo", s.vip, false)
		s.wg.Wait()
	}()
	var lastTable time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-tick.C:
		}
		m := s.member()
		if m == nil {
			continue
		}
		if unwatch == nil {
			unwatch = m.WatchRecords(s.kick)
		}
		if !s.prepare() {
			continue
		}
		st := m.Status()
		if st.Master == s.cfg.Node && st.Quorum {
			cur, v, have := readDirector(m.Records(directorKey))
			if ws := planDirector(s.cfg.Spec.Directors, cur, v, have, st, time.Now()); ws != nil {
				if err := m.WriteRecords(ws...); err != nil && !errors.Is(err, clms.ErrRecordChanged) {
					s.log.Warn("lvs: choose the director", "err", err)
				}
			}
		}
		d, _, _ := readDirector(m.Records(directorKey))
		if s.follow(ctx, st, d) || time.Since(lastTable) >= time.Second {
			lastTable = time.Now()
			s.refreshTable(ctx, st, d)
		}
	}
}

// prepare sets the sysctls and puts the address on lo (every node is a
// real server), once.
func (s *Service) prepare() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prepared {
		return true
	}
	err := s.cfg.Kernel.Prepare(s.iface)
	if s.cfg.Servers == nil || slices.Contains(s.cfg.Servers, s.cfg.Node) {
		err = errors.Join(err, s.cfg.Kernel.SetAddr("lo", s.vip, true))
	}
	if err != nil {
		if err.Error() != s.lastErr {
			s.log.Error("lvs: cannot serve the cluster IP on this node", "err", err)
			s.lastErr = err.Error()
		}
		return false
	}
	s.prepared = true
	return true
}

// follow takes or gives up the address as the director record says;
// it returns true when this node just became the director.
func (s *Service) follow(ctx context.Context, st clms.Status, d Director) bool {
	self := clms.NeverUp
	for _, n := range st.Nodes {
		if n.Node == s.cfg.Node {
			self = n.State
		}
	}
	leaving := st.Leaving || self == clms.ShuttingDown || self == clms.GoingDown
	s.mu.Lock()
	if st.Quorum {
		s.lostAt = time.Time{}
	} else if s.lostAt.IsZero() {
		s.lostAt = time.Now()
	}
	noQuorum := !s.lostAt.IsZero() && time.Since(s.lostAt) > s.cfg.QuorumGrace
	was := s.director
	s.mu.Unlock()
	mine := d.Node == s.cfg.Node && !d.Releasing && !leaving && !noQuorum
	switch {
	case mine && !was:
		return s.take(ctx, d)
	case !mine && was:
		if noQuorum {
			s.log.Warn("lvs: no quorum: giving up the cluster IP (the others fence this node before another takes it)")
		}
		s.release()
	}
	if !mine && d.Node == s.cfg.Node && (d.Releasing || leaving) {
		s.released(ctx, d.Gen)
	}
	if !mine {
		err := s.cfg.Kernel.SetSync(SyncBackup, s.iface, s.cfg.Spec.SyncID)
		if err != nil {
			s.logOnce("lvs: backup sync daemon", err)
		}
		s.mu.Lock()
		s.backupOK = err == nil
		s.mu.Unlock()
	}
	return false
}

func (s *Service) logOnce(what string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err.Error() != s.lastErr {
		s.log.Warn(what, "err", err)
		s.lastErr = err.Error()
	}
}

// take makes this node the director: its sync daemon the master, the
// address on its interface, gratuitous ARP so clients' caches move.
func (s *Service) take(ctx context.Context, d Director) bool {
	start := time.Now()
	if err := s.cfg.Kernel.SetSync(SyncMaster, s.iface, s.cfg.Spec.SyncID); err != nil {
		s.log.Warn("lvs: master sync daemon", "err", err) // connections then survive only by maglev
	}
	if err := s.cfg.Kernel.SetAddr(s.iface, s.vip, true); err != nil {
		s.log.Error("lvs: take the cluster IP", "err", err)
		return false
	}
	if err := s.cfg.Kernel.GARP(s.iface, s.vip); err != nil {
		s.log.Warn("lvs: gratuitous ARP", "err", err)
	}
	s.mu.Lock()
	s.director, s.gen, s.took = true, d.Gen, time.Now()
	s.mu.Unlock()
	s.log.Info("lvs: this node is the director: it holds the cluster IP", "address", s.vip, "interface", s.iface, "why", d.Why, "took", time.Since(start))
	// Keepalived's and IPaddr2's practice: more announcements, in case
	// one is lost (50 ms to 750 ms, then 5 s).
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for _, at := range []time.Duration{50 * time.Millisecond, 150 * time.Millisecond, 350 * time.Millisecond, 750 * time.Millisecond, 5 * time.Second} {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(start.Add(at))):
			}
			s.mu.Lock()
			still := s.director && s.gen == d.Gen
			s.mu.Unlock()
			if !still {
				return
			}
			s.cfg.Kernel.GARP(s.iface, s.vip)
		}
	}()
	return true
}

// release gives the address up (the table stays, for the backup).
func (s *Service) release() {
	s.mu.Lock()
	was := s.director
	s.director = false
	s.mu.Unlock()
	if !was {
		return
	}
	if err := s.cfg.Kernel.SetAddr(s.iface, s.vip, false); err != nil {
		s.log.Error("lvs: give up the cluster IP", "err", err)
	}
	s.cfg.Kernel.SetSync(SyncNone, s.iface, s.cfg.Spec.SyncID)
	s.log.Info("lvs: gave up the cluster IP", "address", s.vip)
}

func (s *Service) released(ctx context.Context, gen uint64) {
	m := s.member()
	if m == nil {
		return
	}
	st := m.Status()
	if !st.Quorum || st.Master == 0 {
		return
	}
	if st.Master == s.cfg.Node {
		if !st.Leaving {
			// Moved away from the master: it records its own release
			// (leaving, its next plan does).
			if err := s.applyReleased(m, s.cfg.Node, gen); err != nil {
				s.logOnce("lvs: record the cluster IP's release", err)
			}
		}
		return
	}
	b, _ := json.Marshal(gen)
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s.cfg.Call(cctx, st.Master, methodReleased, b)
}

// refreshTable brings IPVS's table up to date: the director from the
// real servers' answers, a backup from the director's table.
func (s *Service) refreshTable(ctx context.Context, st clms.Status, d Director) {
	s.mu.Lock()
	director, backupOK := s.director, s.backupOK
	s.mu.Unlock()
	var table []VirtualService
	if director {
		table = s.gather(ctx, st)
	} else if d.Node != 0 && d.Node != s.cfg.Node && backupOK {
		// Preloaded only under backup_only: a table that is not inert
		// would schedule again what the director forwards here.
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		b, err := s.cfg.Call(cctx, d.Node, methodTable, nil)
		cancel()
		if err != nil || json.Unmarshal(b, &table) != nil {
			return // the next tick asks again
		}
	} else {
		return
	}
	if err := s.cfg.Kernel.ApplyTable(s.vip, table); err != nil {
		s.logOnce("lvs: IPVS table", err)
		return
	}
	s.mu.Lock()
	s.table = table
	s.mu.Unlock()
}

// gather asks every Up node which ports it serves, in parallel.
func (s *Service) gather(ctx context.Context, st clms.Status) []VirtualService {
	type answer struct {
		node  int
		addr  netip.Addr
		ports map[string]bool
	}
	var mu sync.Mutex
	var answers []answer
	var wg sync.WaitGroup
	for _, n := range st.Nodes {
		if n.State != clms.Up {
			continue
		}
		addr, ok := n.IP()
		if !ok {
			continue
		}
		wg.Add(1)
		go func(node int) {
			defer wg.Done()
			var ports map[string]bool
			if node == s.cfg.Node {
				ports, _ = s.realPorts()
			} else {
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				b, err := s.cfg.Call(cctx, node, methodReal, nil)
				cancel()
				if err != nil || json.Unmarshal(b, &ports) != nil {
					return // not a real server until it answers
				}
			}
			mu.Lock()
			answers = append(answers, answer{node, addr, ports})
			mu.Unlock()
		}(n.Node)
	}
	wg.Wait()
	sort.Slice(answers, func(i, j int) bool { return answers[i].node < answers[j].node })
	var out []VirtualService
	for _, p := range s.cfg.Spec.Ports {
		v := VirtualService{Port: uint16(p.Port), Protocol: p.Proto(), Scheduler: p.Sched(), Servers: []netip.Addr{}}
		for _, a := range answers {
			if a.ports[portKey(p)] {
				v.Servers = append(v.Servers, a.addr)
			}
		}
		out = append(out, v)
	}
	return out
}

// Report is the cluster IP as this node sees it.
type Report struct {
	Address   string           `json:"address"`
	Interface string           `json:"interface"`
	Director  Director         `json:"director"`
	Table     []VirtualService `json:"table"`
	// Here: this node holds the address.
	Here bool `json:"here"`
}

// Local says whether this node holds the address and, if so, the table
// it programmed, without asking any other node.
func (s *Service) Local() (director bool, table []VirtualService) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.director {
		return false, nil
	}
	return true, slices.Clone(s.table)
}

// Report says who directs and, from the director, its table.
func (s *Service) Report(ctx context.Context) (Report, error) {
	m := s.member()
	if m == nil {
		return Report{}, errors.New("lvs: no membership on this node yet")
	}
	d, _, _ := readDirector(m.Records(directorKey))
	r := Report{Address: s.vip.String(), Interface: s.iface, Director: d}
	s.mu.Lock()
	r.Here, r.Table = s.director, s.table
	s.mu.Unlock()
	if !r.Here && d.Node != 0 {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if b, err := s.cfg.Call(cctx, d.Node, methodTable, nil); err == nil {
			json.Unmarshal(b, &r.Table)
		}
	}
	return r, nil
}
