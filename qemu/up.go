package qemu

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// UpOptions configure Up.
type UpOptions struct {
	Config ClusterConfig
	// Self is the locus binary; the supervisor runs as
	// `Self qemu supervise --state-dir DIR`.
	Self    string
	Timeout time.Duration
	// Out receives the live table; Live redraws it in place (a terminal).
	Out  io.Writer
	Live bool
	// OnUp, if set, is called (from Up's loop) the first time each node
	// is Up: the caller can reach node 1 before the others have booted.
	OnUp func(node int)
}

// Up starts the cluster under a detached supervisor and waits until every
// node is Up, showing each node's stage as it goes. On failure or timeout
// it takes down what it started and says which node stopped where.
func Up(ctx context.Context, o UpOptions) ([]NodeStatus, error) {
	dir := o.Config.Dir
	if _, err := RemoteStatus(ctx, dir); err == nil {
		return nil, fmt.Errorf("qemu: cluster in %s is already running (locus qemu down first)", dir)
	}
	c, err := NewCluster(o.Config)
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath(qemuBinary); err != nil {
		return nil, fmt.Errorf("qemu: %s not found: install it with `make deps` (apt-get install qemu-system-x86)", qemuBinary)
	}
	if err := c.SaveConfig(); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "supervisor.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(o.Self, "qemu", "supervise", "--state-dir", dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu: start supervisor: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fail := func(err error) ([]NodeStatus, error) {
		Down(context.Background(), dir)
		return nil, err
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	deadline := time.Now().Add(o.Timeout)
	start := time.Now()
	lastDrawn := ""
	wasUp := map[int]bool{}
	for {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "supervisor.log"))
			return nil, fmt.Errorf("qemu: supervisor exited (%v): %s", err, lastLine(string(b)))
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
		st, err := RemoteStatus(ctx, dir)
		if err != nil {
			if time.Since(start) > 10*time.Second {
				return fail(err)
			}
			continue
		}
		table := FormatTable(st, time.Now())
		if o.Out != nil {
			switch {
			case o.Live && lastDrawn != "":
				fmt.Fprintf(o.Out, "\x1b[%dA\x1b[J%s", strings.Count(lastDrawn, "\n"), table)
			case o.Live:
				fmt.Fprint(o.Out, table)
			default:
				if s := stagesLine(st); s != lastDrawn {
					fmt.Fprintf(o.Out, "[%5.1fs] %s", time.Since(start).Seconds(), s)
					table = s
				} else {
					table = lastDrawn
				}
			}
			lastDrawn = table
		}
		up, failed := 0, []string{}
		for _, s := range st {
			switch s.Stage {
			case StageUp:
				up++
				if o.OnUp != nil && !wasUp[s.Number] {
					o.OnUp(s.Number)
				}
				wasUp[s.Number] = true
			case StageFailed, StageStopped:
				failed = append(failed, fmt.Sprintf("node %d %s after phase %q: %s", s.Number, s.Stage, s.Phase, s.Detail))
			}
		}
		if len(failed) > 0 {
			return fail(fmt.Errorf("qemu: %s (serial logs in %s/node*/serial.log)", strings.Join(failed, "; "), dir))
		}
		if up == len(st) {
			return st, nil
		}
		if time.Now().After(deadline) {
			var late []string
			for _, s := range st {
				if s.Stage != StageUp {
					where := string(s.Stage)
					if s.Phase != "" {
						where += ", last phase done: " + s.Phase
					}
					late = append(late, fmt.Sprintf("node %d (%s)", s.Number, where))
				}
			}
			return fail(fmt.Errorf("qemu: not Up after %s: %s (serial logs in %s)", o.Timeout, strings.Join(late, ", "), dir))
		}
	}
}

// stagesLine is a one-line summary for logs that are not a terminal.
func stagesLine(st []NodeStatus) string {
	var parts []string
	for _, s := range st {
		p := fmt.Sprintf("node%d=%s", s.Number, s.Stage)
		if s.Stage == StageInit && s.Phase != "" {
			p += "(" + s.Phase + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " ") + "\n"
}

// FormatTable renders node statuses as a table.
func FormatTable(st []NodeStatus, now time.Time) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tSTAGE\tPHASE\tRUNLEVEL\tELAPSED\tUP AFTER\tGUEST UP\tPID")
	for _, s := range st {
		elapsed, upAfter, guest, pid, rl := "-", "-", "-", "-", "-"
		if !s.Started.IsZero() && s.PID != 0 {
			elapsed = fmt.Sprintf("%.1fs", now.Sub(s.Started).Seconds())
		}
		if s.Stage == StageUp {
			upAfter = fmt.Sprintf("%.1fs", time.Duration(s.UpAfter).Seconds())
			guest = fmt.Sprintf("%.1fs", s.GuestUp)
			rl = strconv.Itoa(s.RunLevel)
		}
		if s.PID != 0 {
			pid = strconv.Itoa(s.PID)
		}
		phase := s.Phase
		if phase == "" {
			phase = "-"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Number, s.Stage, phase, rl, elapsed, upAfter, guest, pid)
	}
	w.Flush()
	return b.String()
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// Down stops the cluster in dir: the supervisor kills its VMs and exits.
// If the supervisor does not answer but its pid file names a live
// supervisor, that process is killed.
func Down(ctx context.Context, dir string) error {
	pid := 0
	if b, err := os.ReadFile(PIDFile(dir)); err == nil {
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err := RemoteOp(cctx, dir, "down", 0)
	if pid > 0 {
		for i := 0; i < 100 && syscall.Kill(pid, 0) == nil && isSupervisor(pid, dir); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		if syscall.Kill(pid, 0) == nil && isSupervisor(pid, dir) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		os.Remove(PIDFile(dir))
		os.Remove(controlPath(dir))
		return nil
	}
	return err
}

// isSupervisor checks that pid is a locus supervisor for dir, so Down
// never signals a recycled pid.
func isSupervisor(pid int, dir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(string(b), "\x00")
	return len(args) > 3 && strings.Contains(string(b), "supervise") && strings.Contains(string(b), dir)
}
