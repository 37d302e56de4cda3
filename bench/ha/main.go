// Command ha is `make bench-ha`: the cluster IP's failover against
// keepalived's VRRP, both on the same three QEMU nodes in one run, and
// the HA services' restart times and the cluster IP's throughput.
//
// It boots a CFS cluster of three nodes whose spec runs web (busybox
// httpd, with a CPU-bound CGI) on nodes 2 and 3 behind the cluster IP
// 10.77.0.100:8080 (directors 2 and 3) and a singleton, solo, on node 2
// or 3; and runs Debian's keepalived on nodes 2 and 3 for a second
// address, 10.77.0.101, in front of the same web servers (each node
// answers on it for itself, VRRP's usual use). Each round puts both
// addresses on node 2 (keepalived's higher priority; locus clusterip
// move for Locus), starts a client on node 1 asking both addresses in
// turn every 20 ms, kills node 2, and reads, for each address, the
// longest time without an answer: the kill to the first answer after
// it. Keepalived runs with its defaults (VRRPv2, advert_int 1) in even
// rounds and tuned for fast failover (VRRPv3, advert_int 0.1) in odd
// ones. It then measures an instance's restart after a crash, solo's
// restart on another node after its node's Down, and requests per
// second on the CGI through the cluster IP against one node directly.
// It writes bench/RESULTS.md's "ha" section.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/locus-ssi/locus/internal/benchresults"
	"github.com/locus-ssi/locus/internal/benchvm"
	"github.com/locus-ssi/locus/internal/testutil"
	"github.com/locus-ssi/locus/qemu"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/events"
	"github.com/locus-ssi/locus/services/ha"
	"github.com/locus-ssi/locus/services/locusd"
	"github.com/locus-ssi/locus/services/lvs"
)

const (
	dir      = "/opt/locus-bench"
	locusVIP = "10.77.0.100"
	kaVIP    = "10.77.0.101"
	port     = 8080
)

// spec is the cluster's: web on nodes 2 and 3 behind the cluster IP,
// each serving /hostname and the CGI from its own /tmp.
const spec = `cluster: {name: locus}
root: {source: cfs}
services:
  - name: web
    level: 3
    nodes: [2, 3]
    command: [/usr/local/bin/busybox, sh, -c, "[ -e /tmp/www/cgi-bin/work ] || { mkdir -p /tmp/www/cgi-bin && hostname > /tmp/www/hostname && cp ` + dir + `/work /tmp/www/cgi-bin/work; }; exec /usr/local/bin/busybox httpd -f -p 8080 -h /tmp/www"]
    ha: {instances: all, migration_threshold: 1000, monitor: {interval: 1s, timeout: 1s, http: "http://127.0.0.1:8080/hostname"}}
  - name: solo
    level: 3
    nodes: [2, 3]
    command: [/usr/local/bin/busybox, sh, -c, "mkdir -p /tmp/solo && hostname > /tmp/solo/hostname && exec /usr/local/bin/busybox httpd -f -p 8081 -h /tmp/solo"]
    ha: {monitor: {interval: 1s, timeout: 1s, http: "http://127.0.0.1:8081/hostname"}}
cluster_ip:
  address: ` + locusVIP + `
  directors: [2, 3]
  ports:
    - {port: 8080, scheduler: rr, service: web}
`

// work is the CPU-bound CGI: a shell loop, then the node's name.
const work = "#!/usr/local/bin/busybox sh\ni=0\nwhile [ $i -lt 2000 ]; do i=$((i+1)); done\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\ncat /tmp/www/hostname\n"

type options struct {
	locus, image, results string
	rounds                int
	dur                   time.Duration
	clients               int
}

func main() {
	var o options
	flag.StringVar(&o.locus, "locus", "bin/locus", "the locus binary")
	flag.StringVar(&o.results, "results", "", "bench/RESULTS.md to write the section into (empty: print it)")
	flag.IntVar(&o.rounds, "rounds", 4, "failover rounds (keepalived's defaults in even ones, tuned in odd ones)")
	flag.DurationVar(&o.dur, "dur", 10*time.Second, "how long each throughput run lasts")
	flag.IntVar(&o.clients, "clients", 8, "throughput clients")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-ha:", err)
		os.Exit(1)
	}
}

type bench struct {
	o options
	*benchvm.Cluster
	start time.Time
}

func (b *bench) progress(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "[%5.0fs] "+f+"\n", append([]any{time.Since(b.start).Seconds()}, a...)...)
}

// agent runs the client agent on node n and decodes its answer.
func (b *bench) agent(n int, timeout time.Duration, args ...string) (result, error) {
	out, err := b.On(n, timeout, nil, append([]string{dir + "/agent"}, args...)...)
	var r result
	if err == nil {
		err = json.Unmarshal([]byte(out), &r)
	}
	return r, err
}

type probeResult struct {
	Addr     string         `json:"addr"`
	Asked    int            `json:"asked"`
	Answered int            `json:"answered"`
	From     map[string]int `json:"from"`
	AtMS     []float64      `json:"at_ms"`
	By       []string       `json:"by"`
}

// failoverGap is the longest time between two answers around the kill,
// at kill ms after the agent was started (the agent starts a little
// later, so in its clock the kill is a little earlier): the gap starts
// before the kill and ends after it, with the address's new holder
// answering. It returns the gap and who answered either side.
func (p probeResult) failoverGap(kill float64) (gap float64, before, after string, ok bool) {
	for i := 0; i+1 < len(p.AtMS); i++ {
		a, b := p.AtMS[i], p.AtMS[i+1]
		if a > kill+500 || b < kill-1000 {
			continue
		}
		if g := b - a; g > gap {
			gap, before, after, ok = g, p.By[i], p.By[i+1], true
		}
	}
	return gap, before, after, ok
}

type result struct {
	Probes    []probeResult    `json:"probes"`
	Ops       int64            `json:"ops"`
	OpsBy     map[string]int64 `json:"ops_by"`
	Errors    int64            `json:"errors"`
	Seconds   float64          `json:"seconds"`
	RestartMS float64          `json:"restart_ms"`
}

func run(o options) error {
	state, err := os.MkdirTemp("", "bench-ha-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	b := &bench{o: o, Cluster: benchvm.New(o.locus, filepath.Join(state, "image"), state), start: time.Now()}
	specFile := filepath.Join(state, "locus.yaml")
	if err := os.WriteFile(specFile, []byte(spec), 0o644); err != nil {
		return err
	}
	b.progress("building the image")
	if out, err := exec.Command(o.locus, "image", "build", "--spec", specFile, "--out", b.Image).CombinedOutput(); err != nil {
		return fmt.Errorf("image build: %w\n%s", err, out)
	}
	b.progress("booting 3 nodes")
	if _, err := b.Qemu("up", "-n", "3", "--timeout", "10m", "--api-port", "17498"); err != nil {
		return err
	}
	defer b.Qemu("down")

	agent := filepath.Join(state, "agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", agent, "./bench/ha/agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build the agent: %w\n%s", err, out)
	}
	workFile := filepath.Join(state, "work")
	if err := os.WriteFile(workFile, []byte(work), 0o755); err != nil {
		return err
	}
	libs, err := testutil.Libraries("/usr/sbin/keepalived")
	if err != nil {
		return err
	}
	for _, f := range append([]string{agent, workFile, "/usr/sbin/keepalived"}, libs...) {
		b.progress("copying %s to the shared root's %s", f, dir)
		if err := b.Push(1, dir, f); err != nil {
			return err
		}
	}
	version, _ := b.Sh(2, time.Minute, kaCmd("--version")+" 2>&1 | head -1")
	version = strings.TrimSpace(version)

	var s samples
	for r := 0; r < o.rounds; r++ {
		tuned := r%2 == 1
		b.progress("failover round %d of %d (keepalived %s)", r+1, o.rounds, map[bool]string{false: "defaults", true: "tuned"}[tuned])
		if err := b.failoverRound(&s, tuned); err != nil {
			return err
		}
	}
	b.progress("restarts after a crash")
	if err := b.crashRestarts(&s, 5); err != nil {
		return err
	}
	for r := 0; r < 3; r++ {
		b.progress("throughput round %d of 3 (%s first)", r+1, map[bool]string{true: "cluster IP", false: "one node"}[r%2 == 0])
		err := benchresults.Alternate(r, func() error { return b.rate(&s.viaVIP, locusVIP) }, func() error { return b.rate(&s.oneNode, "10.77.0.2") })
		if err != nil {
			return err
		}
	}
	body := report(o, s, version)
	fmt.Print(body)
	if o.results != "" {
		return benchresults.WriteSection(o.results, "ha", body)
	}
	return nil
}

// kaCmd is Debian's keepalived run through its own loader and libraries.
func kaCmd(args string) string {
	return dir + "/ld-linux-x86-64.so.2 --library-path " + dir + " " + dir + "/keepalived " + args
}

// kaConf is node n's keepalived.conf: one VRRP instance for kaVIP on
// eth0, node 2 the higher priority (so the master while it is up, as
// keepalived preempts by default). Tuned: VRRPv3 with 100 ms adverts,
// what keepalived's users set for sub-second failover.
func kaConf(n int, tuned bool) string {
	version, advert := "", "1"
	if tuned {
		version, advert = "  vrrp_version 3\n", "0.1"
	}
	prio := map[int]int{2: 150, 3: 100}[n]
	return fmt.Sprintf("global_defs {\n  router_id node%d\n%s}\nvrrp_instance VI_1 {\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority %d\n  advert_int %s\n  virtual_ipaddress {\n    %s/24 dev eth0\n  }\n}\n",
		n, version, prio, advert, kaVIP)
}

// startKeepalived (re)starts keepalived on node n with the round's
// configuration.
func (b *bench) startKeepalived(n int, tuned bool) error {
	conf := strings.ReplaceAll(kaConf(n, tuned), "'", "")
	script := "if [ -e /tmp/ka.pid ]; then kill $(cat /tmp/ka.pid) 2>/dev/null; sleep 1; fi; rm -f /tmp/ka*.pid; printf '%s' '" + conf + "' > /tmp/ka.conf; " +
		"setsid " + kaCmd("-n -l -P -f /tmp/ka.conf -p /tmp/ka.pid -r /tmp/ka-vrrp.pid") + " < /dev/null > /tmp/ka.log 2>&1 &"
	_, err := b.Sh(n, time.Minute, script)
	return err
}

// holds says whether node n has addr on eth0.
func (b *bench) holds(n int, addr string) bool {
	out, err := b.Sh(n, 30*time.Second, "ip -4 -o addr show dev eth0")
	return err == nil && strings.Contains(out, " "+addr+"/")
}

func (b *bench) status() (clms.Status, error) {
	var st clms.Status
	out, err := b.Host("cluster", "status", "--output", "json")
	if err == nil {
		err = json.Unmarshal([]byte(out), &st)
	}
	return st, err
}

func (b *bench) waitUp(nodes ...int) error {
	deadline := time.Now().Add(6 * time.Minute)
	for {
		st, err := b.status()
		if err == nil {
			ok := true
			for _, n := range nodes {
				for _, r := range st.Nodes {
					if r.Node == n && r.State != clms.Up {
						ok = false
					}
				}
			}
			if ok && len(st.Nodes) >= len(nodes) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nodes %v not Up within 6 min: %v %+v", nodes, err, st.Nodes)
		}
		time.Sleep(2 * time.Second)
	}
}

func (b *bench) clusterIP() (lvs.Report, error) {
	var r lvs.Report
	out, err := b.Host("clusterip", "--output", "json")
	if err == nil {
		err = json.Unmarshal([]byte(out), &r)
	}
	return r, err
}

func (b *bench) services() (locusd.ServicesReply, error) {
	var r locusd.ServicesReply
	out, err := b.Host("service", "ls", "--output", "json")
	if err == nil {
		err = json.Unmarshal([]byte(out), &r)
	}
	return r, err
}

// instance is service's running instance on node (0: any), if any.
func (b *bench) instance(service string, node int) (at int, since time.Time, pid int, ok bool) {
	r, err := b.services()
	if err != nil {
		return 0, time.Time{}, 0, false
	}
	for _, s := range r.Services {
		for _, in := range s.Running {
			if s.Name == service && in.State == "running" && (node == 0 || in.Node == node) {
				return in.Node, in.Since, in.PID, true
			}
		}
	}
	return 0, time.Time{}, 0, false
}

func waitFor(what string, within time.Duration, ok func() bool) error {
	for deadline := time.Now().Add(within); !ok(); time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %v", what, within)
		}
	}
	return nil
}

// samples are the run's measurements, in milliseconds and requests/s.
type samples struct {
	locusGap, kaDefault, kaTuned []float64
	locusChosen                  []float64 // the Down to the new director's record
	soloMoved                    []float64 // the Down to solo's start elsewhere
	crash                        []float64
	respawn, ready               []float64 // a restart's parts, from the supervisor's log
	viaVIP, oneNode              []float64
}

func (b *bench) failoverRound(s *samples, tuned bool) error {
	if err := b.waitUp(1, 2, 3); err != nil {
		return err
	}
	for _, n := range []int{2, 3} {
		if err := b.startKeepalived(n, tuned); err != nil {
			return err
		}
	}
	if err := waitFor("keepalived's address on node 2", 2*time.Minute, func() bool { return b.holds(2, kaVIP) && !b.holds(3, kaVIP) }); err != nil {
		return err
	}
	if r, err := b.clusterIP(); err != nil || r.Director.Node != 2 {
		if _, err := b.Host("clusterip", "move", "2"); err != nil {
			return err
		}
	}
	if err := waitFor("the cluster IP on node 2 with 2 real servers", time.Minute, func() bool {
		r, err := b.clusterIP()
		return err == nil && r.Director.Node == 2 && !r.Director.Releasing && len(r.Table) == 1 && len(r.Table[0].Servers) == 2 && b.holds(2, locusVIP)
	}); err != nil {
		return err
	}
	if err := waitFor("solo running", 2*time.Minute, func() bool { _, _, _, ok := b.instance("solo", 0); return ok }); err != nil {
		out, _ := b.Host("service", "ls")
		return fmt.Errorf("%w\n%s", err, out)
	}
	if n, _, _, ok := b.instance("solo", 0); !ok || n != 2 {
		if _, err := b.Host("service", "move", "solo", "--to", "2"); err != nil {
			return err
		}
		if err := waitFor("solo on node 2", time.Minute, func() bool { n, _, _, ok := b.instance("solo", 2); return ok && n == 2 }); err != nil {
			return err
		}
	}
	type answer struct {
		r   result
		err error
	}
	ch := make(chan answer, 1)
	agentStart := time.Now()
	go func() {
		r, err := b.agent(1, 3*time.Minute, "probe", "-for", "45s", locusVIP+fmt.Sprintf(":%d", port), kaVIP+fmt.Sprintf(":%d", port))
		ch <- answer{r, err}
	}()
	time.Sleep(8 * time.Second)
	kill := float64(time.Since(agentStart).Microseconds()) / 1000
	if _, err := b.Qemu("kill", "2"); err != nil {
		return err
	}
	a := <-ch
	if a.err != nil {
		return a.err
	}
	for _, p := range a.r.Probes {
		gap, before, after, ok := p.failoverGap(kill)
		b.progress("  %s: %d of %d answered, by %v; around the kill, %.0f ms without an answer (%s, then %s)", p.Addr, p.Answered, p.Asked, p.From, gap, before, after)
		if !ok || after != "node3" {
			return fmt.Errorf("%s: no answer from node 3 after the kill of node 2 (%v)", p.Addr, ok)
		}
		switch {
		case strings.HasPrefix(p.Addr, locusVIP+":"):
			s.locusGap = append(s.locusGap, gap)
		case tuned:
			s.kaTuned = append(s.kaTuned, gap)
		default:
			s.kaDefault = append(s.kaDefault, gap)
		}
	}
	// From node 2's Down, as the master applied it (its event feed), to
	// the master's records: the new director, and solo placed on node 3
	// (neither moves back when node 2 returns).
	st, err := b.status()
	if err != nil {
		return err
	}
	evs, _ := qemu.ReadEventLog(qemu.EventLog(b.State, st.Master))
	var down time.Time
	for _, e := range evs {
		if e.Kind == events.TransitionApplied && e.Subject == 2 && e.State == string(clms.Down) {
			down = e.At
		}
	}
	if !down.IsZero() {
		if r, err := b.clusterIP(); err == nil && r.Director.Node == 3 && r.Director.Since.After(down) {
			s.locusChosen = append(s.locusChosen, float64(r.Director.Since.Sub(down).Microseconds())/1000)
		}
		if _, since, _, ok := b.instance("solo", 3); ok && since.After(down) {
			s.soloMoved = append(s.soloMoved, float64(since.Sub(down).Microseconds())/1000)
		}
	}
	b.progress("  waiting for node 2 to come back (fenced with a reboot)")
	return b.waitUp(1, 2, 3)
}

// crashRestarts kills web's instance on node 3 n times, each time
// measuring (on node 3) until it answers again.
func (b *bench) crashRestarts(s *samples, n int) error {
	for i := 0; i < n; i++ {
		var pid int
		if err := waitFor("web running on node 3", time.Minute, func() bool {
			var ok bool
			_, _, pid, ok = b.instance("web", 3)
			return ok && pid > 0
		}); err != nil {
			return err
		}
		r, err := b.agent(3, time.Minute, "restart", "-for", "30s", "-pid", fmt.Sprint(pid), fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return err
		}
		s.crash = append(s.crash, r.RestartMS)
		time.Sleep(2 * time.Second)
	}
	// How much of each restart was the service's own start: from its
	// supervisor's log, "failed" to "started pid" (Locus: the stop, the
	// master's count, the spawn) and "ready after" (the command opening
	// its port).
	out, err := b.Host("service", "logs", "web", "--output", "json")
	if err != nil {
		return err
	}
	var logs locusd.ServiceLogsReply
	if err := json.Unmarshal([]byte(out), &logs); err != nil {
		return err
	}
	var failed time.Time
	var lines []ha.LogLine
	for _, l := range logs.Lines {
		if l.Node == 3 && l.Stream == "locus" {
			lines = append(lines, l)
		}
	}
	for _, l := range lines[max(0, len(lines)-3*n):] {
		switch {
		case strings.HasPrefix(l.Text, "failed: killed by SIGKILL"):
			failed = l.At
		case strings.HasPrefix(l.Text, "started pid") && !failed.IsZero():
			s.respawn = append(s.respawn, float64(l.At.Sub(failed).Microseconds())/1000)
			failed = time.Time{}
		case strings.HasPrefix(l.Text, "ready after "):
			if d, err := time.ParseDuration(strings.TrimPrefix(l.Text, "ready after ")); err == nil {
				s.ready = append(s.ready, float64(d.Microseconds())/1000)
			}
		}
	}
	return nil
}

func (b *bench) rate(into *[]float64, addr string) error {
	r, err := b.agent(1, 2*time.Minute, "load", "-for", b.o.dur.String(), "-clients", fmt.Sprint(b.o.clients), fmt.Sprintf("%s:%d", addr, port))
	if err != nil {
		return err
	}
	if r.Ops == 0 {
		return fmt.Errorf("no request to %s answered (%d errors)", addr, r.Errors)
	}
	b.progress("  %s: %.1f requests/s, answered by %v, %d errors", addr, float64(r.Ops)/r.Seconds, r.OpsBy, r.Errors)
	*into = append(*into, float64(r.Ops)/r.Seconds)
	return nil
}

func report(o options, s samples, version string) string {
	med := benchresults.Median
	var b strings.Builder
	fmt.Fprintf(&b, "## HA services and the cluster IP: failover against keepalived (make bench-ha)\n\n")
	fmt.Fprintf(&b, "%s. Three QEMU nodes (TCG, no KVM, one vCPU each; `locus qemu up -n 3`, a CFS root): web, busybox httpd, runs on nodes 2 and 3 as an HA service (instances: all) behind the cluster IP %s:%d (directors 2 and 3, IPVS direct routing, rr); Debian's %s runs on nodes 2 and 3 for a second address, %s, in front of the same servers (each node answers on it itself: VRRP alone, keepalived's usual setup for one service address). Each failover round puts both addresses on node 2 (keepalived's higher priority; `locus clusterip move 2`), asks both from node 1 in turn every 20 ms (a new connection each, 200 ms limit, the first address asked alternating), kills node 2's VM and takes, per address, the longest time between two answers around the kill (the last answer before it to the first after it, from node 3: the kill to the first answer, to within one ask). Keepalived ran with its defaults (VRRPv2, advert_int 1) in %d rounds and tuned (VRRPv3, advert_int 0.1) in %d. Ratio: keepalived / Locus, above 1: Locus is faster.\n\n",
		benchresults.Machine(), locusVIP, port, version, kaVIP, (o.rounds+1)/2, o.rounds/2)
	fmt.Fprintln(&b, "| what | Locus | keepalived | ratio |")
	fmt.Fprintln(&b, "|---|---|---|---|")
	var rows []benchresults.Row
	lg := med(s.locusGap)
	for _, c := range []struct {
		what string
		v    []float64
	}{{"failover, kill to first answer (keepalived defaults)", s.kaDefault}, {"failover, kill to first answer (keepalived tuned)", s.kaTuned}} {
		ratio := med(c.v) / lg
		fmt.Fprintf(&b, "| %s | %.0f ms | %.0f ms | %.2f |\n", c.what, lg, med(c.v), ratio)
		rows = append(rows, benchresults.Row{What: c.what, Ratio: ratio})
	}
	fmt.Fprintf(&b, "\nSamples (ms): Locus %v; keepalived defaults %v; tuned %v.\n\n", ints(s.locusGap), ints(s.kaDefault), ints(s.kaTuned))
	fmt.Fprintln(&b, benchresults.Reading("keepalived", rows))
	fmt.Fprintf(&b, "\nLocus's time is almost all the membership's: the kill is noticed by SWIM's suspicion and the supervisor's fence (several seconds under TCG, see the membership section), and the director moves only on the fenced Down, which is what keeps two nodes from ever holding the address. From that Down (the master's event feed), the master chose the new director in %s ms (median; goal ≤ 1000 ms) and placed solo, node 2's singleton, on node 3 in %s ms (the assignment node 3 starts it from; goal ≤ 2000 ms). Keepalived moves the address on a missed advert, without fencing: faster, and two masters when the network splits.\n\n",
		fmtMed(s.locusChosen), fmtMed(s.soloMoved))
	fmt.Fprintln(&b, "| what | median | samples |")
	fmt.Fprintln(&b, "|---|---|---|")
	fmt.Fprintf(&b, "| web's instance on node 3 killed (SIGKILL) to answering again (goal ≤ 1000 ms) | %.0f ms | %v |\n", med(s.crash), ints(s.crash))
	fmt.Fprintf(&b, "| of which: the exit seen to the new process (stop, the master's count, spawn) | %s ms | %v |\n", fmtMed(s.respawn), ints(s.respawn))
	fmt.Fprintf(&b, "| of which: the new process to its monitor passing (busybox sh, then httpd listening) | %s ms | %v |\n", fmtMed(s.ready), ints(s.ready))
	fmt.Fprintf(&b, "| node 2's Down to the new director's record | %s ms | %v |\n", fmtMed(s.locusChosen), ints(s.locusChosen))
	fmt.Fprintf(&b, "| node 2's Down to solo placed on node 3 | %s ms | %v |\n", fmtMed(s.soloMoved), ints(s.soloMoved))
	ratio := med(s.viaVIP) / med(s.oneNode)
	fmt.Fprintf(&b, "\nThroughput: %d clients on node 1 asking the CGI (a 2000-step shell loop, CPU-bound) for %v, through the cluster IP (2 real servers, nodes 2 and 3) against node 2 directly, 3 rounds, each first in turn: %.1f against %.1f requests/s (medians), %.2fx. The issue's goal, 2.5x with 3 instances, cannot be reached on this machine: its two cores run all three VMs, the client's included, so two servers have at most the cores one leaves them.\n",
		o.clients, o.dur, med(s.viaVIP), med(s.oneNode), ratio)
	return b.String()
}

func fmtMed(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", benchresults.Median(v))
}

func ints(v []float64) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x + 0.5)
	}
	return out
}
