// Command membership-bench measures how fast the membership service sees
// a node die: on a 5-node loopback cluster it stops a node (as a crash
// would: its sockets close, it sends no goodbye) again and again, and
// times how long until every survivor has applied that node's Down; every
// tenth kill is the master's, timed the same way (a new master must be
// elected first). It runs Locus's "lan" timing and memberlist's default
// configuration side by side, alternating kill by kill, and writes the
// results as ratios to bench/RESULTS.md.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	httppprof "net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/locus-ssi/locus/internal/benchresults"
	"github.com/locus-ssi/locus/services/clms"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "membership-bench:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("membership-bench", flag.ContinueOnError)
	kills := fs.Int("kills", 100, "node kills with Locus's timing")
	peerKills := fs.Int("peer-kills", 30, "node kills with memberlist's defaults (each costs seconds)")
	nodes := fs.Int("nodes", 5, "cluster size")
	results := fs.String("results", "", "bench/RESULTS.md to update (empty: print only)")
	csKills := fs.Int("corosync-kills", 12, "node kills of Debian's corosync, in network namespaces (0: skip; each costs about 10 s)")
	scale := fs.Int("scale", 128, "members of the scale run (0: skip it; 192 is at the edge of two cores, more saturate them: see bench/RESULTS.md)")
	scaleKills := fs.Int("scale-kills", 20, "non-voter kills in the scale run")
	scaleWave := fs.Int("scale-wave", 32, "members of the scale run started at once, each wave Up before the next (0: all at once)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile here (go tool pprof)")
	profileFor := fs.Duration("cpuprofile-for", 0, "stop the CPU profile after this long (0: at the end of the run)")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof here while the run goes (a loopback address)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pprofAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", httppprof.Index)
		mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
		srv := &http.Server{Addr: *pprofAddr, Handler: mux}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				fmt.Fprintln(stdout, "pprof:", err)
			}
		}()
		defer srv.Close()
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		stop := make(chan struct{})
		defer close(stop)
		if *profileFor > 0 {
			go func() {
				select {
				case <-time.After(*profileFor):
				case <-stop:
				}
				pprof.StopCPUProfile()
			}()
		} else {
			defer pprof.StopCPUProfile()
		}
	}
	if *scale > 0 {
		r, err := runScale(stdout, *scale, *scaleKills, *scaleWave)
		if err != nil {
			return err
		}
		report := formatScale(r)
		fmt.Fprint(stdout, report)
		if *results != "" {
			if err := benchresults.WriteSection(*results, "membership-scale", report); err != nil {
				return err
			}
		}
	}
	if *kills <= 0 {
		return nil
	}
	// corosync side by side, if it runs here: its processes and network
	// namespaces go at the end, also on an interrupt.
	var cs *corosyncCluster
	csWhy := corosyncMissing()
	if *csKills <= 0 {
		csWhy = "skipped (-corosync-kills 0)"
	}
	if csWhy == "" {
		fmt.Fprintf(stdout, "starting %d corosync nodes in network namespaces\n", *nodes)
		var err error
		if cs, err = newCorosync(*nodes); err != nil {
			csWhy = err.Error()
		} else {
			defer cs.close()
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
			done := make(chan struct{})
			defer close(done)
			go func() {
				select {
				case <-sigs:
					cs.close()
					os.Exit(1)
				case <-done:
					signal.Stop(sigs)
				}
			}()
		}
	}
	if csWhy != "" {
		fmt.Fprintf(stdout, "corosync: not run: %s\n", csWhy)
	}
	profiles := []string{clms.ProfileSteady, clms.ProfileLAN, clms.ProfileDefault}
	clusters := map[string]*cluster{}
	for i, p := range profiles {
		c, err := newCluster(p, fmt.Sprintf("127.0.%d", 81+i), *nodes)
		if err != nil {
			return err
		}
		defer c.close()
		clusters[p] = c
	}
	samples := map[string]*measure{"corosync": {}}
	for _, p := range profiles {
		samples[p] = &measure{}
	}
	every := max(1, *kills/max(1, *peerKills))
	csEvery := max(1, *kills/max(1, *csKills))
	csDone := 0
	for i := 1; i <= *kills; i++ {
		// Which side goes first rotates kill by kill (corosync's kills,
		// fewer, alternate between before and after Locus's).
		order := append(append([]string(nil), profiles[i%len(profiles):]...), profiles[:i%len(profiles)]...)
		csFirst := csDone%2 == 1
		csKill := func() error {
			if cs == nil || i%csEvery != 0 || len(samples["corosync"].detect) >= *csKills {
				return nil
			}
			csDone++
			victim := len(samples["corosync"].detect)%*nodes + 1
			d, err := cs.killOne(victim)
			if err != nil {
				return fmt.Errorf("corosync, kill %d: %w", i, err)
			}
			samples["corosync"].detect = append(samples["corosync"].detect, d)
			return nil
		}
		if csFirst {
			if err := csKill(); err != nil {
				return err
			}
		}
		for _, p := range order {
			if p == clms.ProfileDefault && i%every != 0 {
				continue
			}
			master := i%10 == 0
			d, err := clusters[p].killOne(master)
			if err != nil {
				return fmt.Errorf("%s, kill %d: %w", p, i, err)
			}
			if master {
				samples[p].failover = append(samples[p].failover, d)
			} else {
				samples[p].detect = append(samples[p].detect, d)
			}
		}
		if !csFirst {
			if err := csKill(); err != nil {
				return err
			}
		}
		if i%10 == 0 {
			fmt.Fprintf(stdout, "%d/%d kills: steady p50 %v, lan p50 %v, default p50 %v, corosync p50 %v\n", i, *kills,
				pct(samples[clms.ProfileSteady].detect, 50), pct(samples[clms.ProfileLAN].detect, 50), pct(samples[clms.ProfileDefault].detect, 50), pct(samples["corosync"].detect, 50))
		}
	}
	report := format(samples, *nodes, csWhy)
	fmt.Fprint(stdout, report)
	if *results != "" {
		return benchresults.WriteSection(*results, "membership", report)
	}
	return nil
}

type measure struct{ detect, failover []time.Duration }

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func format(ms map[string]*measure, nodes int, csWhy string) string {
	var b bytes.Buffer
	steady, lan, def := ms[clms.ProfileSteady], ms[clms.ProfileLAN], ms[clms.ProfileDefault]
	fmt.Fprintf(&b, "## Membership (make bench-membership)\n\n")
	fmt.Fprintf(&b, "Run %s. Three %d-node loopback clusters in one process, each member with its own Raft and gossip sockets: Locus's `steady` timing (the default on real hardware: a lone stall of up to 1 s is not a failure), its `lan` timing (opt-in) and memberlist's `DefaultLANConfig` (with Raft at 1 s timeouts), killed in turn (the default cluster every few kills of Locus's: each of its kills costs seconds), which cluster goes first rotating kill by kill. A kill closes the member's sockets with no goodbye (its port then refuses, as a dead daemon's kernel does); the time is until every survivor has applied its Down. All three clusters take a refused port as proof of death (services/clms/refused.go), so the memberlist column is Locus with memberlist's gossip timing, not memberlist's detection alone; a node that goes silent without refusing (a powered-off machine) is not measured here. Every tenth kill is the master's (a new master is elected, then commits the Down). Ratio: default / Locus at the same percentile (for p50 the %s).\n\n", benchresults.Machine(), nodes, benchresults.RatioRule)
	row := func(what string, a, d []time.Duration, p int) {
		la, de := pct(a, p), pct(d, p)
		fmt.Fprintf(&b, "| %s | %v (n=%d) | %v (n=%d) | %.2f |\n", what, la.Round(time.Millisecond), len(a), de.Round(time.Millisecond), len(d), float64(de)/float64(max(la, 1)))
	}
	for _, side := range []struct {
		name string
		m    *measure
	}{{"steady", steady}, {"lan", lan}} {
		fmt.Fprintf(&b, "| what | Locus `%s` | memberlist default | ratio |\n|---|---|---|---|\n", side.name)
		row("node Down everywhere, p50", side.m.detect, def.detect, 50)
		row("node Down everywhere, p99", side.m.detect, def.detect, 99)
		row("master failover + Down, p50", side.m.failover, def.failover, 50)
		row("master failover + Down, max", side.m.failover, def.failover, 100)
		fmt.Fprintln(&b)
	}
	cs := ms["corosync"]
	if len(cs.detect) > 0 {
		fmt.Fprintf(&b, "Debian's corosync %s in the same run, with its defaults (knet; token 3 s + 650 ms per node beyond two, consensus 1.2 x token), %d processes each in a network namespace of its own on one bridge: a kill is SIGKILL; the time is until every survivor logged the smaller membership (`[QUORUM] Members[%d]`, read from its log every 5 ms). corosync has no master: the victim rotates. Ratio: corosync / Locus `steady`.\n\n", corosyncVersion(), nodes, nodes-1)
		fmt.Fprintf(&b, "| what | Locus `steady` | corosync | ratio |\n|---|---|---|---|\n")
		row("node gone everywhere, p50", steady.detect, cs.detect, 50)
		row("node gone everywhere, max", steady.detect, cs.detect, 100)
	} else {
		fmt.Fprintf(&b, "corosync was not run: %s.\n", csWhy)
	}
	fmt.Fprintf(&b, "\nGoals: with `lan`, Down on every survivor within 500 ms p99 of a node's death; with `steady`, the default, within 1 s p99 (corosync's default token timeout is 3 s, keepalived's ~3.5 s).")
	verdict := func(ds []time.Duration, goal time.Duration) string {
		p50, p99 := pct(ds, 50).Round(time.Millisecond), pct(ds, 99).Round(time.Millisecond)
		v := "met"
		if p99 > goal {
			v = "not met"
		}
		return fmt.Sprintf("%s (p50 %v, p99 %v)", v, p50, p99)
	}
	fmt.Fprintf(&b, " Reading (generated from the table): in this run the `steady` goal is %s and the `lan` goal %s.\n", verdict(steady.detect, time.Second), verdict(lan.detect, 500*time.Millisecond))
	return b.String()
}

// cluster is a loopback cluster whose members can be killed and started.
type cluster struct {
	profile string
	net     string // node N is <net>.N
	mu      sync.Mutex
	members map[int]*clms.Member
	// downs receives every Down each member applies, with when.
	downs chan down
	// progress, if set, is told how a long wait goes.
	progress io.Writer
}

type down struct {
	node, by int
	at       time.Time
}

func newCluster(profile, net string, n int) (*cluster, error) {
	c := &cluster{profile: profile, net: net, members: map[int]*clms.Member{}, downs: make(chan down, 1024)}
	for i := 1; i <= n; i++ {
		if err := c.start(i, i == 1); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, c.waitUp(n, 30*time.Second)
}

func (c *cluster) start(n int, bootstrap bool) error {
	// Joined through at most three members, the first ones (as nodes
	// join through the init node and a few others, not every member:
	// memberlist's Join exchanges its whole state with each address).
	var join []string
	c.mu.Lock()
	for i := 1; len(join) < 3 && i < n+len(c.members)+1; i++ {
		if m, ok := c.members[i]; ok && i != n {
			join = append(join, m.GossipAddr())
		}
	}
	c.mu.Unlock()
	// Node N keeps its address and ports across restarts, as a machine
	// that reboots does (a new port for the same node name would be an
	// address conflict to gossip until the old one is declared dead).
	m, err := clms.Start(clms.Config{Node: n, Addr: c.addr(n), RaftPort: clms.DefaultRaftPort, GossipPort: clms.DefaultGossipPort,
		Bootstrap: bootstrap, Join: join, Profile: c.profile})
	if err != nil {
		return err
	}
	m.OnTransition(func(t clms.Transition) {
		if t.State == clms.Down {
			select {
			case c.downs <- down{node: t.Node, by: n, at: time.Now()}:
			default:
			}
		}
	})
	c.mu.Lock()
	c.members[n] = m
	c.mu.Unlock()
	return nil
}

// addr is node n's loopback address: <net>.n, or with a two-octet net
// (a cluster of more than 254), <net>.(n/200).(n%200+1).
func (c *cluster) addr(n int) string {
	if strings.Count(c.net, ".") == 1 {
		return fmt.Sprintf("%s.%d.%d", c.net, n/200, n%200+1)
	}
	return fmt.Sprintf("%s.%d", c.net, n)
}

// waitUp waits until every member sees n nodes Up and one master.
func (c *cluster) waitUp(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	lastSaid := time.Now()
	for time.Now().Before(deadline) {
		ok := true
		fewest, most := n, 0
		// Each Status is a table of n rows: at 256 members, looking at
		// every member each time was a tenth of the run's CPU. Until it
		// is time to say how far they are, stop at the first not there.
		say := c.progress != nil && time.Since(lastSaid) > 5*time.Second
		c.mu.Lock()
		for _, m := range c.members {
			st := m.Status()
			up := 0
			for _, r := range st.Nodes {
				if r.State == clms.Up {
					up++
				}
			}
			fewest, most = min(fewest, up), max(most, up)
			ok = ok && up == n && st.Master != 0 && st.Quorum
			if !ok && !say {
				break
			}
		}
		c.mu.Unlock()
		if ok {
			return nil
		}
		if say {
			fmt.Fprintf(c.progress, "waiting for %d Up everywhere: members see %d to %d Up\n", n, fewest, most)
			lastSaid = time.Now()
		}
		time.Sleep(time.Duration(max(20, n)) * time.Millisecond)
	}
	return fmt.Errorf("%s cluster: %d nodes not Up within %s", c.profile, n, timeout)
}

// killOne stops the master or another node and returns the time until
// every survivor applied its Down; then it starts the node again and
// waits for the cluster to be whole.
func (c *cluster) killOne(master bool) (time.Duration, error) {
	c.mu.Lock()
	var victim int
	for n, m := range c.members {
		isMaster := m.Status().Master == n
		if isMaster == master && (victim == 0 || n < victim) {
			victim = n
		}
	}
	c.mu.Unlock()
	if victim == 0 {
		return 0, errors.New("no node to kill")
	}
	return c.kill(victim)
}

// kill stops node victim and returns the time until every survivor
// applied its Down; then it starts the node again and waits for the
// cluster to be whole.
func (c *cluster) kill(victim int) (time.Duration, error) {
	c.mu.Lock()
	m := c.members[victim]
	delete(c.members, victim)
	survivors := len(c.members)
	c.mu.Unlock()
	if m == nil {
		return 0, fmt.Errorf("no node %d to kill", victim)
	}
	for len(c.downs) > 0 {
		<-c.downs
	}
	start := time.Now()
	m.Close()
	seen := map[int]bool{}
	var last time.Time
	timeout := time.After(60 * time.Second)
	for len(seen) < survivors {
		select {
		case d := <-c.downs:
			if d.node == victim && !seen[d.by] {
				seen[d.by] = true
				last = d.at
			}
		case <-timeout:
			return 0, fmt.Errorf("node %d's Down seen by %d of %d survivors in 60s", victim, len(seen), survivors)
		}
	}
	took := last.Sub(start)
	if err := c.start(victim, false); err != nil {
		return 0, err
	}
	if err := c.waitUp(survivors+1, 60*time.Second); err != nil {
		return 0, err
	}
	return took, nil
}

func (c *cluster) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		m.Close()
	}
	c.members = map[int]*clms.Member{}
}

// corosyncVersion is what `corosync -v` says of itself.
func corosyncVersion() string {
	out, _ := exec.Command("corosync", "-v").Output()
	line, _, _ := strings.Cut(string(out), "\n")
	if _, v, ok := strings.Cut(line, "version "); ok {
		return strings.Trim(v, "'")
	}
	return "(version unknown)"
}
