package ha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/events"
	"github.com/locus-ssi/locus/services/ics"
)

// Membership is what the service needs of CLMS (a *clms.Member).
type Membership interface {
	Status() clms.Status
	Records(prefix string) []clms.Record
	WriteRecords(ws ...clms.RecordWrite) error
	WatchRecords(ch chan<- struct{}) func()
}

// Config configures a node's HA service.
type Config struct {
	Node int
	// Services are the spec's services (the HA ones are run);
	// AllNodes, the spec's nodes, for services that name none.
	Services []clusterspec.Service
	AllNodes []int
	// Member is the membership (nil until it runs).
	Member func() Membership
	// Call calls method on node over ICS.
	Call func(ctx context.Context, node int, method string, req []byte) ([]byte, error)
	// Place picks the least loaded of nodes (fast placement; nil: the
	// first).
	Place func(nodes []int) int
	// Command makes the process for argv in the node's root.
	Command func(argv []string) (*exec.Cmd, error)
	// OCFRoot is OCF_ROOT in the node's root (DefaultOCFRoot if empty).
	OCFRoot string
	// QuorumGrace is how long this node runs its instances without
	// quorum before it stops them (default 2s).
	QuorumGrace time.Duration
	// Events, if set, gets a ServiceStarted and a ServiceStopped event
	// for each instance this node runs.
	Events events.Publisher
	Log    *slog.Logger
}

// ICS methods.
const (
	methodStatus   = "ha.status"
	methodLogs     = "ha.logs"
	methodFailure  = "ha.failure"
	methodReleased = "ha.released"
	methodControl  = "ha.control"
)

// Service is a node's part of the HA service: the master's placement
// when this node is the master, and the instances assigned here.
type Service struct {
	cfg    Config
	defs   []*def
	byName map[string]*def
	log    *slog.Logger
	kick   chan struct{}
	env    *runEnv

	mu       sync.Mutex
	running  map[string]*instance // service/instance
	stopping map[string]*instance // canceled, not yet stopped
	// stuck are instances whose stop failed: they may still run, so the
	// master is never told they stopped (they move once this node is
	// fenced).
	stuck     map[string]*instance
	logs      map[string]*ring // kept after an instance stops
	releasing map[string]bool  // a released call in flight
	lostAt    time.Time        // quorum lost since
	probed    bool
	wg        sync.WaitGroup
}

// New checks the spec's HA services and makes the service.
func New(cfg Config) (*Service, error) {
	ds, err := defs(cfg.Services, cfg.AllNodes)
	if err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.QuorumGrace == 0 {
		cfg.QuorumGrace = 2 * time.Second
	}
	if cfg.Command == nil {
		cfg.Command = func(argv []string) (*exec.Cmd, error) { return exec.Command(argv[0], argv[1:]...), nil }
	}
	s := &Service{cfg: cfg, defs: ds, byName: map[string]*def{}, log: cfg.Log, kick: make(chan struct{}, 1),
		running: map[string]*instance{}, stopping: map[string]*instance{}, stuck: map[string]*instance{}, logs: map[string]*ring{}, releasing: map[string]bool{}}
	for _, d := range ds {
		s.byName[d.Name] = d
	}
	s.env = &runEnv{command: cfg.Command, report: s.report, ocfRoot: cfg.OCFRoot}
	if cfg.Events != nil {
		s.env.publish = cfg.Events.Publish
	}
	return s, nil
}

// Register serves the service's ICS methods on n.
func (s *Service) Register(n *ics.Node) {
	n.Handle(methodStatus, func(ctx context.Context, from int, _ []byte) ([]byte, error) {
		return json.Marshal(s.localStatus())
	})
	n.Handle(methodLogs, func(ctx context.Context, from int, b []byte) ([]byte, error) {
		var name string
		if err := json.Unmarshal(b, &name); err != nil {
			return nil, fmt.Errorf("ha: logs from node %d: %w", from, err)
		}
		return json.Marshal(s.localLogs(name))
	})
	n.Handle(methodFailure, func(ctx context.Context, from int, b []byte) ([]byte, error) {
		var r failureRequest
		if err := json.Unmarshal(b, &r); err != nil || r.Node != from {
			return nil, fmt.Errorf("ha: failure report from node %d: bad request (%v)", from, err)
		}
		reply, err := s.onMaster(func(m Membership, d *def, v view, st clms.Status) ([]clms.RecordWrite, any, error) {
			ws, reply := onFailure(d, v, r, time.Now())
			return ws, reply, nil
		}, r.Service)
		if err != nil {
			return nil, err
		}
		return json.Marshal(reply)
	})
	n.Handle(methodReleased, func(ctx context.Context, from int, b []byte) ([]byte, error) {
		var r releasedRequest
		if err := json.Unmarshal(b, &r); err != nil || r.Node != from {
			return nil, fmt.Errorf("ha: release from node %d: bad request (%v)", from, err)
		}
		_, err := s.onMaster(func(m Membership, d *def, v view, st clms.Status) ([]clms.RecordWrite, any, error) {
			return onReleased(d, v, r, time.Now()), nil, nil
		}, r.Service)
		return nil, err
	})
	n.Handle(methodControl, func(ctx context.Context, from int, b []byte) ([]byte, error) {
		var r controlRequest
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("ha: control from node %d: %w", from, err)
		}
		return nil, s.control(r)
	})
}

// onMaster runs a decision on this node as the master, over the current
// records, and commits its writes (again, on a concurrent change).
func (s *Service) onMaster(decide func(Membership, *def, view, clms.Status) ([]clms.RecordWrite, any, error), service string) (any, error) {
	d := s.byName[service]
	if d == nil {
		return nil, fmt.Errorf("ha: %w: %q", errUnknownService, service)
	}
	m := s.member()
	if m == nil {
		return nil, errors.New("ha: no membership on this node")
	}
	for attempt := 0; ; attempt++ {
		st := m.Status()
		if st.Master != s.cfg.Node || !st.Quorum {
			return nil, fmt.Errorf("ha: node %d is not the master (node %d is)", s.cfg.Node, st.Master)
		}
		ws, reply, err := decide(m, d, readView(m.Records("ha/")), st)
		if err != nil || len(ws) == 0 {
			return reply, err
		}
		err = m.WriteRecords(ws...)
		if err == nil {
			s.poke()
			return reply, nil
		}
		if !errors.Is(err, clms.ErrRecordChanged) || attempt == 5 {
			return nil, fmt.Errorf("ha: %s: %w", service, err)
		}
	}
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

// Run places (as the master) and runs this node's instances until ctx
// ends; then it stops them.
func (s *Service) Run(ctx context.Context) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var unwatch func()
	defer func() {
		if unwatch != nil {
			unwatch()
		}
		s.stopAll()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-tick.C:
		}
		m := s.member()
		if m == nil || len(s.defs) == 0 {
			continue
		}
		if unwatch == nil {
			unwatch = m.WatchRecords(s.kick)
		}
		st := m.Status()
		if st.Master == s.cfg.Node && st.Quorum {
			s.reconcile(m, st)
		}
		s.follow(ctx, m, st)
	}
}

// reconcile is the master's pass over every service.
func (s *Service) reconcile(m Membership, st clms.Status) {
	v := readView(m.Records("ha/"))
	for _, d := range s.defs {
		ws := plan(d, v, st, time.Now(), s.cfg.Place)
		if len(ws) == 0 {
			continue
		}
		if err := m.WriteRecords(ws...); err != nil {
			if !errors.Is(err, clms.ErrRecordChanged) {
				s.log.Warn("ha: placement", "service", d.Name, "err", err)
			}
			continue // the next pass decides again
		}
		for _, w := range ws {
			var a Assignment
			if json.Unmarshal(w.Value, &a) == nil && strings.HasPrefix(w.Key, assignPrefix) && a.Node != 0 && !a.Releasing {
				s.log.Info("ha: instance placed", "key", w.Key, "node", a.Node, "gen", a.Gen, "why", a.Why)
			}
		}
	}
}

// follow runs what is assigned to this node and stops the rest.
func (s *Service) follow(ctx context.Context, m Membership, st clms.Status) {
	v := readView(m.Records("ha/"))
	self := states(st)[s.cfg.Node]
	leaving := st.Leaving || self == clms.ShuttingDown || self == clms.GoingDown
	s.mu.Lock()
	if st.Quorum {
		s.lostAt = time.Time{}
	} else if s.lostAt.IsZero() {
		s.lostAt = time.Now()
	}
	noQuorum := !s.lostAt.IsZero() && time.Since(s.lostAt) > s.cfg.QuorumGrace
	s.mu.Unlock()
	want := map[string]Assignment{}
	if !leaving && !noQuorum {
		for name, insts := range v.assign {
			d := s.byName[name]
			if d == nil {
				continue
			}
			for id, a := range insts {
				if a.v.Node == s.cfg.Node && !a.v.Releasing {
					want[name+"/"+id] = a.v
				}
			}
		}
	}
	if !s.probed && st.Quorum && !leaving {
		s.probed = true
		s.probeStrays(ctx, v)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, in := range s.running {
		if a, ok := want[key]; ok && a.Gen == in.gen {
			continue
		}
		if noQuorum {
			s.log.Warn("ha: no quorum: stopping the instance (the others fence this node before they start it)", "instance", key)
		}
		in.cancel()
		delete(s.running, key)
		s.stopping[key] = in
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			<-in.done
			s.mu.Lock()
			delete(s.stopping, key)
			if !in.stopOK {
				s.stuck[key] = in
				s.log.Error("ha: the instance would not stop: it stays assigned here until this node is fenced", "instance", key)
			}
			s.mu.Unlock()
			if in.stopOK {
				s.released(ctx, in)
			}
			s.poke()
		}()
	}
	for key, a := range want {
		if s.running[key] != nil || s.stopping[key] != nil || s.stuck[key] != nil {
			continue // a stop in flight ends before anything starts again
		}
		name, id := splitKey(key)
		d := s.byName[name]
		lg := s.logs[key]
		if lg == nil {
			lg = newRing(name, id, s.cfg.Node)
			s.logs[key] = lg
		}
		ictx, cancel := context.WithCancel(ctx)
		in := &instance{d: d, id: id, gen: a.Gen, node: s.cfg.Node, env: s.env, logs: lg, cancel: cancel, done: make(chan struct{})}
		s.running[key] = in
		s.log.Info("ha: starting instance", "instance", key, "gen", a.Gen, "why", a.Why)
		s.wg.Add(1)
		go func() { defer s.wg.Done(); in.run(ictx) }()
	}
	// Instances this node stopped whose assignment still names it: tell
	// the master again (an earlier word was lost, or came too early).
	for name, insts := range v.assign {
		for id, a := range insts {
			key := name + "/" + id
			if a.v.Node != s.cfg.Node || !a.v.Releasing || s.running[key] != nil || s.stopping[key] != nil || s.stuck[key] != nil || s.releasing[key] {
				continue
			}
			if d := s.byName[name]; d != nil {
				in := &instance{d: d, id: id, gen: a.v.Gen, node: s.cfg.Node}
				s.releasing[key] = true
				s.wg.Add(1)
				go func() { defer s.wg.Done(); s.released(ctx, in) }()
			}
		}
	}
}

// probeStrays stops, once after the daemon starts, what an OCF agent
// reports running on this node but is not assigned here (left by an
// earlier run of the daemon).
func (s *Service) probeStrays(ctx context.Context, v view) {
	for _, d := range s.defs {
		if !d.ocf() || !slices.Contains(d.Nodes, s.cfg.Node) {
			continue
		}
		mine := false
		for _, a := range v.assign[d.Name] {
			mine = mine || a.v.Node == s.cfg.Node && !a.v.Releasing
		}
		if mine {
			continue
		}
		a := Agent{Provider: d.Provider, Type: d.Type, Instance: d.Name, Params: d.Params, OCFRoot: s.cfg.OCFRoot, Command: s.cfg.Command}
		if r := a.Run(ctx, "monitor", d.MonitorTimeout, 0); r.RC == OCFSuccess {
			s.log.Warn("ha: stopping an instance found running where it is not assigned", "service", d.Name)
			if r := a.Run(ctx, "stop", DefaultActionTimeout, 0); r.RC != OCFSuccess {
				s.log.Error("ha: stray instance would not stop", "service", d.Name, "result", r.String())
			}
		}
	}
}

// splitKey splits "service/instance" (a service's name has no '/').
func splitKey(key string) (string, string) {
	svc, inst, _ := strings.Cut(key, "/")
	return svc, inst
}

// released tells the master this node stopped an instance.
func (s *Service) released(ctx context.Context, in *instance) {
	key := in.d.Name + "/" + in.id
	defer func() {
		s.mu.Lock()
		delete(s.releasing, key)
		s.mu.Unlock()
	}()
	b, _ := json.Marshal(releasedRequest{Service: in.d.Name, Instance: in.id, Gen: in.gen, Node: s.cfg.Node})
	if _, err := s.callMaster(ctx, methodReleased, b); err != nil {
		s.log.Debug("ha: released", "instance", key, "err", err)
	}
}

// report tells the master of a local failure and returns its decision;
// without a master the node restarts in place.
func (s *Service) report(ctx context.Context, r failureRequest) failureReply {
	b, _ := json.Marshal(r)
	resp, err := s.callMaster(ctx, methodFailure, b)
	if err != nil {
		s.log.Warn("ha: failure not counted by the master; restarting here", "service", r.Service, "err", err)
		return failureReply{Restart: true}
	}
	var reply failureReply
	if err := json.Unmarshal(resp, &reply); err != nil {
		return failureReply{Restart: true}
	}
	return reply
}

func (s *Service) callMaster(ctx context.Context, method string, b []byte) ([]byte, error) {
	m := s.member()
	if m == nil {
		return nil, errors.New("no membership")
	}
	st := m.Status()
	if !st.Quorum || st.Master == 0 {
		return nil, errors.New("no master with the quorum")
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return s.cfg.Call(cctx, st.Master, method, b)
}

// stopAll stops every instance here and waits.
func (s *Service) stopAll() {
	s.mu.Lock()
	for key, in := range s.running {
		in.cancel()
		delete(s.running, key)
		s.wg.Add(1)
		go func() { defer s.wg.Done(); <-in.done }()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Running says whether an instance of service runs on this node now
// (started, and not failed since): a real server for the cluster IP.
func (s *Service) Running(service string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, in := range s.running {
		if in.d.Name == service && in.status().State == "running" {
			return true
		}
	}
	return false
}

// Local is the instances this node runs (or is stopping), by service
// and instance.
func (s *Service) Local() []InstanceStatus { return s.localStatus() }

func (s *Service) localStatus() []InstanceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []InstanceStatus{}
	for _, m := range []map[string]*instance{s.running, s.stopping, s.stuck} {
		for _, in := range m {
			out = append(out, in.status())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service+"/"+out[i].Instance < out[j].Service+"/"+out[j].Instance })
	return out
}

func (s *Service) localLogs(name string) []LogLine {
	s.mu.Lock()
	var rings []*ring
	for key, r := range s.logs {
		if n, _ := splitKey(key); n == name {
			rings = append(rings, r)
		}
	}
	s.mu.Unlock()
	var out []LogLine
	for _, r := range rings {
		out = append(out, r.all()...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

// control runs an operator's verb on the master.
func (s *Service) control(r controlRequest) error {
	_, err := s.onMaster(func(m Membership, d *def, v view, st clms.Status) ([]clms.RecordWrite, any, error) {
		ws, err := onControl(d, v, r, st, time.Now())
		return ws, nil, err
	}, r.Service)
	return err
}
