// Command dlm is `make bench-dlm`: the kernel DLM under Locus against an
// etcd concurrency.Mutex, both on the same three QEMU nodes in one run.
// It boots the default image's cluster (locus qemu up -n 3), copies
// bench/dlm/agent and Debian's etcd (with its libraries) onto the
// shared root, starts a 3-member etcd (one member per node, data on the
// nodes' tmpfs), and measures, round by round, each side first in turn:
// lock+unlock round trips of a resource mastered on the asking node and
// on another node, and locks per second with 64 clients over the three
// nodes, each on its own resource. It writes bench/RESULTS.md's "dlm"
// section.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/locus-ssi/locus/internal/benchresults"
	"github.com/locus-ssi/locus/internal/benchvm"
	"github.com/locus-ssi/locus/internal/testutil"
)

// dir is where the agent and etcd go on the shared root.
const dir = "/opt/locus-bench"

type options struct {
	locus, image, results string
	rounds, n             int
	dur                   time.Duration
	clients               int
}

func main() {
	var o options
	flag.StringVar(&o.locus, "locus", "bin/locus", "the locus binary")
	flag.StringVar(&o.results, "results", "", "bench/RESULTS.md to write the section into (empty: print it)")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds, each side first in turn")
	flag.IntVar(&o.n, "n", 200, "round trips per node per round")
	flag.DurationVar(&o.dur, "dur", 10*time.Second, "how long each throughput run lasts")
	flag.IntVar(&o.clients, "clients", 64, "throughput clients over the three nodes")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-dlm:", err)
		os.Exit(1)
	}
}

// bench is a booted cluster and the means to run things on it.
type bench struct {
	o options
	*benchvm.Cluster
}

func run(o options) error {
	start := time.Now()
	state, err := os.MkdirTemp("", "bench-dlm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	b := &bench{o: o, Cluster: benchvm.New(o.locus, filepath.Join(state, "image"), state)}
	progress := func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, "[%5.0fs] "+f+"\n", append([]any{time.Since(start).Seconds()}, a...)...)
	}
	// A GFS2 volume every node sees, beside the CFS root, for the
	// filesystem comparison on the same VMs.
	data := filepath.Join(state, "gfs2data.img")
	if err := os.Truncate(data, 0); err != nil && !os.IsNotExist(err) {
		return err
	}
	if f, err := os.Create(data); err == nil {
		f.Truncate(512 << 20)
		f.Close()
	}
	if out, err := exec.Command("mkfs.gfs2", "-O", "-p", "lock_dlm", "-t", "locus:bench", "-j", "3", "-J", "16", data).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.gfs2: %w\n%s", err, out)
	}
	// The default cluster (a CFS root, node 2 its standby), with the
	// gfs2 module for the volume beside it.
	specFile := filepath.Join(state, "locus.yaml")
	if err := os.WriteFile(specFile, []byte("cluster: {name: locus}\nroot: {source: cfs, cfs: {standby: 2}}\nmodules: [gfs2]\n"), 0o644); err != nil {
		return err
	}
	progress("building the image")
	if out, err := exec.Command(o.locus, "image", "build", "--spec", specFile, "--out", b.Image).CombinedOutput(); err != nil {
		return fmt.Errorf("image build: %w\n%s", err, out)
	}
	progress("booting 3 nodes")
	if _, err := b.Qemu("up", "-n", "3", "--timeout", "10m", "--api-port", "17497", "--shared-disk", data); err != nil {
		return err
	}
	defer b.Qemu("down")

	agent := filepath.Join(state, "agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", agent, "./bench/dlm/agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build the agent: %w\n%s", err, out)
	}
	files := []string{agent, "/usr/bin/etcd"}
	libs, err := testutil.Libraries("/usr/bin/etcd")
	if err != nil {
		return err
	}
	for _, f := range append(files, libs...) {
		progress("copying %s to node 1's %s", f, dir)
		if err := b.Push(1, dir, f); err != nil {
			return err
		}
	}
	version, _ := b.Sh(1, time.Minute, etcdCmd("--version")+" | head -1")
	version = strings.TrimPrefix(strings.TrimSpace(version), "etcd Version: ")

	progress("starting a 3-member etcd")
	if err := b.startEtcd(); err != nil {
		return err
	}
	// Node 1 holds the remote resources in NL, so it masters them and
	// nodes 2 and 3 reach it for every request; nodes 2 and 3 master
	// their local resources (the first to ask a free resource masters it).
	if _, err := b.Sh(1, time.Minute, "setsid "+dir+"/agent dlm-hold -for 60m rtt-remote-2 rtt-remote-3 > /tmp/bench-hold.log 2>&1 &"); err != nil {
		return err
	}
	time.Sleep(time.Second)

	var s samples
	for r := 0; r < o.rounds; r++ {
		progress("round %d of %d (%s first)", r+1, o.rounds, map[bool]string{true: "DLM", false: "etcd"}[r%2 == 0])
		err := benchresults.Alternate(r, func() error { return b.dlmRound(&s) }, func() error { return b.etcdRound(&s) })
		if err != nil {
			return err
		}
	}
	masters, err := b.masters()
	if err != nil {
		return err
	}
	locks := report(o, s, strings.TrimSpace(version), masters)
	fmt.Print(locks)
	if o.results != "" {
		if err := benchresults.WriteSection(o.results, "dlm", locks); err != nil {
			return err
		}
	}
	progress("mounting the GFS2 volume on every node")
	if err := b.mountGFS2(); err != nil {
		return err
	}
	var fs fsSamples
	for r := 0; r < o.rounds; r++ {
		progress("filesystems, round %d of %d", r+1, o.rounds)
		err := benchresults.Alternate(r, func() error { return b.fsRound(&fs, "gfs2", gfs2Dir) }, func() error { return b.fsRound(&fs, "cfs", cfsDir) })
		if err != nil {
			return err
		}
	}
	body := locks + "\n" + fsReport(fs)
	fmt.Print(fsReport(fs))
	if o.results != "" {
		return benchresults.WriteSection(o.results, "dlm", body)
	}
	return nil
}

// etcdCmd is Debian's etcd run through its own loader and libraries.
func etcdCmd(args string) string {
	return dir + "/ld-linux-x86-64.so.2 --library-path " + dir + " " + dir + "/etcd " + args
}

func addr(n int) string { return fmt.Sprintf("10.77.0.%d", n) }

func endpoints() string { return "http://127.0.0.1:2379" }

// startEtcd starts one member per node and waits until a lock works
// through each.
func (b *bench) startEtcd() error {
	var initial []string
	for n := 1; n <= 3; n++ {
		initial = append(initial, fmt.Sprintf("n%d=http://%s:2380", n, addr(n)))
	}
	for n := 1; n <= 3; n++ {
		// etcd's guidance for a LAN: heartbeat near the round trip, the
		// election timeout 10x; under QEMU without KVM the defaults
		// (100 ms, 1 s) are kept. The data directory is the node's tmpfs,
		// so etcd's fsyncs cost nothing: the most favourable disk for it.
		args := fmt.Sprintf("--name n%d --data-dir /tmp/etcd-bench --listen-peer-urls http://%s:2380 --initial-advertise-peer-urls http://%s:2380 "+
			"--listen-client-urls http://%s:2379,http://127.0.0.1:2379 --advertise-client-urls http://%s:2379 --initial-cluster %s --initial-cluster-state new --log-level warn",
			n, addr(n), addr(n), addr(n), addr(n), strings.Join(initial, ","))
		if _, err := b.Sh(n, time.Minute, "rm -rf /tmp/etcd-bench; setsid "+etcdCmd(args)+" > /tmp/etcd-bench.log 2>&1 &"); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(3 * time.Minute)
	for n := 1; n <= 3; n++ {
		for {
			_, err := b.On(n, time.Minute, nil, dir+"/agent", "etcd-rtt", "-endpoints", endpoints(), "-n", "10", "warmup")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				log, _ := b.Sh(n, time.Minute, "tail -20 /tmp/etcd-bench.log")
				return fmt.Errorf("etcd on node %d does not lock: %w\n%s", n, err, log)
			}
			time.Sleep(2 * time.Second)
		}
	}
	return nil
}

// samples are the run's measurements, in microseconds and locks/s.
type samples struct {
	dlmLocal, dlmRemote, etcd []float64
	dlmRate, etcdRate         []float64
}

type result struct {
	SamplesUS []int64 `json:"samples_us"`
	Ops       int64   `json:"ops"`
	Seconds   float64 `json:"seconds"`
}

func (b *bench) agent(n int, args ...string) (result, error) {
	out, err := b.On(n, 10*time.Minute, nil, append([]string{dir + "/agent"}, args...)...)
	var r result
	if err == nil {
		err = json.Unmarshal([]byte(out), &r)
	}
	return r, err
}

func us(v []int64) []float64 {
	f := make([]float64, len(v))
	for i, x := range v {
		f[i] = float64(x)
	}
	return f
}

// throughput runs the agent on every node at once, the clients split
// over them, from one start time; it returns locks per second.
func (b *bench) throughput(args func(clients int) []string) (float64, error) {
	at := time.Now().Add(3 * time.Second).UnixMilli()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var rate float64
	var errs []error
	for n := 1; n <= 3; n++ {
		c := b.o.clients / 3
		if n <= b.o.clients%3 {
			c++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := args(c) // command, flags, then the prefix: -start goes before it
			a = append(a[:len(a)-1:len(a)-1], "-start", fmt.Sprint(at), a[len(a)-1])
			r, err := b.agent(n, a...)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			rate += float64(r.Ops) / r.Seconds
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return 0, errs[0]
	}
	return rate, nil
}

func (b *bench) dlmRound(s *samples) error {
	for _, n := range []int{2, 3} {
		r, err := b.agent(n, "dlm-rtt", "-n", fmt.Sprint(b.o.n), fmt.Sprintf("rtt-local-%d", n))
		if err != nil {
			return err
		}
		s.dlmLocal = append(s.dlmLocal, us(r.SamplesUS)...)
		r, err = b.agent(n, "dlm-rtt", "-n", fmt.Sprint(b.o.n), fmt.Sprintf("rtt-remote-%d", n))
		if err != nil {
			return err
		}
		s.dlmRemote = append(s.dlmRemote, us(r.SamplesUS)...)
	}
	rate, err := b.throughput(func(c int) []string {
		return []string{"dlm-tput", "-clients", fmt.Sprint(c), "-dur", b.o.dur.String(), "tput"}
	})
	s.dlmRate = append(s.dlmRate, rate)
	return err
}

func (b *bench) etcdRound(s *samples) error {
	for _, n := range []int{2, 3} {
		r, err := b.agent(n, "etcd-rtt", "-endpoints", endpoints(), "-n", fmt.Sprint(b.o.n), fmt.Sprintf("/bench/rtt-%d", n))
		if err != nil {
			return err
		}
		s.etcd = append(s.etcd, us(r.SamplesUS)...)
	}
	rate, err := b.throughput(func(c int) []string {
		return []string{"etcd-tput", "-endpoints", endpoints(), "-clients", fmt.Sprint(c), "-dur", b.o.dur.String(), "/bench/tput"}
	})
	s.etcdRate = append(s.etcdRate, rate)
	return err
}

// masters says which node masters the round-trip resources, from the
// kernel's debug view (locus lock ls on node 1), so the table's "local"
// and "remote" are checked, not assumed.
func (b *bench) masters() (map[string]int, error) {
	// The local resources are idle now: lock them once more, held a
	// while, so that lock ls shows them.
	for _, n := range []int{2, 3} {
		go b.Sh(n, time.Minute, fmt.Sprintf("locus lock rtt-local-%d -- sleep 20", n))
	}
	m := map[string]int{}
	for deadline := time.Now().Add(30 * time.Second); len(m) < 4 && time.Now().Before(deadline); time.Sleep(time.Second) {
		out, err := b.Sh(1, time.Minute, "locus lock ls --output json")
		if err != nil {
			return nil, err
		}
		var reply struct {
			Locks []struct {
				Resource string `json:"resource"`
				Master   int    `json:"master"`
			} `json:"locks"`
		}
		if err := json.Unmarshal([]byte(out), &reply); err != nil {
			return nil, fmt.Errorf("lock ls: %w\n%s", err, out)
		}
		for _, l := range reply.Locks {
			if strings.HasPrefix(l.Resource, "rtt-") {
				m[l.Resource] = l.Master
			}
		}
	}
	for _, want := range []struct {
		res    string
		master int
	}{{"rtt-local-2", 2}, {"rtt-local-3", 3}, {"rtt-remote-2", 1}, {"rtt-remote-3", 1}} {
		if m[want.res] != want.master {
			return m, fmt.Errorf("%s is mastered on node %d, the benchmark wants node %d (lock ls: %v)", want.res, m[want.res], want.master, m)
		}
	}
	return m, nil
}

// Where the filesystem comparison works: a directory per node on the
// GFS2 volume, and on the CFS root.
const (
	gfs2Dir = "/mnt/gfs2"
	cfsDir  = "/var/tmp/locus-bench"
)

// mountGFS2 mounts the shared volume on every node (the first virtio
// disk that holds it).
func (b *bench) mountGFS2() error {
	for n := 1; n <= 3; n++ {
		if _, err := b.Sh(n, 2*time.Minute, "mkdir -p "+gfs2Dir+" "+cfsDir+"; for d in /dev/vda /dev/vdb; do mount -t gfs2 $d "+gfs2Dir+" 2>/tmp/gfs2-mount.err && exit 0; done; cat /tmp/gfs2-mount.err; exit 1"); err != nil {
			return err
		}
	}
	return nil
}

// fsSamples are each operation's medians, per node and round, by side.
type fsSamples struct {
	ops   []string
	costs map[string]map[string][]float64 // side, op: microseconds
}

// fsRound runs locus fs bench on every node at once in its own
// directory under root.
func (b *bench) fsRound(s *fsSamples, side, root string) error {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []error
	for n := 1; n <= 3; n++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := b.Sh(n, 10*time.Minute, fmt.Sprintf("mkdir -p %s/node%d && locus fs bench -n 20 --output json %s/node%d", root, n, root, n))
			var costs []struct {
				Op     string        `json:"op"`
				Median time.Duration `json:"median_ns"`
			}
			if err == nil {
				err = json.Unmarshal([]byte(out), &costs)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s on node %d: %w", side, n, err))
				return
			}
			if s.costs == nil {
				s.costs = map[string]map[string][]float64{}
			}
			if s.costs[side] == nil {
				s.costs[side] = map[string][]float64{}
			}
			for _, c := range costs {
				if !slices.Contains(s.ops, c.Op) {
					s.ops = append(s.ops, c.Op)
				}
				s.costs[side][c.Op] = append(s.costs[side][c.Op], float64(c.Median.Microseconds()))
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

func fsReport(s fsSamples) string {
	var b strings.Builder
	b.WriteString("### The GFS2 volume against the CFS root, from the three nodes at once\n\n")
	fmt.Fprintf(&b, "The same VMs: a GFS2 volume (mkfs.gfs2, lock table `locus:bench`, one raw image attached to every VM) mounted on every node under the kernel's DLM, and the cluster's CFS root (node 1 serves it from its disk; nodes 2 and 3 mount it over FUSE through their relays). `locus fs bench -n 20` runs on all three nodes at once, each in a directory of its own; each cell is the median over the nodes' medians and the rounds (lower is faster); three VMs on the host's two cores, so a cell includes waiting for a CPU. Ratio: CFS / GFS2, above 1: GFS2 is faster.\n\n")
	b.WriteString("| operation | GFS2 | CFS | ratio |\n|---|---|---|---|\n")
	var faster, slower []string
	for _, op := range s.ops {
		g, c := benchresults.Median(s.costs["gfs2"][op]), benchresults.Median(s.costs["cfs"][op])
		fmt.Fprintf(&b, "| %s | %.3f ms | %.3f ms | %.2f |\n", op, g/1000, c/1000, c/g)
		if c >= g {
			faster = append(faster, op)
		} else {
			slower = append(slower, op)
		}
	}
	fmt.Fprintf(&b, "\nReading (generated from the table): GFS2 is faster for %s; CFS for %s.\n", list(faster), list(slower))
	return b.String()
}

func list(v []string) string {
	if len(v) == 0 {
		return "none"
	}
	return strings.Join(v, ", ")
}

func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func report(o options, s samples, version string, masters map[string]int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Locks: the kernel DLM against etcd (make bench-dlm)\n\n")
	fmt.Fprintf(&b, "%s. Three QEMU nodes (TCG, no KVM, one vCPU each; the default cluster's spec with the gfs2 module added, `locus qemu up -n 3 --shared-disk`), the same VMs for both sides: Locus's kernel DLM through each node's default lockspace (services/dlm/lockdev, the Go client `locus lock` uses) against `go.etcd.io/etcd/client/v3/concurrency.Mutex` on a 3-member etcd (Debian's etcd %s, one member per node, each client through its own node's member; data on the nodes' tmpfs, so etcd's fsyncs cost nothing; default heartbeat and election timeouts). A round trip is lock (EX) + unlock of one resource, %d a node (nodes 2 and 3) a round; \"mastered here\" and \"mastered on another node\" are checked in the kernel's debug view after the run (%v). Throughput: %d clients over the three nodes for %s, each client on a resource (key) of its own. %d rounds, each side first in turn; %s.\n\n",
		benchresults.Machine(), version, o.n, masterList(masters), o.clients, o.dur, o.rounds, benchresults.RatioRule)
	el, er, ee := benchresults.Median(s.dlmLocal), benchresults.Median(s.dlmRemote), benchresults.Median(s.etcd)
	b.WriteString("| what | Locus (kernel DLM) | etcd Mutex | ratio |\n|---|---|---|---|\n")
	row := func(what string, l, e float64) float64 {
		fmt.Fprintf(&b, "| %s | %.1f µs | %.1f µs | %.2f |\n", what, l, e, e/l)
		return e / l
	}
	rows := []benchresults.Row{
		{What: "round trip p50, mastered here", Ratio: row("lock+unlock p50, resource mastered on the asking node", el, ee)},
		{What: "round trip p99, mastered here", Ratio: row("lock+unlock p99, resource mastered on the asking node", percentile(s.dlmLocal, 0.99), percentile(s.etcd, 0.99))},
		{What: "round trip p50, mastered elsewhere", Ratio: row("lock+unlock p50, resource mastered on another node", er, ee)},
		{What: "round trip p99, mastered elsewhere", Ratio: row("lock+unlock p99, resource mastered on another node", percentile(s.dlmRemote, 0.99), percentile(s.etcd, 0.99))},
	}
	lr, er2 := benchresults.Median(s.dlmRate), benchresults.Median(s.etcdRate)
	fmt.Fprintf(&b, "| locks/s, %d clients over 3 nodes | %.1f locks/s | %.1f locks/s | %.2f |\n", o.clients, lr, er2, lr/er2)
	rows = append(rows, benchresults.Row{What: "locks/s", Ratio: lr / er2})
	fmt.Fprintf(&b, "\nGoals: at least 10x etcd's locks/s (%.1fx: %s) and a remote round trip p50 at most a quarter of etcd's (%.1fx faster: %s).\n\n",
		lr/er2, met(lr/er2 >= 10), ee/er, met(ee/er >= 4))
	b.WriteString(benchresults.Reading("etcd", rows) + "\n")
	return b.String()
}

// masterList says which node masters each resource, in name order.
func masterList(m map[string]int) string {
	names := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s on node %d", n, m[n])
	}
	return strings.Join(parts, ", ")
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}
