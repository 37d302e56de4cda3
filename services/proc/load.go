package proc

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Load is a node's load vector, as it gossips it.
type Load struct {
	Node int `json:"node"`
	// Stamp is when the node measured it (its clock, Unix ns): of two
	// entries for a node the later wins.
	Stamp int64 `json:"stamp"`
	// AgeMS is how old the entry was when sent (0 from its own node).
	AgeMS int64 `json:"age_ms,omitempty"`
	NCPU  int   `json:"ncpu"`
	// Speed is the CPU's speed factor (BogoMIPS/1000; 1 if unknown).
	Speed float64 `json:"speed"`
	// RunQ is the run queue (runnable tasks) over the last second.
	RunQ float64 `json:"runq"`
	// Mean and Upper are the run queue per unit of CPU (ncpu × speed),
	// damped: Mean rises slowly and drops at once, Upper rises at once and
	// decays slowly.
	Mean  float64 `json:"mean"`
	Upper float64 `json:"upper"`
	// Accepted is how many jobs the node started in the last seconds
	// (they count as load until they show in the run queue).
	Accepted int        `json:"accepted,omitempty"`
	LoadAvg  [3]float64 `json:"loadavg"`
	MemFree  int64      `json:"mem_free_kib"`
	MemTotal int64      `json:"mem_total_kib"`
	Procs    int        `json:"procs"`
	Users    int        `json:"users"`
	Uptime   float64    `json:"uptime"`
	Hostname string     `json:"hostname,omitempty"`
}

// SPL is the load one CPU-bound process adds on the node.
func (l Load) SPL() float64 {
	d := float64(max(l.NCPU, 1)) * l.Speed
	if d <= 0 {
		return 1
	}
	return 1 / d
}

// Damping of the load, and how long things count.
const (
	sampleEvery  = 250 * time.Millisecond
	measureEvery = time.Second
	gossipEvery  = 500 * time.Millisecond
	// idleGossipEvery is how often a node whose load does not move
	// pushes its entry (under freshFor, so it stays fresh).
	idleGossipEvery = 3 * time.Second
	gossipEntries   = 20
	// freshFor is how long a gossiped entry counts for placement.
	freshFor = 4 * time.Second
	// reserveFor is how long a placement counts as load on its node.
	reserveFor = 3 * time.Second
)

// meter measures this node's load.
type meter struct {
	node    int
	procDir string
	ncpu    int
	speed   float64
	// The files it reads every second or more often, kept open: a
	// pread is one system call (under emulation, each one counts).
	files map[string]*procFile

	mu       sync.Mutex
	samples  []float64
	cur      Load
	accepted []time.Time
}

func newMeter(node int, procDir string) *meter {
	m := &meter{node: node, procDir: procDir, ncpu: runtime.NumCPU(), speed: cpuSpeed(procDir), files: map[string]*procFile{}}
	for _, name := range []string{"loadavg", "meminfo", "uptime"} {
		m.files[name] = &procFile{path: filepath.Join(procDir, name)}
	}
	m.cur = Load{Node: node, NCPU: m.ncpu, Speed: m.speed}
	m.measure(time.Now())
	return m
}

// cpuSpeed is BogoMIPS/1000 of the first CPU: the kernel's own
// calibration, the same on every node of the same hardware.
func cpuSpeed(procDir string) float64 {
	b, err := os.ReadFile(filepath.Join(procDir, "cpuinfo"))
	if err != nil {
		return 1
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), "bogomips") {
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && f > 0 {
				return f / 1000
			}
		}
	}
	return 1
}

// sample reads the run queue once: the running count of /proc/loadavg
// (the kernel's nr_running, as /proc/stat's procs_running), less the
// reader. loadavg is one short line; stat, on a VM with many
// interrupts, is kilobytes read four times a second.
func (m *meter) sample() {
	b, err := m.files["loadavg"].read()
	if err != nil {
		return
	}
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return
	}
	running, _, _ := strings.Cut(f[3], "/")
	if n, err := strconv.Atoi(running); err == nil {
		m.mu.Lock()
		m.samples = append(m.samples, float64(max(n-1, 0)))
		m.mu.Unlock()
	}
}

// measure turns the last second's samples into the load vector.
func (m *meter) measure(now time.Time) {
	m.mu.Lock()
	samples := m.samples
	m.samples = nil
	prev := m.cur
	m.mu.Unlock()
	var runq float64
	for _, s := range samples {
		runq += s
	}
	if len(samples) > 0 {
		runq /= float64(len(samples))
	}
	l := Load{Node: m.node, Stamp: now.UnixNano(), NCPU: m.ncpu, Speed: m.speed, RunQ: runq}
	x := runq * l.SPL()
	l.Mean, l.Upper = damp(prev.Mean, prev.Upper, x, prev.Stamp == 0)
	m.readSystem(&l)
	m.mu.Lock()
	l.Accepted = m.recentAccepted(now)
	m.cur = l
	m.mu.Unlock()
}

// damp is Kerrighed's MOSIX probe: mean rises by 3/8 of the way and
// drops at once; upper rises at once and decays by 1/8 of the way.
func damp(mean, upper, x float64, first bool) (float64, float64) {
	if first {
		return x, x
	}
	if x > mean {
		mean = (5*mean + 3*x) / 8
	} else {
		mean = x
	}
	if x > upper {
		upper = x
	} else {
		upper = (7*upper + x) / 8
	}
	return mean, upper
}

func (m *meter) readSystem(l *Load) {
	if b, err := m.files["loadavg"].read(); err == nil {
		f := strings.Fields(string(b))
		for i := 0; i < 3 && i < len(f); i++ {
			l.LoadAvg[i], _ = strconv.ParseFloat(f[i], 64)
		}
		if len(f) > 3 {
			if _, total, ok := strings.Cut(f[3], "/"); ok {
				l.Procs, _ = strconv.Atoi(total)
			}
		}
	}
	if b, err := m.files["meminfo"].read(); err == nil {
		for line := range strings.Lines(string(b)) {
			k, v, _ := strings.Cut(line, ":")
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			switch k {
			case "MemAvailable":
				l.MemFree = n
			case "MemTotal":
				l.MemTotal = n
			}
		}
	}
	if b, err := m.files["uptime"].read(); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			l.Uptime, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	l.Hostname, _ = os.Hostname()
}

// procFile is a /proc file read again and again through one open
// descriptor: the kernel makes its contents anew at each read from
// offset 0. Its buffer is reused: what read returns is valid until the
// next read.
type procFile struct {
	mu   sync.Mutex
	path string
	fd   int
	open bool
	buf  []byte
}

func (f *procFile) read() ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.open {
		fd, err := unix.Open(f.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		f.fd, f.open, f.buf = fd, true, make([]byte, 8<<10)
	}
	n, err := unix.Pread(f.fd, f.buf, 0)
	if err != nil {
		unix.Close(f.fd)
		f.open = false
		return nil, err
	}
	return append([]byte(nil), f.buf[:n]...), nil
}

// accept counts a job started here.
func (m *meter) accept() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.accepted = append(m.accepted, time.Now())
	m.cur.Accepted = m.recentAccepted(time.Now())
}

func (m *meter) recentAccepted(now time.Time) int {
	m.accepted = slices.DeleteFunc(m.accepted, func(t time.Time) bool { return now.Sub(t) > reserveFor })
	return len(m.accepted)
}

func (m *meter) load() Load {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.cur
	l.Accepted = m.recentAccepted(time.Now())
	return l
}

// table is what this node knows of every node's load, and the
// placements it made.
type table struct {
	self *meter

	mu       sync.Mutex
	entries  map[int]entry
	reserved map[int][]time.Time
	rand     *rand.Rand
}

type entry struct {
	Load
	// at is when the node measured it, on this node's clock.
	at time.Time
}

func newTable(self *meter) *table {
	return &table{self: self, entries: map[int]entry{}, reserved: map[int][]time.Time{},
		rand: rand.New(rand.NewPCG(rand.Uint64(), uint64(self.node)))}
}

// merge takes gossiped entries: a node's later measurement wins.
func (t *table) merge(ls []Load, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range ls {
		if l.Node == t.self.node || l.Node < 1 || l.Node > MaxNode || l.AgeMS < 0 {
			continue
		}
		if e, ok := t.entries[l.Node]; ok && e.Stamp >= l.Stamp {
			continue
		}
		at := now.Add(-time.Duration(l.AgeMS) * time.Millisecond)
		l.AgeMS = 0
		t.entries[l.Node] = entry{Load: l, at: at}
	}
}

// fresh is the gossip to send: this node's entry and the freshest
// others, at most gossipEntries, none older than freshFor.
func (t *table) fresh(now time.Time) []Load {
	out := []Load{t.self.load()}
	t.mu.Lock()
	var es []entry
	for _, e := range t.entries {
		if now.Sub(e.at) <= freshFor {
			es = append(es, e)
		}
	}
	t.mu.Unlock()
	slices.SortFunc(es, func(a, b entry) int { return b.at.Compare(a.at) })
	for _, e := range es {
		if len(out) >= gossipEntries {
			break
		}
		l := e.Load
		l.AgeMS = now.Sub(e.at).Milliseconds()
		out = append(out, l)
	}
	return out
}

// all is every node's latest entry (this node's now), with its age.
func (t *table) all(now time.Time) []Load {
	out := []Load{t.self.load()}
	t.mu.Lock()
	for _, e := range t.entries {
		l := e.Load
		l.AgeMS = now.Sub(e.at).Milliseconds()
		out = append(out, l)
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b Load) int { return a.Node - b.Node })
	return out
}

// place picks the least loaded of the nodes up (those it has a load
// for): by upper load, plus one process's load for each job recently
// placed there (by this node's own placements or the node's own count,
// whichever is more); ties within a quarter of a process's load are
// broken at random. With reserve, the choice counts as a placement.
func (t *table) place(up []int, reserve bool, now time.Time) int {
	self := t.self.load()
	t.mu.Lock()
	defer t.mu.Unlock()
	type cand struct {
		node  int
		score float64
		spl   float64
	}
	var cs []cand
	for _, n := range up {
		l := self
		if n != self.Node {
			// An Up node's last entry counts however old: a node whose
			// load does not move gossips it seldom, and on a starved CPU
			// the gossip comes late; one never heard of is left out.
			e, ok := t.entries[n]
			if !ok {
				continue
			}
			l = e.Load
		}
		t.reserved[n] = slices.DeleteFunc(t.reserved[n], func(at time.Time) bool { return now.Sub(at) > reserveFor })
		pending := max(len(t.reserved[n]), l.Accepted)
		cs = append(cs, cand{n, l.Upper + float64(pending)*l.SPL(), l.SPL()})
	}
	if len(cs) == 0 {
		return self.Node
	}
	best := slices.MinFunc(cs, func(a, b cand) int {
		switch {
		case a.score < b.score:
			return -1
		case a.score > b.score:
			return 1
		}
		return 0
	})
	var ties []int
	for _, c := range cs {
		if c.score-best.score <= 0.25*best.spl {
			ties = append(ties, c.node)
		}
	}
	choice := ties[t.rand.IntN(len(ties))]
	if reserve {
		t.reserved[choice] = append(t.reserved[choice], now)
	}
	return choice
}

// peer picks a node to gossip to.
func (t *table) peer(up []int) int {
	var others []int
	for _, n := range up {
		if n != t.self.node {
			others = append(others, n)
		}
	}
	if len(others) == 0 {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return others[t.rand.IntN(len(others))]
}
