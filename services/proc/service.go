package proc

import (
	"bytes"
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/locus-ssi/locus/services/ics"
	"github.com/locus-ssi/locus/services/proc/standin"
)

// ICS methods of the process service.
const (
	methodExec  = "proc.exec"
	methodPS    = "proc.ps"
	methodKill  = "proc.kill"
	methodStat  = "proc.stat"
	methodLoads = "proc.loads"
)

// callTimeout bounds a node's answer to ps, kill and where.
const callTimeout = 5 * time.Second

// Config configures a node's process service.
type Config struct {
	Node    int
	ProcDir string
	// LoadDir is where the load vector's files (loadavg, meminfo,
	// uptime, cpuinfo) are read: ProcDir if empty. Daemons sharing one
	// host in a test each get their own, so that a node's load is its
	// own and not the host's, sampled at another instant.
	LoadDir string
	// Up lists the nodes that are Up now, this one included.
	Up func() []int
	// ICS is this node's ICS endpoint (nil while it has none: then only
	// this node's processes are reachable).
	ICS func() *ics.Node
	// Root is the directory this node's processes run chrooted in: the
	// shared root once init mounted it ("" or nil: the daemon's own
	// root). Jobs run there, and its /etc/passwd names their users.
	Root  func() string
	Grace time.Duration
	Log   *slog.Logger
}

// Service is a node's part of the clusterwide process space.
type Service struct {
	cfg    Config
	host   *Host
	runner *Runner
	meter  *meter
	table  *table
	// launched counts the jobs started on this node (onnode, onall,
	// fast, rexec, migrations' restarts).
	launched atomic.Uint64
}

// New makes the service; Register puts its methods on ICS, Run keeps
// its load measured and gossiped.
func New(cfg Config) (*Service, error) {
	if cfg.ProcDir == "" {
		cfg.ProcDir = "/proc"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Up == nil {
		cfg.Up = func() []int { return []int{cfg.Node} }
	}
	if cfg.ICS == nil {
		cfg.ICS = func() *ics.Node { return nil }
	}
	if cfg.Root == nil {
		cfg.Root = func() string { return "" }
	}
	h, err := NewHost(cfg.Node, cfg.ProcDir, cfg.Root)
	if err != nil {
		return nil, err
	}
	if cfg.LoadDir == "" {
		cfg.LoadDir = cfg.ProcDir
	}
	m := newMeter(cfg.Node, cfg.LoadDir)
	s := &Service{cfg: cfg, host: h, meter: m, table: newTable(m)}
	s.runner = &Runner{Node: cfg.Node, ProcDir: cfg.ProcDir, Root: cfg.Root, Grace: cfg.Grace, Log: cfg.Log,
		Accepted: func() { s.launched.Add(1); m.accept() }}
	return s, nil
}

// Launched is how many jobs this node started since the service did.
func (s *Service) Launched() uint64 { return s.launched.Load() }

// Node is this service's node.
func (s *Service) Node() int { return s.cfg.Node }

// Register serves the service's ICS methods on n.
func (s *Service) Register(n *ics.Node) {
	n.HandleDuplex(methodExec, func(ctx context.Context, from int, recv func() ([]byte, error), send func([]byte) error) error {
		b, err := recv()
		if err != nil {
			return err
		}
		f, err := standin.UnmarshalFrame(b)
		if err != nil || f.Kind != standin.KindStart {
			return fmt.Errorf("proc: node %d's job stream does not begin with standin.Start", from)
		}
		var st standin.Start
		if err := f.Decode(&st); err != nil {
			return err
		}
		st.Origin = from
		frecv := func() (standin.Frame, error) {
			b, err := recv()
			if err != nil {
				return standin.Frame{}, err
			}
			return standin.UnmarshalFrame(b)
		}
		return s.runner.Run(ctx, st, frecv, func(f standin.Frame) error { return send(f.Marshal()) })
	})
	n.Handle(methodPS, func(ctx context.Context, from int, req []byte) ([]byte, error) {
		ps, err := s.host.Snapshot()
		if err != nil {
			return nil, err
		}
		// gob: a node's thousands of rows cost a third of their JSON.
		var b bytes.Buffer
		if err := gob.NewEncoder(&b).Encode(ps); err != nil {
			return nil, err
		}
		return b.Bytes(), nil
	})
	n.Handle(methodStat, func(ctx context.Context, from int, req []byte) ([]byte, error) {
		var pid int
		if err := json.Unmarshal(req, &pid); err != nil {
			return nil, fmt.Errorf("proc: stat request: %w", err)
		}
		p, err := s.local(pid)
		if err != nil {
			return nil, err
		}
		return json.Marshal(p)
	})
	n.Handle(methodKill, func(ctx context.Context, from int, req []byte) ([]byte, error) {
		var k killRequest
		if err := json.Unmarshal(req, &k); err != nil {
			return nil, fmt.Errorf("proc: kill request: %w", err)
		}
		return nil, s.killLocal(k)
	})
	n.Handle(methodRaw, rawHandler(s))
	n.Handle(methodLoads, func(ctx context.Context, from int, req []byte) ([]byte, error) {
		var ls []Load
		if err := json.Unmarshal(req, &ls); err != nil {
			return nil, fmt.Errorf("proc: gossip from node %d: %w", from, err)
		}
		now := time.Now()
		s.table.merge(ls, now)
		return json.Marshal(s.table.fresh(now))
	})
}

// Run measures this node's load and gossips it until ctx ends.
func (s *Service) Run(ctx context.Context) {
	sample := time.NewTicker(sampleEvery)
	defer sample.Stop()
	measure := time.NewTicker(measureEvery)
	defer measure.Stop()
	gossip := time.NewTicker(gossipEvery)
	defer gossip.Stop()
	var last Load // this node's entry as last pushed
	var lastAt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-sample.C:
			s.meter.sample()
		case now := <-measure.C:
			s.meter.measure(now)
		case now := <-gossip.C:
			// Every 500 ms while this node's load moves or it takes jobs;
			// an idle node's entry is pushed every idleGossipEvery, which
			// keeps it fresh (freshFor) at a sixth of the cost.
			cur := s.meter.load()
			if quiet(last, cur) && now.Sub(lastAt) < idleGossipEvery {
				continue
			}
			s.gossip(ctx)
			last, lastAt = cur, now
		}
	}
}

// quiet says whether this node's load has not moved since last (by a
// tenth of a process's load) and it took no job since.
func quiet(last, cur Load) bool {
	tol := cur.SPL() / 10
	return cur.Accepted == 0 && last.Accepted == 0 && math.Abs(cur.Upper-last.Upper) < tol && math.Abs(cur.Mean-last.Mean) < tol
}

// gossip pushes the fresh entries to one random peer and takes its own
// back (push-pull).
func (s *Service) gossip(ctx context.Context) {
	n := s.cfg.ICS()
	if n == nil {
		return
	}
	to := s.table.peer(s.cfg.Up())
	if to == 0 {
		return
	}
	b, _ := json.Marshal(s.table.fresh(time.Now()))
	ctx, cancel := context.WithTimeout(ctx, gossipEvery)
	defer cancel()
	resp, err := n.Call(ctx, to, methodLoads, b)
	if err != nil {
		return // the node may be going; membership says so, not this
	}
	var ls []Load
	if json.Unmarshal(resp, &ls) == nil {
		s.table.merge(ls, time.Now())
	}
}

// Loads is every node's load vector as this node knows it.
func (s *Service) Loads() []Load {
	up := s.cfg.Up()
	var out []Load
	for _, l := range s.table.all(time.Now()) {
		if slices.Contains(up, l.Node) {
			out = append(out, l)
		}
	}
	return out
}

// Place picks the least loaded Up node for a job (and counts it there);
// count > 1 picks that many, spread as that many launches would be.
func (s *Service) Place(count int, reserve bool) []int {
	up := s.cfg.Up()
	out := make([]int, 0, count)
	for range max(count, 1) {
		out = append(out, s.table.place(up, reserve || count > 1, time.Now()))
	}
	return out
}

// PlaceAmong picks the least loaded of nodes (those Up, whose load this
// node knows; 0 if none) and counts the placement there: fast placement
// of an HA service's instance.
func (s *Service) PlaceAmong(nodes []int) int {
	up := s.cfg.Up()
	var cands []int
	for _, n := range nodes {
		if slices.Contains(up, n) {
			cands = append(cands, n)
		}
	}
	if len(cands) == 0 {
		return 0
	}
	n := s.table.place(cands, true, time.Now())
	if !slices.Contains(cands, n) {
		return cands[0] // place falls back to this node when it knows none
	}
	return n
}

// NodeError is a node that did not answer.
type NodeError struct {
	Node  int    `json:"node"`
	Error string `json:"error"`
}

// PS lists the processes of the Up nodes in nodes (every Up node if
// nodes is empty), asked in parallel; the nodes that did not answer come
// back apart.
func (s *Service) PS(ctx context.Context, nodes []int) ([]Process, []NodeError) {
	up := s.cfg.Up()
	if len(nodes) == 0 {
		nodes = up
	}
	type answer struct {
		node int
		ps   []Process
		err  error
	}
	ch := make(chan answer, len(nodes))
	for _, n := range nodes {
		go func() {
			a := answer{node: n}
			switch {
			case n == s.cfg.Node:
				a.ps, a.err = s.host.Snapshot()
			case !slices.Contains(up, n):
				a.err = fmt.Errorf("node %d is not Up", n)
			default:
				a.ps, a.err = s.remotePS(ctx, n)
			}
			ch <- a
		}()
	}
	var all []Process
	var errs []NodeError
	for range nodes {
		a := <-ch
		if a.err != nil {
			errs = append(errs, NodeError{Node: a.node, Error: a.err.Error()})
			continue
		}
		all = append(all, a.ps...)
	}
	slices.SortFunc(all, func(a, b Process) int { return int(a.CPID - b.CPID) })
	slices.SortFunc(errs, func(a, b NodeError) int { return a.Node - b.Node })
	return all, errs
}

// nodeEnv is a foreign caller's job's environment: the node's PATH, the
// user's HOME, USER and LOGNAME (from the process root's passwd), and of
// the caller's only its locale.
func (s *Service) nodeEnv(caller []string, u standin.User) []string {
	name, home := "root", "/root"
	if u.UID != 0 {
		name, home = strconv.Itoa(int(u.UID)), "/"
		if a, ok := s.host.users.lookup(u.UID); ok {
			name, home = a.name, a.home
		}
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "USER=" + name, "LOGNAME=" + name}
	for _, kv := range caller {
		if strings.HasPrefix(kv, "LANG=") || strings.HasPrefix(kv, "LC_") {
			env = append(env, kv)
		}
	}
	return env
}

// homeOf is the user's home directory ("/" if it has none here).
func (s *Service) homeOf(u standin.User) string {
	if a, ok := s.host.users.lookup(u.UID); ok && a.home != "" {
		return a.home
	}
	return "/"
}

// remotePS is node n's process table.
func (s *Service) remotePS(ctx context.Context, n int) ([]Process, error) {
	ic := s.cfg.ICS()
	if ic == nil {
		return nil, fmt.Errorf("node %d: this node has no ICS to reach it", n)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	b, err := ic.Call(ctx, n, methodPS, nil)
	if err != nil {
		return nil, remoteErr(err)
	}
	var ps []Process
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&ps); err != nil {
		return nil, fmt.Errorf("node %d: bad process table: %w", n, err)
	}
	return ps, nil
}

// call makes a unary ICS call to node with req as JSON, its answer into v.
func (s *Service) call(ctx context.Context, node int, method string, req, v any) error {
	n := s.cfg.ICS()
	if n == nil {
		return fmt.Errorf("node %d: this node has no ICS to reach it", node)
	}
	var b []byte
	if req != nil {
		b, _ = json.Marshal(req)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := n.Call(ctx, node, method, b)
	if err != nil {
		return remoteErr(err)
	}
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(resp, v); err != nil {
		return fmt.Errorf("node %d: bad %s answer: %w", node, method, err)
	}
	return nil
}

// remoteErr drops ICS's wrapping from a remote handler's own error.
func remoteErr(err error) error {
	msg := err.Error()
	if _, after, ok := strings.Cut(msg, ": Unknown: "); ok {
		return errors.New(after)
	}
	return err
}

// ErrNoProcess is a cluster PID that names no process.
var ErrNoProcess = errors.New("no such process")

// Where finds the process a cluster PID names.
func (s *Service) Where(ctx context.Context, node, pid int) (Process, error) {
	if node == s.cfg.Node {
		return s.local(pid)
	}
	if !slices.Contains(s.cfg.Up(), node) {
		return Process{}, fmt.Errorf("%s: node %d is not Up", FormatCPID(node, pid), node)
	}
	var p Process
	err := s.call(ctx, node, methodStat, pid, &p)
	return p, err
}

func (s *Service) local(pid int) (Process, error) {
	p, err := s.host.Process(pid, float64(time.Now().UnixNano())/1e9)
	if err != nil {
		return Process{}, fmt.Errorf("%s (node %d pid %d): %w", FormatCPID(s.cfg.Node, pid), s.cfg.Node, pid, ErrNoProcess)
	}
	return p, nil
}

type killRequest struct {
	PID    int          `json:"pid"`
	Group  bool         `json:"group,omitempty"`
	Signal int          `json:"signal"`
	User   standin.User `json:"user"`
}

// Kill sends sig to node's process pid (its process group, with
// group), as user: allowed as the kernel allows it (root, or the same
// real or saved uid as the target's).
func (s *Service) Kill(ctx context.Context, user standin.User, node, pid int, group bool, sig int) error {
	if sig < 0 || sig > 64 {
		return fmt.Errorf("signal %d is not a signal", sig)
	}
	k := killRequest{PID: pid, Group: group, Signal: sig, User: user}
	if node == s.cfg.Node {
		return s.killLocal(k)
	}
	if !slices.Contains(s.cfg.Up(), node) {
		return fmt.Errorf("%s: node %d is not Up", FormatCPID(node, pid), node)
	}
	return s.call(ctx, node, methodKill, k, nil)
}

func (s *Service) killLocal(k killRequest) error {
	name := FormatCPID(s.cfg.Node, k.PID)
	if k.PID < 1 || k.PID > MaxPID {
		return fmt.Errorf("%s: %w", name, ErrNoProcess)
	}
	if k.Signal < 0 || k.Signal > 64 {
		return fmt.Errorf("signal %d is not a signal", k.Signal)
	}
	targets := []int{k.PID}
	if k.Group {
		targets = groupMembers(s.cfg.ProcDir, k.PID)
		if len(targets) == 0 {
			return fmt.Errorf("process group %s: %w", name, ErrNoProcess)
		}
	}
	var permitted []int
	for _, p := range targets {
		ok, err := mayKill(s.cfg.ProcDir, k.User.UID, p)
		if err != nil {
			if !k.Group {
				return fmt.Errorf("%s: %w", name, ErrNoProcess)
			}
			continue
		}
		if ok {
			permitted = append(permitted, p)
		}
	}
	if len(permitted) == 0 {
		return fmt.Errorf("%s: operation not permitted (uid %d)", name, k.User.UID)
	}
	target := k.PID
	if k.Group {
		target = -k.PID
	}
	if len(permitted) == len(targets) {
		if err := syscall.Kill(target, syscall.Signal(k.Signal)); err != nil {
			if errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("%s: %w", name, ErrNoProcess)
			}
			return fmt.Errorf("%s: %w", name, err)
		}
	} else {
		for _, p := range permitted {
			syscall.Kill(p, syscall.Signal(k.Signal))
		}
	}
	s.cfg.Log.Debug("signal sent", "cpid", name, "group", k.Group, "signal", k.Signal, "uid", k.User.UID)
	return nil
}

// mayKill is the kernel's rule for kill(2): root, or the sender's uid
// equal to the target's real or saved uid.
func mayKill(procDir string, uid uint32, pid int) (bool, error) {
	b, err := os.ReadFile(procDir + "/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false, err
	}
	if uid == 0 {
		return true, nil
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(v)
			if len(f) >= 3 {
				return f[0] == strconv.Itoa(int(uid)) || f[2] == strconv.Itoa(int(uid)), nil
			}
		}
	}
	return false, nil
}

// groupMembers lists the processes of process group pgid.
func groupMembers(procDir string, pgid int) []int {
	return processesWhere(procDir, func(p Process) bool { return p.PGID == pgid })
}

// Exec serves one stand-in's stream: its Start is run as user, on the
// node it names or the least loaded one, and the frames relayed both
// ways until the job ends. Over ICS, the job's node going Down ends the
// stream with a lost Exit at once; the stand-in going (its connection
// closed) ends the job's session.
//
// A caller from outside the cluster (an operator's workstation) is
// foreign: its environment and directory mean nothing on a node, so the
// job gets the node's own (PATH as the daemon has it, HOME and USER of
// the user, the caller's TERM and locale) and runs in its home.
func (s *Service) Exec(ctx context.Context, c *standin.Conn, user standin.User, foreign bool) {
	defer c.Close()
	f, err := c.Read()
	if err != nil {
		return
	}
	var st standin.Start
	if f.Kind != standin.KindStart || f.Decode(&st) != nil {
		c.Write(standin.JSONFrame(standin.KindExit, standin.Exit{Code: 2, Reason: "the stream did not begin with a Start frame"}))
		return
	}
	st.User, st.Origin = &user, s.cfg.Node
	if foreign {
		st.Env, st.Dir = s.nodeEnv(st.Env, user), s.homeOf(user)
	}
	up := s.cfg.Up()
	if st.Node == 0 {
		st.Node = s.Place(1, true)[0]
	}
	if st.Node < 0 || st.Node > MaxNode {
		c.Write(standin.JSONFrame(standin.KindExit, standin.Exit{Code: 255, Reason: "not a node number", Node: st.Node}))
		return
	}
	if st.Node == s.cfg.Node {
		s.runner.Run(ctx, st, c.Read, c.Write)
		return
	}
	if !slices.Contains(up, st.Node) {
		c.Write(standin.JSONFrame(standin.KindExit, standin.Exit{Code: 255, Reason: "not Up", Node: st.Node}))
		return
	}
	n := s.cfg.ICS()
	if n == nil {
		c.Write(standin.JSONFrame(standin.KindExit, standin.Exit{Code: 255, Reason: "this node has no ICS to reach it", Node: st.Node}))
		return
	}
	s.relay(ctx, n, c, st)
}

func (s *Service) relay(ctx context.Context, n *ics.Node, c *standin.Conn, st standin.Start) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d, err := n.OpenDuplex(ctx, st.Node, methodExec)
	if err != nil {
		c.Write(standin.JSONFrame(standin.KindExit, standin.Lost(fmt.Sprintf("node %d: %v", st.Node, remoteErr(err)))))
		return
	}
	defer d.Close()
	if err := d.Send(standin.JSONFrame(standin.KindStart, st).Marshal()); err != nil {
		c.Write(standin.JSONFrame(standin.KindExit, standin.Lost(fmt.Sprintf("node %d: %v", st.Node, err))))
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The stand-in's frames, until it goes: then the job's stream
		// is cancelled, which hangs the job up on its node.
		defer d.Close()
		for {
			f, err := c.Read()
			if err != nil {
				return
			}
			if f.Kind == standin.KindStart {
				continue
			}
			if d.Send(f.Marshal()) != nil {
				return
			}
		}
	}()
	defer wg.Wait()
	for {
		b, err := d.Recv()
		if err != nil {
			reason := fmt.Sprintf("lost the stream to node %d: %v", st.Node, err)
			if errors.Is(err, ics.ErrNodeDown) {
				reason = fmt.Sprintf("node %d went Down", st.Node)
			}
			if errors.Is(err, io.EOF) {
				reason = fmt.Sprintf("node %d ended the job's stream without its exit", st.Node)
			}
			c.Write(standin.JSONFrame(standin.KindExit, standin.Lost(reason)))
			c.Close()
			return
		}
		f, err := standin.UnmarshalFrame(b)
		if err != nil {
			c.Write(standin.JSONFrame(standin.KindExit, standin.Lost(fmt.Sprintf("node %d: %v", st.Node, err))))
			c.Close()
			return
		}
		if c.Write(f) != nil {
			return
		}
		if f.Kind == standin.KindExit || (st.Detach && f.Kind == standin.KindStarted) {
			c.Close()
			return
		}
	}
}
