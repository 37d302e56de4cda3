package proc_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/locus-ssi/locus/internal/testutil"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/locusd"
	"github.com/locus-ssi/locus/services/proc"
)

// cluster is five separate daemon processes on 127.0.78.N, and the
// locus binary their users run.
type cluster struct {
	*testutil.Daemons
	up map[int]clms.State
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	bin, err := testutil.LocusBinary(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &testutil.Daemons{T: t, Bin: bin, Dir: t.TempDir(), Procs: map[int]*exec.Cmd{}, Net: "127.0.78", Extra: map[int][]string{}}
	for n := 1; n <= 5; n++ {
		dir := filepath.Join(d.Dir, fmt.Sprintf("proc%d", n))
		os.MkdirAll(dir, 0o755)
		// Five daemons on one host would each read the host's run queue
		// at another instant (busy with other tests, it is not idle):
		// each node gets an idle load of its own.
		load := filepath.Join(d.Dir, fmt.Sprintf("load%d", n))
		writeIdleLoad(t, load)
		d.Extra[n] = []string{"--job-grace", "1s", "--proc-mount", dir, "--load-proc", load}
	}
	t.Cleanup(func() {
		for n := range d.Procs {
			d.Kill(n)
		}
		// A daemon killed leaves its mount behind, unserved.
		for n := 1; n <= 5; n++ {
			syscall.Unmount(filepath.Join(d.Dir, fmt.Sprintf("proc%d", n)), syscall.MNT_DETACH)
		}
	})
	for n := 1; n <= 5; n++ {
		d.Start(n)
	}
	c := &cluster{Daemons: d, up: map[int]clms.State{1: clms.Up, 2: clms.Up, 3: clms.Up, 4: clms.Up, 5: clms.Up}}
	d.Wait("five daemons Up", c.up)
	return c
}

// writeIdleLoad writes the /proc files of an idle two-CPU node's load
// into dir.
func writeIdleLoad(t *testing.T, dir string) {
	t.Helper()
	files := map[string]string{
		"loadavg": "0.00 0.00 0.00 1/180 4242\n",
		"meminfo": "MemTotal:        2000000 kB\nMemFree:         1500000 kB\nMemAvailable:    1800000 kB\n",
		"uptime":  "1000.00 1900.00\n",
		"cpuinfo": "processor\t: 0\nbogomips\t: 4800.00\n\nprocessor\t: 1\nbogomips\t: 4800.00\n",
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// locus is the CLI run on node n (through its user socket).
func (c *cluster) locus(n int, args ...string) *exec.Cmd {
	cmd := exec.Command(c.Bin, args...)
	cmd.Env = append(os.Environ(), "LOCUS_ENDPOINT="+c.UserSocket(n), "LOCUS_CONTEXT=", "HOME="+c.Dir)
	return cmd
}

// run runs the CLI on node n and returns its stdout, stderr and status.
func (c *cluster) run(t *testing.T, n int, stdin string, args ...string) (string, string, *os.ProcessState) {
	t.Helper()
	cmd := c.locus(n, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	done := make(chan struct{})
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	cmd.Run()
	close(done)
	return out.String(), errb.String(), cmd.ProcessState
}

// alive says whether pid is a live process on this machine.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	p, err := proc.ParseStat(b)
	return err == nil && p.State != "Z"
}

// startJob starts `locus onnode node -- sh -c 'echo $$; exec CMD'` on
// node from and returns the CLI (the stand-in) and the job's local PID.
func (c *cluster) startJob(t *testing.T, from, node int, script string) (*exec.Cmd, int) {
	t.Helper()
	cmd := c.locus(from, "onnode", strconv.Itoa(node), "--", "sh", "-c", "echo $$; "+script)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("job's first line %q: %v %v (stderr %q)", line, err, perr, errb.String())
	}
	t.Cleanup(func() {
		syscall.Kill(-pid, syscall.SIGKILL)
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, pid
}

func gone(pid int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func TestProcessVerbsOnFiveDaemons(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: jobs run as their callers' users")
	}
	c := startCluster(t)

	t.Run("onnode runs on the node and exits as the job did", func(t *testing.T) {
		out, errs, st := c.run(t, 2, "", "onnode", "3", "--", "sh", "-c", "echo node $LOCUS_NODE from $LOCUS_ORIGIN in $PWD")
		if st.ExitCode() != 0 || out != "node 3 from 2 in "+mustWd(t)+"\n" {
			t.Errorf("onnode 3: %q %q %v", out, errs, st)
		}
		for _, cs := range []struct {
			script string
			code   int
			signal syscall.Signal
		}{{"exit 0", 0, 0}, {"exit 1", 1, 0}, {"exit 42", 42, 0}, {"kill -TERM $$", -1, syscall.SIGTERM},
			{"kill -KILL $$", -1, syscall.SIGKILL}, {"kill -SEGV $$", -1, syscall.SIGSEGV}} {
			_, errs, st := c.run(t, 1, "", "onnode", "4", "--", "sh", "-c", cs.script)
			ws := st.Sys().(syscall.WaitStatus)
			if cs.signal != 0 {
				if !ws.Signaled() || ws.Signal() != cs.signal || ws.CoreDump() {
					t.Errorf("%q: the stand-in ended %v, want killed by %v without a core (stderr %q)", cs.script, st, cs.signal, errs)
				}
			} else if ws.Signaled() || ws.ExitStatus() != cs.code {
				t.Errorf("%q: the stand-in ended %v, want exit %d (stderr %q)", cs.script, st, cs.code, errs)
			}
		}
		_, errs, st = c.run(t, 1, "", "onnode", "5", "--", "no-such-command")
		if st.ExitCode() != 127 || !strings.Contains(errs, "node 5: no-such-command: command not found") {
			t.Errorf("a missing command: %v %q", st, errs)
		}
		_, errs, st = c.run(t, 1, "", "onnode", "5", "--", "/etc/passwd")
		if st.ExitCode() != 126 {
			t.Errorf("a command that cannot run: %v %q", st, errs)
		}
		_, errs, st = c.run(t, 1, "", "onnode", "9", "--", "true")
		if st.ExitCode() != 255 || !strings.Contains(errs, "locus: node 9: not Up\n") {
			t.Errorf("onnode to a node that is not Up: %v %q", st, errs)
		}
	})

	t.Run("stdin half-close ends the job's input", func(t *testing.T) {
		out, errs, st := c.run(t, 1, "a\nb\nc\n", "onnode", "2", "--", "wc", "-l")
		if st.ExitCode() != 0 || strings.TrimSpace(out) != "3" {
			t.Errorf("wc -l: %q %q %v", out, errs, st)
		}
	})

	t.Run("a terminal with its window size, resized", func(t *testing.T) {
		cmd := c.locus(1, "onnode", "3", "--", "sh", "-c", "stty size; read x; stty size")
		ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 33, Cols: 111})
		if err != nil {
			t.Fatal(err)
		}
		defer ptmx.Close()
		r := bufio.NewReader(ptmx)
		expectLine(t, r, "33 111")
		pty.Setsize(ptmx, &pty.Winsize{Rows: 44, Cols: 122})
		cmd.Process.Signal(syscall.SIGWINCH)
		time.Sleep(300 * time.Millisecond)
		ptmx.Write([]byte("go\r"))
		expectLine(t, r, "44 122")
		if err := cmd.Wait(); err != nil {
			t.Errorf("the terminal job: %v", err)
		}
	})

	t.Run("Ctrl-C reaches the remote process group", func(t *testing.T) {
		cmd, pid := c.startJob(t, 2, 4, "sleep 60; echo survived")
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ws.Signaled() || ws.Signal() != syscall.SIGINT {
			t.Errorf("the stand-in ended %v (%v), want killed by SIGINT", cmd.ProcessState, err)
		}
		if !gone(pid, 2*time.Second) {
			t.Errorf("the job's shell %d lives on after SIGINT", pid)
		}
	})

	t.Run("a shell's wait, $! and kill %1 work on the stand-in", func(t *testing.T) {
		script := `locus onnode 3 -- sleep 60 & pid=$!; sleep 0.5; kill %1; wait $pid; echo "status $?"
locus onnode 4 -- sh -c 'exit 7' & wait $!; echo "status $?"`
		cmd := exec.Command("bash", "-c", script)
		cmd.Env = append(os.Environ(), "LOCUS_ENDPOINT="+c.UserSocket(2), "PATH="+filepath.Dir(c.Bin)+":"+os.Getenv("PATH"))
		if filepath.Base(c.Bin) != "locus" {
			t.Skip("the locus binary is not named locus")
		}
		out, err := cmd.CombinedOutput()
		if err != nil || string(out) != "status 143\nstatus 7\n" {
			t.Errorf("bash job control: %q %v", out, err)
		}
	})

	t.Run("a vanished stand-in leaves no orphan", func(t *testing.T) {
		cmd, pid := c.startJob(t, 3, 2, "trap '' HUP; sleep 300")
		cmd.Process.Kill() // SIGKILL: it cannot say goodbye
		cmd.Wait()
		// SIGHUP is ignored: SIGKILL after the daemons' grace of 1 s.
		if !gone(pid, 5*time.Second) {
			t.Errorf("the job %d outlived its stand-in", pid)
		}
	})

	t.Run("ps shows every node's processes; kill and where by cluster PID", func(t *testing.T) {
		out, errs, st := c.run(t, 3, "", "onnode", "3", "--detach", "--", "sleep", "123")
		cpid, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
		if st.ExitCode() != 0 || err != nil {
			t.Fatalf("onnode --detach: %q %q %v", out, errs, st)
		}
		node, pid := proc.SplitCPID(cpid)
		defer syscall.Kill(pid, syscall.SIGKILL)
		if node != 3 || !alive(pid) {
			t.Fatalf("detached job %d is node %d pid %d, alive %v", cpid, node, pid, alive(pid))
		}
		out, errs, st = c.run(t, 1, "", "ps", "--output", "json")
		var reply locusd.PSReply
		if err := json.Unmarshal([]byte(out), &reply); err != nil || st.ExitCode() != 0 {
			t.Fatalf("ps: %v %q", err, errs)
		}
		nodes := map[int]int{}
		found := false
		for _, p := range reply.Processes {
			nodes[p.Node]++
			if p.CPID == cpid && p.Node == 3 && p.PID == pid && strings.Join(p.Args, " ") == "sleep 123" && p.User == "root" {
				found = true
			}
		}
		if !found || len(nodes) != 5 || len(reply.Unreachable) > 0 {
			t.Errorf("ps on node 1: job %d found %v; processes by node %v; unreachable %v", cpid, found, nodes, reply.Unreachable)
		}
		out, _, _ = c.run(t, 1, "", "ps", "--nodes", "3", "--command", "sleep 123")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if !strings.HasPrefix(lines[0], "CPID ") || !strings.Contains(out, "\n"+strconv.FormatInt(cpid, 10)+" ") {
			t.Errorf("ps --nodes 3 --command: %q", out)
		}
		for _, l := range lines[1:] {
			if f := strings.Fields(l); len(f) < 9 || f[1] != "3" || !strings.Contains(l, "sleep 123") {
				t.Errorf("ps --nodes 3 --command 'sleep 123' printed %q", l)
			}
		}
		out, errs, st = c.run(t, 4, "", "where", "3:"+strconv.Itoa(pid))
		if st.ExitCode() != 0 || out != "3\n" {
			t.Errorf("where: %q %q %v", out, errs, st)
		}
		_, errs, st = c.run(t, 2, "", "kill", "-9", strconv.FormatInt(cpid, 10))
		if st.ExitCode() != 0 || !gone(pid, 2*time.Second) {
			t.Errorf("kill -9 from node 2: %v %q, gone %v", st, errs, !alive(pid))
		}
		_, errs, st = c.run(t, 2, "", "kill", "3:"+strconv.Itoa(pid))
		if st.ExitCode() != 1 || !strings.Contains(errs, "no such process") {
			t.Errorf("kill of a process that is gone: %v %q", st, errs)
		}
		_, errs, st = c.run(t, 2, "", "where", strconv.FormatInt(cpid, 10))
		if st.ExitCode() != 1 || !strings.Contains(errs, "no such process") {
			t.Errorf("where of a process that is gone: %v %q", st, errs)
		}
		_, errs, st = c.run(t, 2, "", "kill", "garbage")
		if st.ExitCode() != 1 || !strings.Contains(errs, "cluster PID") {
			t.Errorf("kill garbage: %v %q", st, errs)
		}
	})

	t.Run("a user runs as itself and signals only its own", func(t *testing.T) {
		// The daemons' sockets and the binary, reachable by nobody.
		for p := c.Dir; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
			os.Chmod(p, 0o755)
		}
		for p := filepath.Dir(c.Bin); p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
			os.Chmod(p, 0o755)
		}
		os.Chmod(filepath.Join(c.Dir, "run"), 0o755)
		asNobody := func(cmd *exec.Cmd) *exec.Cmd {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			cmd.Dir = "/"
			return cmd
		}
		cmd := asNobody(c.locus(2, "onnode", "4", "--", "id", "-u"))
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "65534" {
			t.Errorf("nobody's job runs as %q (%v)", out, err)
		}
		root, rootPid := c.startJob(t, 1, 4, "exec sleep 60")
		cmd = asNobody(c.locus(2, "kill", "4:"+strconv.Itoa(rootPid)))
		out, err = cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "not permitted") || !alive(rootPid) {
			t.Errorf("nobody killing root's job: %q %v, alive %v", out, err, alive(rootPid))
		}
		root.Process.Kill()
		root.Wait()
		// The single-system view, in a user namespace of nobody's own
		// (where the kernel lets users make one).
		if b, _ := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); strings.TrimSpace(string(b)) == "0" {
			t.Log("this kernel lets no user make a user namespace: nobody's ssi is not tried")
			return
		}
		cmd = asNobody(c.locus(2, "ssi", "--proc", filepath.Join(c.Dir, "proc2"), "--", "ps", "-eo", "pid,user,cmd"))
		out, err = cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "65534") && !strings.Contains(string(out), "nobody") {
			t.Errorf("nobody's ssi ps: %v\n%s", err, out)
		}
	})

	t.Run("no identity, no job", func(t *testing.T) {
		cl := locusd.NewClient(c.Addr(2)+":7470", &tls.Config{InsecureSkipVerify: true})
		defer cl.Close()
		if _, err := cl.OpenJob(context.Background()); err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("a job without a credential: %v", err)
		}
		var res []locusd.KillResult
		if err := cl.Post(context.Background(), "/v1/proc/kill", locusd.KillRequest{Signal: 9, Targets: []locusd.KillTarget{{Node: 1, PID: 1}}}, &res); err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("a kill without a credential: %v", err)
		}
	})

	t.Run("onall labels every Up node's lines and exits with the highest status", func(t *testing.T) {
		out, errs, st := c.run(t, 1, "", "onall", "--", "sh", "-c", "echo hello from $LOCUS_NODE; exit $((LOCUS_NODE % 3))")
		for n := 1; n <= 5; n++ {
			if !strings.Contains(out, fmt.Sprintf("node%d: hello from %d\n", n, n)) {
				t.Errorf("onall output lacks node %d's line:\n%s", n, out)
			}
		}
		if st.ExitCode() != 2 || !strings.Contains(errs, "node[2,5]: exited with exit code 2") || !strings.Contains(errs, "node[1,4]: exited with exit code 1") {
			t.Errorf("onall status %v, stderr %q", st, errs)
		}
		out, _, st = c.run(t, 2, "x\ny\n", "onall", "--nodes", "2-3", "--", "wc", "-l")
		if st.ExitCode() != 0 || !strings.Contains(out, "node2: 2\n") || !strings.Contains(out, "node3: 2\n") || strings.Count(out, "\n") != 2 {
			t.Errorf("onall --nodes 2-3 with stdin: %q %v", out, st)
		}
	})

	t.Run("a node lost mid-job ends its stand-in at once with 255", func(t *testing.T) {
		cmd, pid := c.startJob(t, 1, 5, "exec sleep 60")
		start := time.Now()
		c.Kill(5)
		syscall.Kill(pid, syscall.SIGKILL) // the node's processes die with it
		err := cmd.Wait()
		took := time.Since(start)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 255 {
			t.Errorf("the stand-in of a lost node's job: %v, want exit 255", err)
		}
		if took > 3*time.Second {
			t.Errorf("the stand-in took %v to end after its node died", took)
		}
		t.Logf("stand-in ended %v after its node was killed", took.Round(time.Millisecond))
		c.up[5] = clms.Down
		c.Wait("node 5 Down", c.up)
	})

	t.Run("fast spreads a burst of launches over the idle nodes", func(t *testing.T) {
		counts := map[int]int{}
		for range 100 {
			_, errs, st := c.run(t, 1, "", "fast", "-v", "--", "true")
			var n int
			if _, err := fmt.Sscanf(errs, "locus: fast: node %d", &n); err != nil || st.ExitCode() != 0 {
				t.Fatalf("fast -v: %q %v", errs, st)
			}
			counts[n]++
		}
		t.Logf("100 fast launches from node 1: %v", counts)
		for n := 1; n <= 4; n++ {
			if counts[n] < 22 || counts[n] > 28 {
				t.Errorf("node %d got %d of 100 launches, want 25 ± 3 (%v)", n, counts[n], counts)
			}
		}
		if counts[5] != 0 {
			t.Errorf("node 5, Down, got %d launches", counts[5])
		}
	})

	t.Run("unmodified procps reads the clusterwide /proc", func(t *testing.T) {
		out, errs, st := c.run(t, 2, "", "onnode", "3", "--detach", "--", "sleep", "321")
		cpid, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
		if err != nil || st.ExitCode() != 0 {
			t.Fatalf("onnode --detach: %q %q", out, errs)
		}
		_, pid := proc.SplitCPID(cpid)
		defer syscall.Kill(pid, syscall.SIGKILL)
		procDir := filepath.Join(c.Dir, "proc1")
		out, errs, st = c.run(t, 1, "", "ssi", "--proc", procDir, "--", "ps", "-eo", "pid,ppid,user,stat,lstart,etime,%cpu,cmd")
		if st.ExitCode() != 0 {
			t.Fatalf("ps -eo through the clusterwide /proc: %v %q", st, errs)
		}
		byNode := map[int]int{}
		var line string
		for _, l := range strings.Split(out, "\n")[1:] {
			f := strings.Fields(l)
			if len(f) < 10 {
				continue
			}
			v, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				t.Fatalf("ps printed PID %q: %s", f[0], l)
			}
			n, _ := proc.SplitCPID(v)
			byNode[n]++
			if v == cpid {
				line = l
			}
		}
		ups := 0
		for _, st := range c.up {
			if st == clms.Up {
				ups++
			}
		}
		if len(byNode) != ups || !strings.Contains(line, "sleep 321") || !strings.Contains(line, "root") {
			t.Errorf("ps -e over the clusterwide /proc: processes by node %v; node 3's job: %q\n%s", byNode, line, errs)
		}
		// Its parent is node 3's daemon, by cluster PID.
		f := strings.Fields(line)
		if ppid, _ := strconv.ParseInt(f[1], 10, 64); len(f) < 2 || ppid>>proc.PIDBits != 3 {
			t.Errorf("the job's PPID %v is not a node 3 CPID", f)
		}
		for _, args := range [][]string{{"ps", "aux"}, {"top", "-b", "-n1"}} {
			out, errs, st := c.run(t, 4, "", append([]string{"ssi", "--proc", filepath.Join(c.Dir, "proc4"), "--"}, args...)...)
			if st.ExitCode() != 0 || !strings.Contains(out, strconv.FormatInt(cpid, 10)) {
				t.Errorf("%v over the clusterwide /proc: %v %q\n%s", args, st, errs, out)
			}
		}
		b, err := os.ReadFile(filepath.Join(procDir, "loadavg"))
		if err != nil || len(strings.Fields(string(b))) != 5 {
			t.Errorf("the cluster's loadavg: %q %v", b, err)
		}
		b, err = os.ReadFile(filepath.Join(procDir, "nodes", "3", "uptime"))
		if err != nil || len(b) == 0 {
			t.Errorf("node 3's uptime: %q %v", b, err)
		}
		if target, err := os.Readlink(filepath.Join(procDir, "self")); err != nil || target != proc.FormatCPID(1, os.Getpid()) {
			t.Errorf("self is %q (%v), want this process's CPID on node 1", target, err)
		}
	})

	t.Run("loads lists the Up nodes", func(t *testing.T) {
		out, errs, st := c.run(t, 3, "", "loads", "--output", "json")
		var ls []proc.Load
		if err := json.Unmarshal([]byte(out), &ls); err != nil || st.ExitCode() != 0 {
			t.Fatalf("loads: %v %q", err, errs)
		}
		var nodes []int
		for _, l := range ls {
			nodes = append(nodes, l.Node)
			if l.NCPU < 1 || l.Speed <= 0 || l.MemTotal <= 0 || l.AgeMS > 4000 {
				t.Errorf("node %d's load: %+v", l.Node, l)
			}
		}
		if fmt.Sprint(nodes) != "[1 2 3 4]" {
			t.Errorf("loads on node 3 lists nodes %v, want the Up ones", nodes)
		}
	})
}

func expectLine(t *testing.T, r *bufio.Reader, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		line, err := r.ReadString('\n')
		if strings.TrimSpace(line) == want {
			return
		}
		if err != nil {
			t.Fatalf("terminal: %v before %q", err, want)
		}
	}
	t.Fatalf("terminal: no %q", want)
}

func mustWd(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}
