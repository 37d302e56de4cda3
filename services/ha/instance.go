package ha

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/locus-ssi/locus/services/events"
	"golang.org/x/sys/unix"
)

// InstanceStatus is what a node reports of an instance it runs.
type InstanceStatus struct {
	Service  string `json:"service"`
	Instance string `json:"instance"`
	Node     int    `json:"node"`
	Gen      uint64 `json:"gen"`
	// State: starting, running, failed, restarting, stopping, stopped,
	// stop-failed (it may still run: it is not moved until the node is
	// fenced), moving (failed here; the master moves it).
	State    string    `json:"state"`
	PID      int       `json:"pid,omitempty"`
	Restarts int       `json:"restarts"`
	Since    time.Time `json:"since"`
	// Last is the last failure or action result worth showing.
	Last string `json:"last,omitempty"`
}

// failure is why an instance stopped being healthy.
type failure struct {
	rc       int
	recovery Recovery
	reason   string
}

// instance supervises one instance on this node: start, watch,
// restart in place, stop.
type instance struct {
	d    *def
	id   string
	gen  uint64
	node int
	env  *runEnv
	logs *ring

	cancel context.CancelFunc
	done   chan struct{}
	// stopOK is set once the instance is stopped for good (false: the
	// stop failed, so it may still run).
	stopOK bool

	mu sync.Mutex
	st InstanceStatus
}

// runEnv is what instances need from their node.
type runEnv struct {
	command func(argv []string) (*exec.Cmd, error)
	report  func(ctx context.Context, r failureRequest) failureReply
	ocfRoot string
	publish func(events.Event) // nil: no feed
}

func (in *instance) set(state, last string) {
	in.mu.Lock()
	prev := in.st.State
	in.st.State, in.st.Since = state, time.Now()
	if last != "" {
		in.st.Last = last
	}
	pid := in.st.PID
	in.mu.Unlock()
	if in.env.publish == nil || state == prev {
		return
	}
	// The node's event feed has each instance's start and stop, so
	// "never on two nodes at once" can be read from the feeds.
	e := events.Event{Source: events.SourceLocusd, Name: in.d.Name,
		Attrs: map[string]string{events.AttrInstance: in.id, events.AttrGen: strconv.FormatUint(in.gen, 10)}}
	switch state {
	case "running":
		e.Kind = events.ServiceStarted
		if pid > 0 {
			e.Attrs[events.AttrPID] = strconv.Itoa(pid)
		}
	case "stopped":
		e.Kind = events.ServiceStopped
	default:
		return
	}
	in.env.publish(e)
}

func (in *instance) status() InstanceStatus {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.st
}

func (in *instance) agent() Agent {
	return Agent{Provider: in.d.Provider, Type: in.d.Type, Instance: in.d.Name, Params: in.d.Params, OCFRoot: in.env.ocfRoot, Command: in.env.command}
}

// run supervises until ctx ends, then stops the instance.
func (in *instance) run(ctx context.Context) {
	defer close(in.done)
	in.st = InstanceStatus{Service: in.d.Name, Instance: in.id, Node: in.node, Gen: in.gen}
	var proc *running
	for attempt := 0; ; attempt++ {
		if attempt > 0 && in.d.RestartDelay > 0 {
			select {
			case <-ctx.Done():
				in.stopOK = true
				in.set("stopped", "")
				return
			case <-time.After(in.d.RestartDelay):
			}
		}
		var f *failure
		proc, f = in.start(ctx, attempt == 0)
		if f == nil {
			in.set("running", "")
			f = in.watch(ctx, proc)
		}
		if ctx.Err() != nil {
			in.stop(proc)
			return
		}
		in.logs.add("locus", fmt.Sprintf("failed: %s", f.reason))
		in.set("failed", f.reason)
		if !in.stop(proc) {
			return // it may still run: not restarted, not moved
		}
		reply := in.env.report(ctx, failureRequest{Service: in.d.Name, Instance: in.id, Gen: in.gen, Node: in.node, RC: f.rc, Recovery: f.recovery, Reason: f.reason})
		if !reply.Restart {
			in.logs.add("locus", reply.Why)
			in.set("moving", reply.Why)
			<-ctx.Done()
			in.stopOK = true
			return
		}
		in.mu.Lock()
		in.st.Restarts++
		in.mu.Unlock()
		in.set("restarting", f.reason)
	}
}

// running is a started instance: a command's process, or nothing (an
// agent's daemons are the agent's).
type running struct {
	cmd    *exec.Cmd
	exited chan error
	gone   bool // its exit was seen
}

// start starts the instance. An agent is probed first (on the first
// attempt): one found running, after a daemon restart, is adopted.
func (in *instance) start(ctx context.Context, probe bool) (*running, *failure) {
	in.set("starting", "")
	if in.d.ocf() {
		a := in.agent()
		if probe {
			r := a.Run(ctx, "monitor", in.d.MonitorTimeout, 0)
			in.logs.add("ocf", "probe: "+r.String())
			if r.RC == OCFSuccess {
				return &running{}, nil
			}
			if r.RC != OCFNotRunning {
				// Pacemaker's probe: 5 means it cannot run here.
				return nil, &failure{r.RC, max(Classify(r.RC), Soft), "probe " + r.String()}
			}
		}
		r := a.Run(ctx, "start", in.timeout(in.d.StartTimeout), 0)
		in.logAction(r)
		if r.RC != OCFSuccess {
			// Pacemaker's start-failure-is-fatal: the node is banned.
			return nil, &failure{r.RC, max(Classify(r.RC), Hard), r.String()}
		}
		return &running{}, nil
	}
	cmd, err := in.env.command(in.d.Command)
	if err != nil {
		return nil, &failure{OCFErrInstalled, Hard, err.Error()}
	}
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/", "LOCUS_SERVICE=" + in.d.Name, "LOCUS_INSTANCE=" + in.id, "LOCUS_NODE=" + strconv.Itoa(in.node)}
	// Its own group, killed with this daemon (on a real node, the node
	// going down takes it; a killed daemon must not leave it running).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err1 := cmd.StdoutPipe()
	stderr, err2 := cmd.StderrPipe()
	if err := errors.Join(err1, err2); err != nil {
		return nil, &failure{OCFErrGeneric, Soft, err.Error()}
	}
	if err := cmd.Start(); err != nil {
		return nil, &failure{OCFErrInstalled, Hard, fmt.Sprintf("start %s: %v", in.d.Command[0], err)}
	}
	var copies sync.WaitGroup
	copies.Add(2)
	go func() { defer copies.Done(); in.logs.copy("stdout", stdout) }()
	go func() { defer copies.Done(); in.logs.copy("stderr", stderr) }()
	r := &running{cmd: cmd, exited: make(chan error, 1)}
	go func() {
		copies.Wait() // Wait closes the pipes: read them to the end first
		r.exited <- cmd.Wait()
	}()
	in.mu.Lock()
	in.st.PID = cmd.Process.Pid
	in.mu.Unlock()
	in.logs.add("locus", fmt.Sprintf("started pid %d", cmd.Process.Pid))
	if probe := in.probe(); probe != nil {
		return r, in.ready(ctx, r, probe)
	}
	return r, nil
}

// ready waits for a started command's monitor to pass for the first
// time, as Pacemaker runs the first monitor only after start returns:
// a service is not failed for the time it takes to open its port. It
// fails if the process exits first, or the monitor has not passed
// within the start timeout.
func (in *instance) ready(ctx context.Context, r *running, probe func(context.Context) *failure) *failure {
	start := time.Now()
	limit := in.timeout(in.d.StartTimeout)
	every := min(100*time.Millisecond, in.d.MonitorInterval)
	for {
		f := probe(ctx)
		if f == nil {
			in.logs.add("locus", fmt.Sprintf("ready after %v", time.Since(start).Round(time.Millisecond)))
			return nil
		}
		if ctx.Err() != nil {
			return &failure{OCFErrGeneric, Soft, "stopped while starting"} // the caller stops it
		}
		if time.Since(start) >= limit {
			return &failure{OCFErrGeneric, Soft, fmt.Sprintf("not ready within the start timeout (%v): %s", limit, f.reason)}
		}
		select {
		case <-ctx.Done():
			return &failure{OCFErrGeneric, Soft, "stopped while starting"}
		case err := <-r.exited:
			r.gone = true
			return &failure{OCFNotRunning, Soft, "exited while starting: " + exitText(err)}
		case <-time.After(every):
		}
	}
}

func (in *instance) timeout(configured time.Duration) time.Duration {
	if configured > 0 {
		return configured
	}
	return DefaultActionTimeout
}

func (in *instance) logAction(r Result) {
	in.logs.add("ocf", r.String())
	for _, stream := range []struct {
		name string
		b    []byte
	}{{"stdout", r.Stdout}, {"stderr", r.Stderr}} {
		if stream.name == "stdout" && r.Action == "meta-data" {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(stream.b))
		for sc.Scan() {
			in.logs.add(stream.name, sc.Text())
		}
	}
}

// watch returns the instance's first failure, or nil when ctx ends.
func (in *instance) watch(ctx context.Context, r *running) *failure {
	var exited chan error
	if r != nil && r.cmd != nil {
		exited = r.exited
	}
	probe := in.probe()
	var tick <-chan time.Time
	if probe != nil {
		t := time.NewTicker(in.d.MonitorInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-exited:
			r.gone = true
			return &failure{OCFNotRunning, Soft, exitText(err)}
		case <-tick:
			if f := probe(ctx); f != nil && ctx.Err() == nil {
				return f
			}
		}
	}
}

// probe is the instance's monitor (nil: a command watched only as a
// process).
func (in *instance) probe() func(ctx context.Context) *failure {
	m := in.d.Monitor
	timeout := in.d.MonitorTimeout
	switch {
	case len(m.Command) > 0:
		return func(ctx context.Context) *failure {
			cmd, err := in.env.command(m.Command)
			if err != nil {
				return &failure{OCFErrInstalled, Hard, "monitor: " + err.Error()}
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LOCUS_SERVICE=" + in.d.Name}
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			if err := cmd.Start(); err != nil {
				return &failure{OCFErrInstalled, Hard, "monitor: " + err.Error()}
			}
			stop := context.AfterFunc(cctx, func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
			defer stop()
			if err := cmd.Wait(); err != nil {
				return &failure{OCFErrGeneric, Soft, "monitor " + m.Command[0] + ": " + exitText(err)}
			}
			return nil
		}
	case m.TCP != "":
		return func(ctx context.Context) *failure {
			d := net.Dialer{Timeout: timeout}
			c, err := d.DialContext(ctx, "tcp", m.TCP)
			if err != nil {
				return &failure{OCFErrGeneric, Soft, "monitor: tcp " + m.TCP + ": " + err.Error()}
			}
			c.Close()
			return nil
		}
	case m.HTTP != "":
		client := &http.Client{Timeout: timeout}
		return func(ctx context.Context) *failure {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.HTTP, nil)
			if err != nil {
				return &failure{OCFErrConfigured, Fatal, "monitor: " + err.Error()}
			}
			resp, err := client.Do(req)
			if err != nil {
				return &failure{OCFErrGeneric, Soft, "monitor: " + err.Error()}
			}
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode >= 400 {
				return &failure{OCFErrGeneric, Soft, fmt.Sprintf("monitor: GET %s: %s", m.HTTP, resp.Status)}
			}
			return nil
		}
	case in.d.ocf():
		return func(ctx context.Context) *failure {
			r := in.agent().Run(ctx, "monitor", timeout, in.d.MonitorInterval)
			if r.RC == OCFSuccess || r.RC == OCFDegraded {
				return nil
			}
			in.logAction(r)
			return &failure{r.RC, Classify(r.RC), "monitor " + r.String()}
		}
	}
	return nil
}

// stop stops the instance; false if it could not (it may still run).
func (in *instance) stop(r *running) bool {
	in.set("stopping", "")
	if in.d.ocf() {
		// Not canceled with the instance: the stop must run to its end.
		res := in.agent().Run(context.Background(), "stop", in.timeout(in.d.StopTimeout), 0)
		in.logAction(res)
		if res.RC != OCFSuccess {
			in.set("stop-failed", res.String())
			in.stopOK = false
			return false
		}
		in.set("stopped", "")
		in.stopOK = true
		return true
	}
	if r != nil && r.cmd != nil {
		pid := r.cmd.Process.Pid
		if !r.gone {
			syscall.Kill(-pid, syscall.SIGTERM)
			grace := in.d.StopTimeout
			if grace == 0 {
				grace = 5 * time.Second
			}
			select {
			case <-r.exited:
			case <-time.After(grace):
				syscall.Kill(-pid, syscall.SIGKILL)
				<-r.exited
			}
			r.gone = true
		}
		// What the command left in its group goes with it.
		syscall.Kill(-pid, syscall.SIGKILL)
		r.cmd = nil
	}
	in.mu.Lock()
	in.st.PID = 0
	in.mu.Unlock()
	in.set("stopped", "")
	in.stopOK = true
	return true
}

func exitText(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exited 0"
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + unix.SignalName(ws.Signal())
		}
		return fmt.Sprintf("exited %d", ee.ExitCode())
	}
	return err.Error()
}
