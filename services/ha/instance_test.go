package ha

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"
)

// slowInstance is a command that takes a second to become healthy (its
// monitor: a file it makes), monitored every 100 ms.
func slowInstance(t *testing.T, script string, startTimeout time.Duration) (*instance, string) {
	ready := filepath.Join(t.TempDir(), "ready")
	d := &def{Name: "slow", Command: []string{"sh", "-c", strings.ReplaceAll(script, "READY", ready)}}
	d.MonitorInterval, d.MonitorTimeout, d.StartTimeout = 100*time.Millisecond, time.Second, startTimeout
	d.Monitor = clusterspec.HAMonitor{Command: []string{"test", "-e", ready}}
	env := &runEnv{command: func(argv []string) (*exec.Cmd, error) { return exec.Command(argv[0], argv[1:]...), nil }}
	return &instance{d: d, id: "0", node: 1, env: env, logs: newRing("slow", "0", 1)}, ready
}

// TestStartWaitsForTheMonitor: a command is started once its monitor
// first passes, so the second it takes to open up is not a failure;
// one that exits first, or is not healthy within the start timeout,
// failed to start.
func TestStartWaitsForTheMonitor(t *testing.T) {
	ctx := context.Background()
	in, ready := slowInstance(t, "sleep 1; touch READY; exec sleep 1000", 0)
	start := time.Now()
	r, f := in.start(ctx, true)
	if f != nil {
		t.Fatalf("a command healthy after 1s failed to start: %s", f.reason)
	}
	if _, err := os.Stat(ready); err != nil || time.Since(start) < 900*time.Millisecond {
		t.Errorf("start returned after %v, before the monitor passed (%v)", time.Since(start), err)
	}
	if !in.stop(r) {
		t.Error("stop failed")
	}

	in, _ = slowInstance(t, "sleep 0.3; exit 4", 0)
	r, f = in.start(ctx, true)
	if f == nil || !strings.Contains(f.reason, "exited while starting: exited 4") {
		t.Errorf("a command that exits while starting: %+v", f)
	}
	in.stop(r)

	in, _ = slowInstance(t, "exec sleep 1000", 500*time.Millisecond)
	start = time.Now()
	r, f = in.start(ctx, true)
	if f == nil || !strings.Contains(f.reason, "not ready within the start timeout (500ms)") {
		t.Errorf("a command never healthy: %+v", f)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the start timeout of 500ms took %v", took)
	}
	in.stop(r)
}
