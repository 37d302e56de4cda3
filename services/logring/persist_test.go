package logring

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func logLines(r *Ring, msgs ...string) {
	log := slog.New(NewHandler(slog.NewTextHandler(io.Discard, nil), r))
	for _, m := range msgs {
		log.Info(m, "k", "v")
	}
}

func msgs(ls []Line) string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Msg)
	}
	return strings.Join(out, ",")
}

// TestPersistAcrossBoots: a ring's lines reach its file (those logged
// before Persist too); the next boot's ring reads them as the previous
// boot's, and the boot after that keeps them one further back.
func TestPersistAcrossBoots(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locusd.log")
	r := New(0)
	logLines(r, "early")
	if _, err := r.Previous(Filter{}); err == nil {
		t.Error("Previous without a disk: no error")
	}
	if err := r.Persist(path, 0); err != nil {
		t.Fatal(err)
	}
	logLines(r, "one", "two")
	if _, err := r.Previous(Filter{}); err == nil || !strings.Contains(err.Error(), "no log of a previous boot") {
		t.Errorf("first boot's Previous: %v, want no previous boot", err)
	}
	r.Close()

	r2 := New(0)
	if err := r2.Persist(path, 0); err != nil {
		t.Fatal(err)
	}
	logLines(r2, "three")
	prev, err := r2.Previous(Filter{})
	if err != nil || msgs(prev) != "early,one,two" {
		t.Fatalf("second boot's Previous: %q, %v; want early,one,two", msgs(prev), err)
	}
	if prev[1].Attrs != "k=v" || prev[1].Level != "INFO" {
		t.Errorf("a line read back: %+v", prev[1])
	}
	f, _ := ParseFilter("", "", "^t", prev[0].At)
	if got, _ := r2.Previous(f); msgs(got) != "two" {
		t.Errorf("Previous filtered by ^t: %q", msgs(got))
	}
	r2.Close()

	r3 := New(0)
	if err := r3.Persist(path, 0); err != nil {
		t.Fatal(err)
	}
	defer r3.Close()
	if prev, _ := r3.Previous(Filter{}); msgs(prev) != "three" {
		t.Errorf("third boot's Previous: %q, want three", msgs(prev))
	}
	if b, err := os.ReadFile(path + ".2"); err != nil || !strings.Contains(string(b), `"msg":"two"`) {
		t.Errorf("the boot before the previous one is not kept in .2: %v", err)
	}
}

// TestPersistBounded: past its size a boot's file is moved aside and a
// new one begun; the next boot's Previous has both parts, in order; the
// files stay bounded.
func TestPersistBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locusd.log")
	r := New(0)
	if err := r.Persist(path, 1024); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := 0; i < 12; i++ {
		m := strings.Repeat("x", 60) + string(rune('a'+i))
		logLines(r, m)
		want = append(want, m)
	}
	r.Close()
	for _, p := range []string{path, path + ".old"} {
		if st, err := os.Stat(p); err != nil || st.Size() > 1024 {
			t.Errorf("%s: %v, %v: want a file of at most 1024 bytes", p, st, err)
		}
	}
	r2 := New(0)
	if err := r2.Persist(path, 1024); err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	prev, err := r2.Previous(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(msgs(prev), ",")
	// The oldest lines went with the first moved-aside part when the
	// second filled: what is kept is the newest, in order.
	if len(got) < 6 || strings.Join(got, ",") != strings.Join(want[len(want)-len(got):], ",") {
		t.Errorf("previous boot: %d lines %v, want the newest of %v in order", len(got), got, want)
	}
}

// TestPersistWriteFails: when the file cannot be written the ring says so
// in a line and goes on.
func TestPersistWriteFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locusd.log")
	r := New(0)
	if err := r.Persist(path, 0); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.disk.f.Close() // as a disk that went away
	r.mu.Unlock()
	logLines(r, "after")
	lines, _ := r.After(0, Filter{})
	if m := msgs(lines); !strings.Contains(m, "after") || !strings.Contains(m, "logring: the log file stopped") {
		t.Errorf("the ring after the file failed: %q", m)
	}
	logLines(r, "more")
	if lines, _ := r.After(0, Filter{}); !strings.HasSuffix(msgs(lines), "more") {
		t.Errorf("the ring did not go on: %q", msgs(lines))
	}
}
