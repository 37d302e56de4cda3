package fsconform

import (
	"context"
	"os"
	"testing"
)

// TestLocalFilesystem: on the test machine's own filesystem every check
// holds, so a failure elsewhere is that filesystem's, not the check's.
func TestLocalFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	// Not t.TempDir: it may be a tmpfs; the checks are for a disk's.
	dir, err := os.MkdirTemp("/var/tmp", "fsconform-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil { // the users search it
		t.Fatal(err)
	}
	r, err := Run(context.Background(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range r.Checks {
		if !c.OK {
			t.Errorf("%s: %s: got %s, want %s", c.Name, c.What, c.Got, c.Want)
		}
	}
	t.Logf("%d checks, %d failures", len(r.Checks), r.Failures)
	if len(r.Checks) < 200 {
		t.Errorf("only %d checks ran", len(r.Checks))
	}
}

// TestBench: every operation runs and is timed.
func TestBench(t *testing.T) {
	costs, err := Bench(context.Background(), t.TempDir(), 3, "/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	if len(costs) != 7 {
		t.Fatalf("%d operations measured, want 7: %v", len(costs), costs)
	}
	for _, c := range costs {
		if c.N != 3 || c.Median <= 0 || c.P90 < c.Median {
			t.Errorf("%+v", c)
		}
	}
}
