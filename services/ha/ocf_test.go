package ha

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func plainCommand(argv []string) (*exec.Cmd, error) { return exec.Command(argv[0], argv[1:]...), nil }

func fakeAgent(t *testing.T, params map[string]string) Agent {
	root, err := filepath.Abs("testdata/ocf")
	if err != nil {
		t.Fatal(err)
	}
	return Agent{Provider: "locus", Type: "Fake", Instance: "fake1", Params: params, OCFRoot: root, Command: plainCommand}
}

// TestAgentEnvironment: an agent gets Pacemaker's environment (its
// parameters as OCF_RESKEY_, the timeout in ms), its meta-data parses,
// and its exit codes come back as they are.
func TestAgentEnvironment(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	a := fakeAgent(t, map[string]string{"state": state})
	ctx := context.Background()
	md := a.Run(ctx, "meta-data", 5*time.Second, 0)
	meta, err := ParseMetaData(md.Stdout)
	if md.RC != 0 || err != nil {
		t.Fatalf("meta-data: %v %v", md, err)
	}
	if meta.Timeout("start") != 7*time.Second || meta.Timeout("stop") != 9*time.Second || !slices.Equal(meta.Required(), []string{"state"}) {
		t.Errorf("meta-data read as %+v", meta)
	}
	if r := a.Run(ctx, "monitor", 5*time.Second, 0); r.RC != OCFNotRunning {
		t.Fatalf("monitor before start: %v", r)
	}
	if r := a.Run(ctx, "start", 7*time.Second, 0); r.RC != 0 {
		t.Fatalf("start: %v", r)
	}
	b, _ := os.ReadFile(state)
	if string(b) != "fake1 7000\n" {
		t.Errorf("the agent saw instance and timeout %q, want \"fake1 7000\"", b)
	}
	if r := a.Run(ctx, "monitor", 5*time.Second, 10*time.Second); r.RC != 0 {
		t.Fatalf("monitor after start: %v", r)
	}
	if r := a.Run(ctx, "promote", 5*time.Second, 0); r.RC != OCFErrUnimplemented || Classify(r.RC) != Hard {
		t.Errorf("promote: %v", r)
	}
	if r := a.Run(ctx, "stop", 5*time.Second, 0); r.RC != 0 {
		t.Fatalf("stop: %v", r)
	}
	env := a.Env(time.Second, 0)
	for _, want := range []string{"OCF_ROOT=" + a.OCFRoot, "OCF_RA_VERSION_MAJOR=1", "OCF_RESOURCE_INSTANCE=fake1", "OCF_RESKEY_state=" + state, "OCF_RESKEY_CRM_meta_interval=0"} {
		if !slices.Contains(env, want) {
			t.Errorf("environment lacks %s: %v", want, env)
		}
	}
}

// TestAgentExitReasonAndTimeout: an agent's exit reason is kept; one
// that outlives its timeout is killed with its whole process group.
func TestAgentExitReasonAndTimeout(t *testing.T) {
	a := fakeAgent(t, map[string]string{"state": filepath.Join(t.TempDir(), "s"), "mode": "args"})
	r := a.Run(context.Background(), "start", 5*time.Second, 0)
	if r.RC != OCFErrArgs || !strings.Contains(r.Reason, "is not a path here") || Classify(r.RC) != Hard {
		t.Errorf("start with bad args: %+v", r)
	}
	a.Params["mode"] = "hang"
	start := time.Now()
	r = a.Run(context.Background(), "start", 300*time.Millisecond, 0)
	if !r.TimedOut || r.RC != OCFErrGeneric || time.Since(start) > 3*time.Second {
		t.Fatalf("a hanging start: %+v after %v", r, time.Since(start))
	}
	// Its child (sleep 300) went with the group.
	out, _ := exec.Command("pgrep", "-f", "^sleep 300$").Output()
	for _, p := range strings.Fields(string(out)) {
		if b, _ := os.ReadFile("/proc/" + p + "/environ"); strings.Contains(string(b), "OCF_RESOURCE_INSTANCE=fake1") {
			t.Errorf("the timed-out agent's child %s still runs", p)
			if pid, err := strconv.Atoi(p); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	a.Type = "Missing"
	if r := a.Run(context.Background(), "monitor", time.Second, 0); r.RC != OCFErrInstalled {
		t.Errorf("a missing agent: %+v", r)
	}
}

// TestDebianDummyAgent runs resource-agents' own Dummy as ocf-tester
// does: meta-data, validate-all, monitor 7, start, monitor 0, start
// again 0, stop, stop again 0, monitor 7.
func TestDebianDummyAgent(t *testing.T) {
	if _, err := os.Stat(DefaultOCFRoot + "/resource.d/heartbeat/Dummy"); err != nil {
		t.Fatalf("Debian's resource-agents is not installed (make deps): %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("OCF agents run as root (HA_RSCTMP under /run)")
	}
	os.MkdirAll("/run/resource-agents", 0o1755)
	state := filepath.Join(t.TempDir(), "dummy.state")
	a := Agent{Provider: "heartbeat", Type: "Dummy", Instance: "locus-test-dummy", Params: map[string]string{"state": state}, Command: plainCommand}
	ctx := context.Background()
	md := a.Run(ctx, "meta-data", 20*time.Second, 0)
	meta, err := ParseMetaData(md.Stdout)
	if md.RC != 0 || err != nil || meta.Name != "Dummy" || meta.Timeout("start") != 20*time.Second {
		t.Fatalf("Dummy meta-data: %v %v %+v", md, err, meta)
	}
	for i, step := range []struct {
		action string
		want   int
	}{{"validate-all", 0}, {"monitor", 7}, {"start", 0}, {"monitor", 0}, {"start", 0}, {"stop", 0}, {"stop", 0}, {"monitor", 7}} {
		interval := time.Duration(0)
		if step.action == "monitor" {
			interval = 10 * time.Second
		}
		if r := a.Run(ctx, step.action, 20*time.Second, interval); r.RC != step.want {
			t.Fatalf("step %d, %s: %v (stderr %q), want %s", i, step.action, r, r.Stderr, RCName(step.want))
		}
	}
}

func FuzzParseMetaData(f *testing.F) {
	b, err := os.ReadFile("testdata/ocf/resource.d/locus/Fake")
	if err != nil {
		f.Fatal(err)
	}
	s := string(b)
	f.Add([]byte(s[strings.Index(s, "<?xml"):strings.Index(s, "XML\n\texit")]))
	f.Add([]byte(`<resource-agent name="x"><actions><action name="start" timeout="1h"/></actions></resource-agent>`))
	f.Add([]byte(`<?xml version="1.0" encoding="latin1"?><resource-agent name="x"/>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		md, err := ParseMetaData(data)
		if err != nil {
			return
		}
		if md.Name == "" {
			t.Fatal("parsed meta-data without a name")
		}
		for _, a := range md.Actions {
			if d := md.Timeout(a.Name); d < 0 {
				t.Fatalf("negative timeout %v", d)
			}
		}
		md.Required()
	})
}

func FuzzExitReason(f *testing.F) {
	f.Add([]byte("ocf-exit-reason:bad\n"))
	f.Add([]byte("INFO: x\nERROR: ocf-exit-reason:first\nocf-exit-reason: last one \n"))
	f.Add([]byte("\xffocf-exit-reason:\xfe\xfd"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := ExitReason(data)
		if len(r) > 512 || strings.ContainsAny(r, "\n") {
			t.Fatalf("exit reason %q", r)
		}
	})
}
