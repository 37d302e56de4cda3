package ha

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// OCF exit codes (OCF resource agent API 1.1).
const (
	OCFSuccess          = 0
	OCFErrGeneric       = 1
	OCFErrArgs          = 2
	OCFErrUnimplemented = 3
	OCFErrPerm          = 4
	OCFErrInstalled     = 5
	OCFErrConfigured    = 6
	OCFNotRunning       = 7
	OCFRunningPromoted  = 8
	OCFFailedPromoted   = 9
	OCFDegraded         = 190
)

// DefaultOCFRoot is where Debian's resource-agents installs agents.
const DefaultOCFRoot = "/usr/lib/ocf"

// DefaultActionTimeout is Pacemaker's default for an action with no
// timeout configured or hinted by the agent.
const DefaultActionTimeout = 20 * time.Second

// outputLimit bounds what is kept of an action's stdout and stderr.
const outputLimit = 64 << 10

// Recovery is what a failure asks for, Pacemaker's classes.
type Recovery int

const (
	// Healthy: no failure.
	Healthy Recovery = iota
	// Soft: restart here, counting towards migration_threshold.
	Soft
	// Hard: this node cannot run it; move it elsewhere.
	Hard
	// Fatal: the configuration is wrong everywhere; stop it.
	Fatal
)

func (r Recovery) String() string {
	return [...]string{"healthy", "soft", "hard", "fatal"}[r]
}

// Classify maps a failed or succeeded action's exit code to its
// recovery (a monitor's 7 where the instance should run is Soft).
func Classify(rc int) Recovery {
	switch rc {
	case OCFSuccess, OCFDegraded:
		return Healthy
	case OCFErrArgs, OCFErrUnimplemented, OCFErrPerm, OCFErrInstalled:
		return Hard
	case OCFErrConfigured:
		return Fatal
	}
	return Soft
}

// RCName is the OCF name of an exit code.
func RCName(rc int) string {
	names := map[int]string{0: "OCF_SUCCESS", 1: "OCF_ERR_GENERIC", 2: "OCF_ERR_ARGS", 3: "OCF_ERR_UNIMPLEMENTED",
		4: "OCF_ERR_PERM", 5: "OCF_ERR_INSTALLED", 6: "OCF_ERR_CONFIGURED", 7: "OCF_NOT_RUNNING",
		8: "OCF_RUNNING_PROMOTED", 9: "OCF_FAILED_PROMOTED", 190: "OCF_DEGRADED", 191: "OCF_DEGRADED_PROMOTED"}
	if n, ok := names[rc]; ok {
		return n
	}
	return "rc " + strconv.Itoa(rc)
}

// Agent is one instance of an OCF resource agent.
type Agent struct {
	// Provider and Type name the agent: heartbeat and Dummy for
	// $OCF_ROOT/resource.d/heartbeat/Dummy.
	Provider, Type string
	// Instance is OCF_RESOURCE_INSTANCE: the service's name.
	Instance string
	Params   map[string]string
	// OCFRoot is OCF_ROOT in the node's root (DefaultOCFRoot if empty).
	OCFRoot string
	// Command makes the process for argv in the node's root (tests: a
	// plain exec.Command).
	Command func(argv []string) (*exec.Cmd, error)
}

// ParseAgentName parses "heartbeat/Dummy" or "ocf:heartbeat:Dummy".
func ParseAgentName(s string) (provider, typ string, err error) {
	name := strings.TrimPrefix(s, "ocf:")
	provider, typ, ok := strings.Cut(strings.ReplaceAll(name, ":", "/"), "/")
	if !ok || !agentPart.MatchString(provider) || !agentPart.MatchString(typ) {
		return "", "", fmt.Errorf("OCF agent %q: want provider/type (heartbeat/Dummy) or ocf:provider:type", s)
	}
	return provider, typ, nil
}

var agentPart = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]*$`)

// paramName is what an OCF_RESKEY_ variable may be named.
var paramName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidParam says whether name can be an agent parameter.
func ValidParam(name string) bool { return paramName.MatchString(name) }

// Path is the agent's program in the node's root.
func (a Agent) Path() string {
	return a.root() + "/resource.d/" + a.Provider + "/" + a.Type
}

func (a Agent) root() string {
	if a.OCFRoot == "" {
		return DefaultOCFRoot
	}
	return a.OCFRoot
}

// Env is the environment Pacemaker's executor gives an agent: started
// from empty, the OCF variables, the instance's parameters, the
// action's timeout and interval in milliseconds.
func (a Agent) Env(timeout, interval time.Duration) []string {
	env := []string{
		"OCF_ROOT=" + a.root(), "OCF_RA_VERSION_MAJOR=1", "OCF_RA_VERSION_MINOR=1",
		"OCF_RESOURCE_INSTANCE=" + a.Instance, "OCF_RESOURCE_TYPE=" + a.Type, "OCF_RESOURCE_PROVIDER=" + a.Provider,
		"OCF_RESKEY_CRM_meta_timeout=" + strconv.FormatInt(timeout.Milliseconds(), 10),
		"OCF_RESKEY_CRM_meta_interval=" + strconv.FormatInt(interval.Milliseconds(), 10),
		"OCF_EXIT_REASON_PREFIX=ocf-exit-reason:",
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HA_LOGFACILITY=none", "HA_debug=0",
	}
	keys := make([]string, 0, len(a.Params))
	for k := range a.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, "OCF_RESKEY_"+k+"="+a.Params[k])
	}
	return env
}

// Result is how one action ended.
type Result struct {
	Action string `json:"action"`
	RC     int    `json:"rc"`
	// Reason is the agent's last ocf-exit-reason line, or why it could
	// not run.
	Reason   string        `json:"reason,omitempty"`
	TimedOut bool          `json:"timed_out,omitempty"`
	Took     time.Duration `json:"took_ns"`
	Stdout   []byte        `json:"-"`
	Stderr   []byte        `json:"-"`
}

func (r Result) String() string {
	s := fmt.Sprintf("%s: %s", r.Action, RCName(r.RC))
	if r.TimedOut {
		s = r.Action + ": timed out"
	}
	if r.Reason != "" {
		s += " (" + r.Reason + ")"
	}
	return s
}

// Run runs action with its timeout, as Pacemaker does: in its own
// process group, stdin empty, root, from /; at the timeout the whole
// group is killed and the result is a timeout (rc 1). After a normal
// exit nothing is killed: the daemons a start left must live.
func (a Agent) Run(ctx context.Context, action string, timeout, interval time.Duration) Result {
	start := time.Now()
	res := Result{Action: action, RC: OCFErrGeneric}
	cmd, err := a.Command([]string{a.Path(), action})
	if err != nil {
		res.RC, res.Reason = OCFErrInstalled, err.Error()
		return res
	}
	cmd.Env = a.Env(timeout, interval)
	cmd.Stdin = nil
	var stdout, stderr limited
	stdout.n, stderr.n = outputLimit, outputLimit
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A daemon the start left may hold the output pipes open: Wait
	// stops reading them this long after the agent exits. (The group is
	// killed at the timeout here, not by exec's context, which kills
	// only the leader.)
	cmd.WaitDelay = 250 * time.Millisecond
	if err := cmd.Start(); err != nil {
		res.RC, res.Reason = OCFErrInstalled, fmt.Sprintf("start %s: %v", a.Path(), err)
		return res
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err = <-done:
	case <-timer.C:
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = <-done
		res.TimedOut = true
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = <-done
		res.Reason = "canceled: " + ctx.Err().Error()
	}
	res.Took = time.Since(start)
	res.Stdout, res.Stderr = stdout.Bytes(), stderr.Bytes()
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil // exited 0; a daemon it started keeps the pipes
	}
	var ee *exec.ExitError
	switch {
	case res.TimedOut:
		res.RC = OCFErrGeneric
	case err == nil:
		res.RC = 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		res.RC = ee.ExitCode()
	default:
		res.RC = OCFErrGeneric
		if res.Reason == "" {
			res.Reason = err.Error()
		}
	}
	if r := ExitReason(res.Stderr); r != "" {
		res.Reason = r
	}
	return res
}

// ExitReason is the last ocf-exit-reason: line an agent wrote on
// stderr (trimmed, at most 512 bytes), or "".
func ExitReason(stderr []byte) string {
	var reason string
	sc := bufio.NewScanner(bytes.NewReader(stderr))
	sc.Buffer(make([]byte, 0, 4096), outputLimit)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, "ocf-exit-reason:"); i >= 0 {
			reason = strings.TrimSpace(line[i+len("ocf-exit-reason:"):])
		}
	}
	reason = strings.ToValidUTF8(reason, "?")
	if len(reason) > 512 {
		reason = reason[:512]
	}
	return reason
}

// MetaData is what an agent says of itself (its meta-data action): the
// parameters it takes and each action's minimum timeout.
type MetaData struct {
	Name       string          `xml:"name,attr"`
	Parameters []MetaParameter `xml:"parameters>parameter"`
	Actions    []MetaAction    `xml:"actions>action"`
}

// MetaParameter is one parameter of an agent.
type MetaParameter struct {
	Name     string `xml:"name,attr"`
	Required string `xml:"required,attr"`
	Unique   string `xml:"unique,attr"`
	Content  struct {
		Type    string `xml:"type,attr"`
		Default string `xml:"default,attr"`
	} `xml:"content"`
}

// MetaAction is one action an agent supports.
type MetaAction struct {
	Name     string `xml:"name,attr"`
	Timeout  string `xml:"timeout,attr"`
	Interval string `xml:"interval,attr"`
	Depth    string `xml:"depth,attr"`
}

// ParseMetaData parses an agent's meta-data XML (at most 1 MiB).
func ParseMetaData(b []byte) (MetaData, error) {
	var md MetaData
	if len(b) > 1<<20 {
		return md, fmt.Errorf("meta-data: %d bytes (at most 1 MiB)", len(b))
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	d.CharsetReader = func(charset string, r io.Reader) (io.Reader, error) {
		if strings.EqualFold(charset, "utf-8") || strings.EqualFold(charset, "us-ascii") {
			return r, nil
		}
		return nil, fmt.Errorf("charset %q", charset)
	}
	if err := d.Decode(&md); err != nil {
		return md, fmt.Errorf("meta-data: %w", err)
	}
	if md.Name == "" {
		return md, errors.New("meta-data: no resource-agent name")
	}
	return md, nil
}

// Timeout is the action's minimum timeout the agent hints (0: none).
func (md MetaData) Timeout(action string) time.Duration {
	for _, a := range md.Actions {
		if a.Name == action {
			d, err := parseOCFDuration(a.Timeout)
			if err == nil {
				return d
			}
		}
	}
	return 0
}

// Required lists the parameters the agent requires.
func (md MetaData) Required() []string {
	var out []string
	for _, p := range md.Parameters {
		if p.Required == "1" || strings.EqualFold(p.Required, "true") {
			out = append(out, p.Name)
		}
	}
	return out
}

// parseOCFDuration reads Pacemaker's durations: "20s", "20", "2m",
// "500ms", "1h" (a bare number is seconds).
func parseOCFDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty duration")
	}
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("duration %q", s)
	}
	return d, nil
}

// limited keeps the first n bytes written to it and discards the rest.
type limited struct {
	bytes.Buffer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.n - l.Len(); room > 0 {
		l.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
