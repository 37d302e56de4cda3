// Command proc-bench measures Locus's process verbs against Debian's
// openssh, side by side in one run on loopback:
//
//   - `locus onnode 2 -- true` from node 1 (a loopback cluster of
//     separate daemons, mutual TLS between them) against `ssh host true`
//     with an ed25519 key, as a fresh connection and through a
//     ControlMaster (how ssh's users tune it for many commands), each
//     round alternating which side goes first;
//   - `fast -- true` launches sustained per minute on 4 nodes;
//   - `locus ps` of about 10,000 processes over 8 nodes, against the
//     pdsh way of asking 8 machines: 8 parallel `ps -e` through
//     ControlMaster connections.
//
// It writes medians, p99s and ratios to bench/RESULTS.md.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/locus-ssi/locus/internal/benchresults"
	"github.com/locus-ssi/locus/internal/testutil"
	"github.com/locus-ssi/locus/services/clms"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "proc-bench:", err)
		os.Exit(1)
	}
}

// tb is what the loopback cluster needs of its user: a benchmark ends at
// the first failure.
type tb struct{ out io.Writer }

func (tb) Helper()                      {}
func (tb) Fatal(args ...any)            { panic(fmt.Sprint(args...)) }
func (tb) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }
func (t tb) Logf(f string, args ...any) { fmt.Fprintf(t.out, f+"\n", args...) }
func ms(d time.Duration) float64        { return float64(d) / float64(time.Millisecond) }
func since(start time.Time) float64     { return ms(time.Since(start)) }
func timeCmd(name string, args ...string) (float64, error) {
	start := time.Now()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return since(start), nil
}

func percentile(v []float64, p float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := int(p * float64(len(s)-1))
	return s[i]
}

type options struct {
	locus, results string
	rounds, runs   int
	fastFor        time.Duration
	procs          int
}

func run(args []string, stdout io.Writer) (err error) {
	fs := flag.NewFlagSet("proc-bench", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.locus, "locus", "bin/locus", "the locus binary")
	fs.StringVar(&o.results, "results", "", "bench/RESULTS.md to update (empty: print only)")
	fs.IntVar(&o.rounds, "rounds", 5, "rounds, alternating the sides")
	fs.IntVar(&o.runs, "runs", 40, "round trips of each side in a round")
	fs.DurationVar(&o.fastFor, "fast-for", 15*time.Second, "how long fast launches are sustained")
	fs.IntVar(&o.procs, "procs", 1250, "processes started on the host for ps (every loopback node sees them all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.locus, err = filepath.Abs(o.locus); err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	base, err := os.MkdirTemp("/var/tmp", "locus-bench-proc-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	d := &testutil.Daemons{T: tb{stdout}, Bin: o.locus, Dir: filepath.Join(base, "cluster"), Procs: map[int]*exec.Cmd{}, Net: "127.0.80"}
	os.Mkdir(d.Dir, 0o755)
	defer func() {
		for n := range d.Procs {
			d.Kill(n)
		}
	}()
	fmt.Fprintln(stdout, "proc-bench: starting 4 daemons on 127.0.80.1-4")
	up := map[int]clms.State{}
	for n := 1; n <= 4; n++ {
		d.Start(n)
		up[n] = clms.Up
	}
	d.Wait("4 daemons Up", up)
	// Both sides run as one unprivileged user whose shell is sh (root's
	// shell here may read a long .bashrc for every ssh command).
	u, dropUser, err := benchUser()
	if err != nil {
		return err
	}
	defer dropUser()
	for _, p := range []string{base, d.Dir} {
		os.Chmod(p, 0o755)
	}
	ssh, err := startSSH(base, d.Addr(2), u.Username)
	if err != nil {
		return err
	}
	defer ssh.stop()
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	onnode := filepath.Join(filepath.Dir(o.locus), "onnode")
	if _, err := os.Stat(onnode); err != nil {
		return fmt.Errorf("the lean onnode beside %s (make build makes it): %w", o.locus, err)
	}
	// asUser runs bin as argv0 through node 1's user socket, as the
	// benchmark's user, and times it.
	asUser := func(bin, argv0 string, args ...string) (float64, error) {
		cmd := exec.Command(bin, args...)
		cmd.Args[0] = argv0
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		cmd.Env = append(os.Environ(), "LOCUS_ENDPOINT="+d.UserSocket(1), "LOCUS_CONTEXT=", "HOME=/")
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("%s %s: %v: %s", argv0, strings.Join(args, " "), err, out)
		}
		return since(start), nil
	}
	// lean is the image's onnode or fast (argv0); locus the whole binary.
	lean := func(argv0 string, args ...string) (float64, error) { return asUser(onnode, argv0, args...) }
	locus := func(args ...string) (float64, error) { return asUser(o.locus, "locus", args...) }
	// Warm up every side once (page cache, ssh's known_hosts).
	for _, f := range []func() (float64, error){
		func() (float64, error) { return lean("onnode", "2", "--", "true") },
		func() (float64, error) { return locus("onnode", "2", "--", "true") },
		func() (float64, error) { return ssh.fresh("true") },
		func() (float64, error) { return ssh.master("true") },
	} {
		if _, err := f(); err != nil {
			return err
		}
	}
	sides := []struct {
		name string
		f    func() (float64, error)
		t    []float64
	}{
		{name: "onnode", f: func() (float64, error) { return lean("onnode", "2", "--", "true") }},
		{name: "locus onnode", f: func() (float64, error) { return locus("onnode", "2", "--", "true") }},
		{name: "ssh, fresh connection", f: func() (float64, error) { return ssh.fresh("true") }},
		{name: "ssh, ControlMaster", f: func() (float64, error) { return ssh.master("true") }},
	}
	for r := range o.rounds {
		for i := range sides {
			s := &sides[(i+r)%len(sides)] // each round, another side first
			for range o.runs {
				t, err := s.f()
				if err != nil {
					return err
				}
				s.t = append(s.t, t)
			}
		}
		fmt.Fprintf(stdout, "proc-bench: round %d/%d: p50 onnode %.1f ms, locus onnode %.1f ms, ssh fresh %.1f ms, ssh ControlMaster %.1f ms\n", r+1, o.rounds,
			benchresults.Median(sides[0].t), benchresults.Median(sides[1].t), benchresults.Median(sides[2].t), benchresults.Median(sides[3].t))
	}

	// fast launches, sustained, from 4 launchers on node 1.
	fmt.Fprintf(stdout, "proc-bench: fast -- true from 4 launchers for %s\n", o.fastFor)
	var launched atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(o.fastFor)
	var ferr atomic.Value
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if _, err := lean("fast", "--", "true"); err != nil {
					ferr.Store(err)
					return
				}
				launched.Add(1)
			}
		}()
	}
	wg.Wait()
	if e, _ := ferr.Load().(error); e != nil {
		return e
	}
	perMin := float64(launched.Load()) / o.fastFor.Minutes()

	// ps of about 10,000 processes over 8 nodes.
	fmt.Fprintln(stdout, "proc-bench: starting daemons 5-8 and", o.procs, "sleeping processes")
	for n := 5; n <= 8; n++ {
		d.Start(n)
		up[n] = clms.Up
	}
	d.Wait("8 daemons Up", up)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range o.procs {
		if err := exec.CommandContext(ctx, "sleep", "3600").Start(); err != nil {
			return err
		}
	}
	count, err := psCount(o.locus, d.UserSocket(1))
	if err != nil {
		return err
	}
	var psLocus, psSSH []float64
	for r := range o.rounds * 2 {
		err := benchresults.Alternate(r, func() error {
			t, err := locus("ps", "--output", "json")
			psLocus = append(psLocus, t)
			return err
		}, func() error {
			t, err := ssh.fanOut(8, "ps", "-e", "-o", "pid,ppid,user,stat,pcpu,rss,lstart,args")
			psSSH = append(psSSH, t)
			return err
		})
		if err != nil {
			return err
		}
	}
	cancel()

	body := report(o, sides[0].t, sides[1].t, sides[2].t, sides[3].t, perMin, count, psLocus, psSSH)
	fmt.Fprint(stdout, body)
	if o.results != "" {
		return benchresults.WriteSection(o.results, "proc", body)
	}
	return nil
}

// psCount is how many processes locus ps lists.
func psCount(locus, sock string) (int, error) {
	cmd := exec.Command(locus, "ps")
	cmd.Env = append(os.Environ(), "LOCUS_ENDPOINT="+sock, "LOCUS_CONTEXT=")
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("locus ps: %w", err)
	}
	return bytes.Count(out, []byte("\n")) - 1, nil
}

func report(o options, onnode, full, fresh, master []float64, perMin float64, count int, psLocus, psSSH []float64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Remote execution and the process table: Locus against openssh\n\n%s. `make bench-proc`: a loopback cluster of separate `locus daemon` processes (mutual TLS between them), Debian's openssh 9.2 (`sshd` on the same loopback, ed25519 key, no PAM) on the other side; both run as one unprivileged user whose shell is `sh`. %d rounds of %d round trips a side, each round another side first; %s.\n\n",
		benchresults.Machine(), o.rounds, o.runs, benchresults.RatioRule)
	b.WriteString("| round trip of `true` on another node | p50 ms | p99 ms | Locus's ratio (p50) |\n|---|---|---|---|\n")
	m := benchresults.Median(onnode)
	fmt.Fprintf(&b, "| `onnode 2 -- true` (the image's onnode, cmd/onnode) | %.1f | %.1f | |\n", m, percentile(onnode, 0.99))
	fmt.Fprintf(&b, "| `locus onnode 2 -- true` (the whole locus binary) | %.1f | %.1f | |\n", benchresults.Median(full), percentile(full, 0.99))
	rows := []benchresults.Row{}
	for _, s := range []struct {
		name string
		v    []float64
	}{{"`ssh host true`, fresh connection", fresh}, {"`ssh host true`, ControlMaster (ssh's users' tuning)", master}} {
		r := benchresults.Median(s.v) / m
		fmt.Fprintf(&b, "| %s | %.1f | %.1f | %.2f |\n", s.name, benchresults.Median(s.v), percentile(s.v, 0.99), r)
		rows = append(rows, benchresults.Row{What: strings.Split(s.name, ", ")[1], Ratio: r})
	}
	rFresh, rMaster := rows[0].Ratio, rows[1].Ratio
	fmt.Fprintf(&b, "\nThe ratios are onnode's. Goals: at least 10× a fresh ssh (%.1f×: %s) and 2× ssh with ControlMaster (%.1f×: %s).\n\n",
		rFresh, met(rFresh >= 10), rMaster, met(rMaster >= 2))
	fmt.Fprintf(&b, "| throughput and size | measured | goal |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| `fast -- true` launches sustained, 4 launchers on node 1, 4 nodes | %.0f / min | ≥ 1,000 / min (%s) |\n", perMin, met(perMin >= 1000))
	pl, ps := benchresults.Median(psLocus), benchresults.Median(psSSH)
	fmt.Fprintf(&b, "| `locus ps --output json`, %d processes over 8 nodes, p50 | %.0f ms | < 500 ms (%s) |\n", count, pl, met(pl < 500))
	fmt.Fprintf(&b, "| the same with 8 parallel `ssh host ps -e -o ...` through ControlMasters (pdsh's way), p50 | %.0f ms | ratio %.2f |\n", ps, ps/pl)
	b.WriteString("\n" + benchresults.Reading("openssh", append(rows, benchresults.Row{What: "ps over 8 nodes", Ratio: ps / pl})) + "\n")
	return b.String()
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

// benchUser is the user both sides run as: locusbench (made if missing,
// removed again by the returned func), shell /bin/sh.
func benchUser() (*user.User, func(), error) {
	if u, err := user.Lookup("locusbench"); err == nil {
		return u, func() {}, nil
	}
	// Password "*": none, but not a locked account (sshd refuses those).
	if out, err := exec.Command("useradd", "--system", "-M", "-d", "/nonexistent", "-s", "/bin/sh", "-p", "*", "locusbench").CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("useradd locusbench: %v: %s", err, out)
	}
	u, err := user.Lookup("locusbench")
	if err != nil {
		return nil, nil, err
	}
	return u, func() { exec.Command("userdel", "locusbench").Run() }, nil
}

// sshPeer is Debian's sshd on loopback and a key for it.
type sshPeer struct {
	dir, host, user string
	port            int
	cmd             *exec.Cmd
	log             bytes.Buffer // sshd's (its readiness probe's "connection closed" too)
	masters         []string
}

func startSSH(base, host, login string) (*sshPeer, error) {
	dir := filepath.Join(base, "ssh")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for _, k := range []string{"host", "client"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "client.pub"))
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o644)
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := fmt.Sprintf("Port %d\nListenAddress %s\nHostKey %s/host\nAuthorizedKeysFile %s/authorized_keys\nPidFile %s/sshd.pid\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nLogLevel ERROR\nMaxSessions 64\nMaxStartups 64\n",
		port, host, dir, dir, dir)
	os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o600)
	os.MkdirAll("/run/sshd", 0o755)
	p := &sshPeer{dir: dir, host: host, port: port, user: login}
	p.cmd = exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	p.cmd.Stderr = &p.log
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("sshd (Debian package openssh-server): %w", err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", net.JoinHostPort(host, fmt.Sprint(port))); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("sshd does not listen on %s:%d: %s", host, port, p.log.String())
		}
	}
	return p, nil
}

func (p *sshPeer) args(extra ...string) []string {
	a := []string{"-F", "/dev/null", "-i", filepath.Join(p.dir, "client"), "-p", fmt.Sprint(p.port), "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile=" + filepath.Join(p.dir, "known_hosts"), "-o", "StrictHostKeyChecking=accept-new"}
	return append(a, extra...)
}

func (p *sshPeer) fresh(cmd ...string) (float64, error) {
	return timeCmd("ssh", p.args(append([]string{p.user + "@" + p.host}, cmd...)...)...)
}

// master runs cmd through the ControlMaster at socket cm0, starting it
// on first use.
func (p *sshPeer) master(cmd ...string) (float64, error) { return p.through(0, cmd...) }

func (p *sshPeer) through(i int, cmd ...string) (float64, error) {
	cm := filepath.Join(p.dir, fmt.Sprintf("cm%d", i))
	if !slices.Contains(p.masters, cm) {
		if out, err := exec.Command("ssh", p.args("-o", "ControlMaster=yes", "-o", "ControlPath="+cm, "-o", "ControlPersist=yes", "-fN", p.user+"@"+p.host)...).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("ssh ControlMaster: %v: %s", err, out)
		}
		p.masters = append(p.masters, cm)
	}
	return timeCmd("ssh", p.args(append([]string{"-o", "ControlPath=" + cm, p.user + "@" + p.host}, cmd...)...)...)
}

// fanOut runs cmd through n ControlMasters at once, as pdsh asks n
// machines, and returns the time until the last answered.
func (p *sshPeer) fanOut(n int, cmd ...string) (float64, error) {
	for i := range n {
		if _, err := p.through(i+1, "true"); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := p.through(i+1, cmd...)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			return 0, err
		}
	}
	return since(start), nil
}

func (p *sshPeer) stop() {
	for _, cm := range p.masters {
		exec.Command("ssh", p.args("-o", "ControlPath="+cm, "-O", "exit", p.user+"@"+p.host)...).Run()
	}
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}
