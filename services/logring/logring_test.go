package logring

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestHandlerKeepsLines: every record goes on to the next handler and
// into the ring, with its attributes, groups and the logger's own; the
// ring keeps only its size, numbered on.
func TestHandlerKeepsLines(t *testing.T) {
	var out bytes.Buffer
	r := New(3)
	r.SetNode(2)
	log := slog.New(NewHandler(slog.NewTextHandler(&out, nil), r)).With("svc", "locusd")
	log.Info("membership started", "gossip", "10.0.0.2:7946")
	log.WithGroup("raft").Warn("heartbeat failed", "peer", "node 3", "err", `dial: "refused"`)
	log.Debug("not kept: below the next handler's level")
	log.Error("x", slog.Group("g", "a", 1))
	log.Info("fourth")
	lines, last := r.After(0, Filter{})
	if last != 4 || len(lines) != 3 {
		t.Fatalf("after 4 lines in a ring of 3: %d kept, last %d: %+v", len(lines), last, lines)
	}
	if l := lines[0]; l.Seq != 2 || l.Node != 2 || l.Level != "WARN" || l.Msg != "heartbeat failed" ||
		l.Attrs != `svc=locusd raft.peer="node 3" raft.err="dial: \"refused\""` {
		t.Errorf("first kept line: %+v", l)
	}
	if got := lines[1].Attrs; got != "svc=locusd g.a=1" {
		t.Errorf("a group attribute: %q", got)
	}
	if !strings.Contains(out.String(), "membership started") || strings.Contains(out.String(), "not kept") {
		t.Errorf("the next handler got:\n%s", out.String())
	}
}

// TestFilterAndWait: since, level and grep select lines; bad ones are
// refused by name; Wait wakes on a new line and ends with its context.
func TestFilterAndWait(t *testing.T) {
	r := New(0)
	log := slog.New(NewHandler(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelDebug}), r))
	log.Debug("d")
	log.Info("lockspace started", "lockspace", "root")
	log.Warn("fence failed", "node", 3)
	now := time.Now()
	f, err := ParseFilter("1m", "info", "lockspace|fence", now)
	if err != nil {
		t.Fatal(err)
	}
	if lines, _ := r.After(0, f); len(lines) != 2 {
		t.Errorf("info and above matching the grep: %+v", lines)
	}
	f, _ = ParseFilter("", "warn", "", now)
	if lines, _ := r.After(0, f); len(lines) != 1 || lines[0].Msg != "fence failed" {
		t.Errorf("warn and above: %+v", lines)
	}
	if f, _ = ParseFilter("1m", "", "", now.Add(time.Hour)); len(must(r.After(0, f))) != 0 {
		t.Error("since 1m, an hour later: lines kept")
	}
	for _, bad := range [][3]string{{"yesterday", "", ""}, {"", "loud", ""}, {"", "", "("}} {
		if _, err := ParseFilter(bad[0], bad[1], bad[2], now); err == nil {
			t.Errorf("ParseFilter(%q) took it", bad)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, last := r.After(0, Filter{})
	go func() { time.Sleep(20 * time.Millisecond); log.Info("new") }()
	if err := r.Wait(ctx, last); err != nil {
		t.Fatalf("Wait for a new line: %v", err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if err := r.Wait(short, last+1); err == nil {
		t.Error("Wait returned without a new line")
	}
}

func must(l []Line, _ uint64) []Line { return l }

// TestMerge orders lines from several nodes by time.
func TestMerge(t *testing.T) {
	t0 := time.Now()
	got := Merge([]Line{{Node: 2, Seq: 1, At: t0.Add(2)}, {Node: 1, Seq: 5, At: t0.Add(1)}, {Node: 1, Seq: 6, At: t0.Add(2)}})
	if got[0].Node != 1 || got[1].Node != 1 || got[2].Node != 2 {
		t.Errorf("merged %+v", got)
	}
}
