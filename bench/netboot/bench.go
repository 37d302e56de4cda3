package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/pin/tftp/v3"

	"github.com/locus-ssi/locus/internal/benchresults"
)

type opts struct {
	locus, root, results string
	serverIf, clientIf   string
	serverIP             string
	duration             time.Duration
	work, serverNS       string
}

type result struct {
	what, unit  string
	locus, peer float64
	// ratios are locus/peer of each round, the two measured back to back
	// (shown for the spread; the table's ratio is of the medians).
	ratios   []float64
	peerName string
	note     string
	clients  int // connections, for the HTTP rows
}

// ratio is the ratio of the medians (benchresults.RatioRule): rates, so
// Locus / peer.
func (r result) ratio() float64 { return r.locus / r.peer }

func run(args []string) error {
	var o opts
	fs := flag.NewFlagSet("netboot-bench", flag.ContinueOnError)
	fs.StringVar(&o.locus, "locus", "bin/locus", "locus binary")
	fs.StringVar(&o.root, "root", "out/netboot", "boot tree (for the initramfs)")
	fs.StringVar(&o.results, "results", "bench/RESULTS.md", "results file (the netboot section is replaced)")
	fs.StringVar(&o.serverIf, "server-if", "nb0", "server side of the veth pair")
	fs.StringVar(&o.clientIf, "client-if", "nb1", "client side of the veth pair")
	fs.StringVar(&o.serverIP, "server-ip", "10.77.0.1", "server address on server-if")
	fs.DurationVar(&o.duration, "duration", 4*time.Second, "how long each DHCP run lasts")
	fs.StringVar(&o.serverNS, "server-ns", "", "network namespace the servers run in")
	only := fs.String("only", "", "run only these measurements (storm, dhcp, tftp, http, bootstorm; comma-separated) and print them, leaving the results file as it is")
	if err := fs.Parse(args); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "netboot-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	o.work = work
	if err := o.prepare(); err != nil {
		return err
	}
	want := func(name string) bool { return *only == "" || strings.Contains(","+*only+",", ","+name+",") }
	var storms []stormResult
	if want("storm") {
		if storms, err = o.benchStorm(); err != nil {
			return err
		}
	}
	var results []result
	for _, b := range []struct {
		name string
		f    func() ([]result, error)
	}{{"dhcp", one(o.benchDHCP)}, {"tftp", one(o.benchTFTP)}, {"http", o.benchHTTP}} {
		if !want(b.name) {
			continue
		}
		rs, err := b.f()
		if err != nil {
			return err
		}
		for _, r := range rs {
			fmt.Printf("%-40s locus %10.1f  %-10s %10.1f  %s  ratio %.2f %s\n", r.what, r.locus, r.peerName, r.peer, r.unit, r.ratio(), fmtRatios(r.ratios))
		}
		results = append(results, rs...)
	}
	var boot *bootStorm
	if want("bootstorm") {
		r, err := o.benchBootStorm()
		if err != nil {
			return err
		}
		fmt.Printf("boot storm: %d nodes in %.2f s (wire %.2f s at 10 Gbit/s), p50 %.2f s, p99 %.2f s, %.2f GB, CPU %.2f s, RSS %.1f MB, %d DHCP retransmissions\n",
			r.nodes, r.all.Seconds(), r.wire.Seconds(), r.p50.Seconds(), r.p99.Seconds(), float64(r.bytes)/1e9, r.cpu.Seconds(), r.rss, r.dhcpRetries)
		boot = &r
	}
	if *only != "" {
		return nil
	}
	return writeResults(o.results, results, storms, boot)
}

// one makes a single measurement's function a list's.
func one(f func() (result, error)) func() ([]result, error) {
	return func() ([]result, error) {
		r, err := f()
		return []result{r}, err
	}
}

// prepare lays out the boot tree the servers share: iPXE, kernel and
// initramfs from the built tree, and a 30 MB file for TFTP.
func (o *opts) prepare() error {
	root := filepath.Join(o.work, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	for _, f := range []string{"undionly.kpxe", "ipxe.efi", "snponly.efi", "vmlinuz", "initramfs.cpio.zst"} {
		b, err := os.ReadFile(filepath.Join(o.root, f))
		if err != nil {
			return fmt.Errorf("%w (run `make image` first)", err)
		}
		if err := os.WriteFile(filepath.Join(root, f), b, 0o644); err != nil {
			return err
		}
	}
	big := make([]byte, 30<<20)
	rand.Read(big)
	if err := os.WriteFile(filepath.Join(root, "big.bin"), big, 0o644); err != nil {
		return err
	}
	os.Chmod(o.work, 0o755)
	// A /16 with a pool of 65,000 addresses, both servers: a storm's
	// every client is a machine never seen before. new_macs_per_minute
	// is raised as a site expecting such a storm would (the default, 64,
	// guards against floods of made-up MACs).
	spec := "cluster: {name: bench}\ninterconnect: {subnet: 10.77.0.0/16}\nnetboot: {admission: discover, pool: 10.77.1.0-10.77.254.254, new_macs_per_minute: 10000000}\n"
	return os.WriteFile(filepath.Join(o.work, "locus.yaml"), []byte(spec), 0o644)
}

// server is a peer or Locus running for one measurement.
type server struct {
	cmd       *exec.Cmd
	name, log string
}

func (o *opts) start(name string, argv ...string) (*server, error) {
	if o.serverNS != "" {
		argv = append([]string{"ip", "netns", "exec", o.serverNS}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	logf, _ := os.Create(filepath.Join(o.work, name+".log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	time.Sleep(700 * time.Millisecond)
	if cmd.ProcessState != nil {
		return nil, fmt.Errorf("%s exited at once (see %s.log)", name, name)
	}
	return &server{cmd: cmd, name: name, log: filepath.Join(o.work, name+".log")}, nil
}

func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

// logTail is the end of the server's log, for errors.
func (s *server) logTail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// hwm is the server's peak resident set in MB.
func (s *server) hwm() float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			f := strings.Fields(v)
			kb, _ := strconv.ParseFloat(f[0], 64)
			return kb / 1024
		}
	}
	return 0
}

func (o *opts) startLocus() (*server, error) {
	return o.start("locus", o.locus, "netboot", "serve", "--interface", o.serverIf,
		"--root", filepath.Join(o.work, "root"), "--spec", filepath.Join(o.work, "locus.yaml"),
		"--state-dir", filepath.Join(o.work, "locus-state-"+strconv.FormatInt(time.Now().UnixNano(), 36)))
}

// startDnsmasq starts dnsmasq as its users tune it for a big pool: no
// ping before an offer (its default costs seconds per new client), a lease
// limit above the pool (its default is 1,000), DHCP logging off; with a
// fresh lease file.
func (o *opts) startDnsmasq() (*server, error) {
	leases := filepath.Join(o.work, "dnsmasq.leases")
	os.Remove(leases)
	return o.start("dnsmasq", "dnsmasq", "--no-daemon", "--port=0", "--interface="+o.serverIf, "--bind-interfaces",
		"--dhcp-range=10.77.1.0,10.77.254.254,1h", "--dhcp-lease-max=70000", "--dhcp-leasefile="+leases,
		"--dhcp-authoritative", "--no-ping", "--quiet-dhcp", "--conf-file=/dev/null", "--log-facility=-")
}

// stormLevel is one load of the storm benchmark: an offered rate of new
// clients a second, or (rate 0) a number kept in flight.
type stormLevel struct {
	rate     float64
	inflight int
}

func (l stormLevel) String() string {
	if l.rate == 0 {
		return fmt.Sprintf("saturation: %d clients in flight", l.inflight)
	}
	return fmt.Sprintf("%.0f new clients/s offered", l.rate)
}

var stormLevels = []stormLevel{{rate: 500}, {rate: 1000}, {rate: 2000}, {rate: 5000}, {rate: 10000}, {inflight: 256}}

// stormRounds is how many rounds each storm level gets (fewer than the
// other measurements: there are six levels).
const stormRounds = 3

// stormResult is both servers' medians at one level.
type stormResult struct {
	level              stormLevel
	locus, peer        stormRun // the round with the median served rate
	ratios             []float64
	served, peerServed float64
}

// benchStorm offers each storm level to both servers, started afresh for
// every trial, alternating which goes first.
func (o *opts) benchStorm() ([]stormResult, error) {
	var out []stormResult
	base := uint32(0)
	for _, lv := range stormLevels {
		var ls, ps []stormRun
		var rs []float64
		for round := range stormRounds {
			var l, p stormRun
			one := func(what string, start func() (*server, error), into *stormRun) error {
				_, err := o.trial(what, start, func() (float64, error) {
					base += 1 << 20
					r, err := storm(o.clientIf, base, lv.rate, lv.inflight, 2*time.Second)
					*into = r
					if err == nil && r.acked == 0 {
						err = fmt.Errorf("no client got an ACK (of %d)", r.started)
					}
					return r.served(), err
				}, nil)
				return err
			}
			err := benchresults.Alternate(round,
				func() error { return one("dhcp storm against locus", o.startLocus, &l) },
				func() error { return one("dhcp storm against dnsmasq", o.startDnsmasq, &p) })
			if err != nil {
				return nil, fmt.Errorf("%s: %w", lv, err)
			}
			ls, ps, rs = append(ls, l), append(ps, p), append(rs, l.served()/p.served())
			fmt.Printf("storm %-40s round %d: locus %8.0f/s (%.1f%% dropped, p99 %v)  dnsmasq %8.0f/s (%.1f%% dropped, p99 %v)\n",
				lv, round, l.served(), l.dropped(), l.p99, p.served(), p.dropped(), p.p99)
		}
		r := stormResult{level: lv, ratios: rs, locus: medianRun(ls), peer: medianRun(ps)}
		out = append(out, r)
	}
	return out, nil
}

// medianRun is the run with the median served rate.
func medianRun(rs []stormRun) stormRun {
	s := append([]stormRun(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].served() < s[j].served() })
	return s[len(s)/2]
}

// benchDHCP counts full DISCOVER-OFFER-REQUEST-ACK exchanges per second
// from 4 concurrent clients cycling through 100 MACs, against the same
// pool on both servers.
func (o *opts) benchDHCP() (result, error) {
	r := result{what: "DHCP: full DORA exchanges", unit: "DORA/s", peerName: "dnsmasq"}
	measure := func() (float64, error) {
		const workers, macs = 4, 100
		lg, err := newDHCPLoad(o.clientIf)
		if err != nil {
			return 0, err
		}
		defer lg.close()
		var done atomic.Int64
		var firstErr atomic.Value
		ctx, cancel := context.WithTimeout(context.Background(), o.duration)
		defer cancel()
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ctx.Err() == nil; i++ {
					mac := net.HardwareAddr{0x02, 0xbe, 0, 0, byte(w), byte(i % (macs / workers))}
					if err := lg.dora(ctx, mac); err != nil {
						if ctx.Err() == nil {
							firstErr.CompareAndSwap(nil, err)
						}
						continue
					}
					done.Add(1)
				}
			}()
		}
		wg.Wait()
		if done.Load() == 0 {
			return 0, fmt.Errorf("no exchange completed: %v", firstErr.Load())
		}
		return float64(done.Load()) / o.duration.Seconds(), nil
	}
	locus := func() (float64, error) {
		return o.trial("dhcp against locus", o.startLocus,
			func() (float64, error) { return measure() }, nil)
	}
	peer := func() (float64, error) {
		return o.trial("dhcp against dnsmasq", o.startDnsmasq, func() (float64, error) { return measure() }, nil)
	}
	var err error
	r.locus, r.peer, r.ratios, err = sideBySide(locus, peer)
	return r, err
}

// benchTFTP times downloads of a 30 MB file with blksize 1468 from each.
func (o *opts) benchTFTP() (result, error) {
	r := result{what: "TFTP: 30 MB file, blksize 1468", unit: "MB/s", peerName: "tftpd-hpa"}
	measure := func() (float64, error) {
		c, err := tftp.NewClient(o.serverIP + ":69")
		if err != nil {
			return 0, err
		}
		c.SetBlockSize(1468)
		c.SetTimeout(2 * time.Second)
		const n = 3
		start := time.Now()
		var total int64
		for range n {
			wt, err := c.Receive("big.bin", "octet")
			if err != nil {
				return 0, err
			}
			m, err := wt.WriteTo(io.Discard)
			if err != nil {
				return 0, err
			}
			total += m
		}
		if total != n*30<<20 {
			return 0, fmt.Errorf("received %d bytes, want %d", total, n*30<<20)
		}
		return float64(total) / 1e6 / time.Since(start).Seconds(), nil
	}
	locus := func() (float64, error) {
		return o.trial("tftp against locus", o.startLocus,
			func() (float64, error) { return measure() }, nil)
	}
	peer := func() (float64, error) {
		return o.trial("tftp against tftpd-hpa", func() (*server, error) {
			return o.start("tftpd-hpa", "in.tftpd", "--foreground", "--listen", "--address", o.serverIP+":69", "--user", "root", "--secure", filepath.Join(o.work, "root"))
		},
			func() (float64, error) { return measure() }, nil)
	}
	var err error
	r.locus, r.peer, r.ratios, err = sideBySide(locus, peer)
	return r, err
}

// benchHTTP has wrk (Debian's, a C load generator with its own event
// loop, so the client is not the bottleneck) fetch the initramfs over
// 64 and over 256 connections for a few seconds each, and reports the
// aggregate throughput; it also records Locus's peak RSS.
func (o *opts) benchHTTP() ([]result, error) {
	conf := filepath.Join(o.work, "nginx.conf")
	// nginx as its users run it: a worker per core, sendfile, no access
	// log.
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`daemon off;
worker_processes %d;
pid %s/nginx.pid;
error_log stderr;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path %[2]s/nginx-tmp;
  server { listen %s:8081; root %s; }
}
`, runtime.NumCPU(), o.work, o.serverIP, filepath.Join(o.work, "root"))), 0o644)
	if err != nil {
		return nil, err
	}
	var out []result
	var rss float64
	for _, clients := range []int{64, 256} {
		r := result{what: fmt.Sprintf("HTTP: initramfs, %d connections (wrk)", clients), unit: "MB/s", peerName: "nginx", clients: clients}
		locus := func() (float64, error) {
			return o.trial("http against locus", o.startLocus,
				func() (float64, error) { return wrk("http://"+o.serverIP+":8080/initramfs.cpio.zst", clients) },
				func(s *server) { rss = max(rss, s.hwm()) })
		}
		peer := func() (float64, error) {
			return o.trial("http against nginx", func() (*server, error) { return o.start("nginx", "nginx", "-c", conf, "-e", "stderr") },
				func() (float64, error) { return wrk("http://"+o.serverIP+":8081/initramfs.cpio.zst", clients) }, nil)
		}
		r.locus, r.peer, r.ratios, err = sideBySide(locus, peer)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	out[len(out)-1].note = fmt.Sprintf("Locus peak RSS while serving up to 256 HTTP connections: %.1f MB (goal < 64 MB).", rss)
	return out, nil
}

// wrk runs Debian's wrk against url with conns connections on two
// threads for 6 s and returns the throughput in MB/s. Any error, timeout
// or non-2xx answer fails the measurement.
func wrk(url string, conns int) (float64, error) {
	outb, err := exec.Command("wrk", "-t2", "-c"+strconv.Itoa(conns), "-d6s", "--timeout", "60s", url).CombinedOutput()
	out := string(outb)
	if err != nil {
		return 0, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	if strings.Contains(out, "Socket errors") || strings.Contains(out, "Non-2xx") {
		return 0, fmt.Errorf("wrk saw errors:\n%s", out)
	}
	for _, l := range strings.Split(out, "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(l), "Transfer/sec:")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		mult := map[string]float64{"GB": 1 << 30, "MB": 1 << 20, "KB": 1 << 10, "B": 1}
		for _, u := range []string{"GB", "MB", "KB", "B"} {
			if n, ok := strings.CutSuffix(v, u); ok {
				f, err := strconv.ParseFloat(n, 64)
				if err != nil {
					return 0, fmt.Errorf("wrk: transfer rate %q: %w", v, err)
				}
				return f * mult[u] / 1e6, nil
			}
		}
	}
	return 0, fmt.Errorf("wrk printed no transfer rate:\n%s", out)
}

// trial starts a server, measures it, runs after (if any) while it still
// runs, and stops it; a failed measurement carries the server's log.
func (o *opts) trial(what string, start func() (*server, error), measure func() (float64, error), after func(*server)) (float64, error) {
	s, err := start()
	if err != nil {
		return 0, err
	}
	v, err := measure()
	if after != nil {
		after(s)
	}
	s.stop()
	if err != nil {
		return 0, fmt.Errorf("%s: %w\n%s", what, err, s.logTail())
	}
	return v, nil
}

// rounds is how many times each side is measured, alternating, so that a
// slow moment of the machine does not land on one side only.
const rounds = 5

// sideBySide measures Locus and the peer in rounds (each server started
// afresh), Locus first in even rounds and the peer first in odd ones, and
// returns the median of each side and each round's ratio.
func sideBySide(locus, peer func() (float64, error)) (float64, float64, []float64, error) {
	var ls, ps, rs []float64
	for r := range rounds {
		var l, p float64
		err := benchresults.Alternate(r,
			func() (err error) { l, err = locus(); return err },
			func() (err error) { p, err = peer(); return err })
		if err != nil {
			return 0, 0, nil, err
		}
		ls, ps, rs = append(ls, l), append(ps, p), append(rs, l/p)
	}
	return benchresults.Median(ls), benchresults.Median(ps), rs, nil
}

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
}

func fmtRatios(v []float64) string {
	var parts []string
	for _, x := range v {
		parts = append(parts, fmt.Sprintf("%.2f", x))
	}
	return strings.Join(parts, " ")
}

// writeResults replaces the netboot section of the results file.
func writeResults(path string, rs []result, storms []stormResult, boot *bootStorm) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "## Netboot (make bench-netboot)\n\n")
	fmt.Fprintf(&b, "Run %s. Servers in one network namespace, the load generator in another, joined by a veth pair; in one run, %d rounds, each measuring Locus and the peer back to back (servers started afresh each time), Locus first in even rounds and the peer first in odd ones. The ratio is the %s; each round's own ratio is shown for the spread.\n\n",
		benchresults.Machine(), rounds, benchresults.RatioRule)
	fmt.Fprintf(&b, "| what | Locus (median) | peer (median) | ratio | each round |\n|---|---|---|---|---|\n")
	var rows []benchresults.Row
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %.1f %s | %s: %.1f %s | %.2f | %s |\n", r.what, r.locus, r.unit, r.peerName, r.peer, r.unit, r.ratio(), fmtRatios(r.ratios))
		name := strings.SplitN(r.what, ":", 2)[0]
		if strings.Contains(r.what, " connections") {
			name += fmt.Sprintf(" at %d connections", r.clients)
		}
		rows = append(rows, benchresults.Row{What: name + " vs " + r.peerName, Ratio: r.ratio()})
	}
	fmt.Fprintf(&b, "\n%s\n", benchresults.Reading("the peer", rows))
	fmt.Fprintf(&b, "\n### DHCP boot storm\n\nEvery client a MAC never seen before (a rack powering on), a full DORA each, from one socket in the client namespace; offered rates are open loop (clients start on the clock, not after each other), saturation keeps 256 clients in flight. A client without its ACK 2 s after its DISCOVER is dropped (real clients retransmit after 4 s). Each server started afresh with an empty lease file for every trial, %d rounds, alternating which goes first; the table shows the round with the median served rate, the ratio is of served rates. Locus makes each batch's leases durable (fdatasync) before its ACKs leave; dnsmasq rewrites its lease file after each change.\n\n", stormRounds)
	fmt.Fprintf(&b, "| load | Locus served/s | dnsmasq served/s | ratio | each round | Locus: dropped, p50, p99 | dnsmasq: dropped, p50, p99 |\n|---|---|---|---|---|---|---|\n")
	var srows []benchresults.Row
	for _, s := range storms {
		ratio := s.locus.served() / s.peer.served()
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.2f | %s | %.1f %%, %s, %s | %.1f %%, %s, %s |\n", s.level,
			s.locus.served(), s.peer.served(), ratio, fmtRatios(s.ratios),
			s.locus.dropped(), fmtDur(s.locus.p50), fmtDur(s.locus.p99),
			s.peer.dropped(), fmtDur(s.peer.p50), fmtDur(s.peer.p99))
		srows = append(srows, benchresults.Row{What: s.level.String(), Ratio: ratio})
	}
	fmt.Fprintf(&b, "\n%s\n", benchresults.Reading("dnsmasq", srows))
	writeBootStorm(&b, *boot)
	for _, r := range rs {
		if r.note != "" {
			fmt.Fprintf(&b, "\n%s\n", r.note)
		}
	}
	return benchresults.WriteSection(path, "netboot", b.String())
}

// dhcpLoad is a DHCP load generator: one UDP socket on port 68 of the
// client interface speaking for many MACs, replies matched by xid.
type dhcpLoad struct {
	conn    *net.UDPConn
	mu      sync.Mutex
	pending map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
	done    chan struct{}
}

func newDHCPLoad(iface string) (*dhcpLoad, error) {
	conn, err := server4.NewIPv4UDPConn(iface, &net.UDPAddr{Port: dhcpv4.ClientPort})
	if err != nil {
		return nil, fmt.Errorf("dhcp client socket on %s: %w", iface, err)
	}
	l := &dhcpLoad{conn: conn, pending: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}, done: make(chan struct{})}
	go l.read()
	return l, nil
}

func (l *dhcpLoad) read() {
	defer close(l.done)
	buf := make([]byte, 1500)
	for {
		n, _, err := l.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		l.mu.Lock()
		ch := l.pending[m.TransactionID]
		l.mu.Unlock()
		if ch != nil {
			select {
			case ch <- m:
			default:
			}
		}
	}
}

func (l *dhcpLoad) close() { l.conn.Close(); <-l.done }

// exchange sends m and waits up to 2 s for a reply of type want.
func (l *dhcpLoad) exchange(ctx context.Context, m *dhcpv4.DHCPv4, want dhcpv4.MessageType) (*dhcpv4.DHCPv4, error) {
	ch := make(chan *dhcpv4.DHCPv4, 4)
	l.mu.Lock()
	l.pending[m.TransactionID] = ch
	l.mu.Unlock()
	defer func() { l.mu.Lock(); delete(l.pending, m.TransactionID); l.mu.Unlock() }()
	if _, err := l.conn.WriteTo(m.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}); err != nil {
		return nil, err
	}
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case r := <-ch:
			if r.MessageType() == want {
				return r, nil
			}
		case <-t.C:
			return nil, fmt.Errorf("no %s for %s", want, m.ClientHWAddr)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// dora runs one full DISCOVER-OFFER-REQUEST-ACK exchange for mac.
func (l *dhcpLoad) dora(ctx context.Context, mac net.HardwareAddr) error {
	// The broadcast flag: replies must reach this one socket whatever
	// MAC it speaks for (a server unicasts to chaddr otherwise).
	disc, err := dhcpv4.NewDiscovery(mac, dhcpv4.WithBroadcast(true))
	if err != nil {
		return err
	}
	offer, err := l.exchange(ctx, disc, dhcpv4.MessageTypeOffer)
	if err != nil {
		return err
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithBroadcast(true))
	if err != nil {
		return err
	}
	_, err = l.exchange(ctx, req, dhcpv4.MessageTypeAck)
	return err
}
