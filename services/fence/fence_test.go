package fence

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseOptions(t *testing.T) {
	o, err := ParseOptions([]byte("# from stonithd\naction=off\n\nplug=node3\nipaddr=10.0.0.1\n"))
	if err != nil || o.Action != "off" || o.Plug != 3 {
		t.Errorf("ParseOptions = %+v, %v", o, err)
	}
	for _, bad := range []string{"action off\n", "plug=x\n", "port=0\n"} {
		if _, err := ParseOptions([]byte(bad)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%q: %v, want an error naming line 1", bad, err)
		}
	}
}

// agent writes a fence agent script that records its stdin and exits
// with code.
func agent(t *testing.T, body string) Agent {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fence_test")
	os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755)
	return Agent{Argv: []string{p}, Timeout: 2 * time.Second}
}

func TestAgentExitCodes(t *testing.T) {
	dir := t.TempDir()
	a := agent(t, "cat > "+dir+"/stdin; exit 0")
	if _, err := a.Run(context.Background(), ActionOff, 3); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dir + "/stdin"); !strings.Contains(string(b), "action=off\nplug=3\n") {
		t.Errorf("the agent was given %q", b)
	}
	if on, err := agent(t, "exit 2").Run(context.Background(), ActionStatus, 3); err != nil || on {
		t.Errorf("status exit 2 = on %v, %v; want off", on, err)
	}
	if _, err := agent(t, "echo 'BMC unreachable' >&2; exit 1").Run(context.Background(), ActionOff, 3); err == nil || !strings.Contains(err.Error(), "BMC unreachable") {
		t.Errorf("failing agent: %v", err)
	}
	if _, err := agent(t, "exec sleep 10").Run(context.Background(), ActionOff, 3); err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Errorf("hung agent: %v", err)
	}
}
