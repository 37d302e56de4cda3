package events

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFeedNumbersAndKeepsTheLast(t *testing.T) {
	f := NewFeed(3)
	f.SetNode(4)
	for i := 0; i < 5; i++ {
		f.Publish(Event{Source: SourceInit, Kind: PhaseDone, Name: "p"})
	}
	evs := f.Since(0)
	if len(evs) != 3 || evs[0].Seq != 3 || evs[2].Seq != 5 {
		t.Fatalf("Since(0) = %+v, want seq 3..5 (the last three)", evs)
	}
	if evs[0].Node != 4 || evs[0].At.IsZero() {
		t.Errorf("event = %+v, want node 4 and a time", evs[0])
	}
	if got := f.Since(4); len(got) != 1 || got[0].Seq != 5 {
		t.Errorf("Since(4) = %+v, want seq 5", got)
	}
	if got := f.Since(5); len(got) != 0 {
		t.Errorf("Since(5) = %+v, want none", got)
	}
	if err := f.Mirror(Event{Seq: 5, Kind: PhaseDone}); err == nil {
		t.Error("Mirror of an old sequence number succeeded, want an error")
	}
}

func TestNextWaitsForTheNextEvent(t *testing.T) {
	f := NewFeed(0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		time.Sleep(50 * time.Millisecond)
		f.Publish(Event{Kind: RunLevelReached, Level: 3})
	}()
	evs, err := f.Next(ctx, 0)
	if err != nil || len(evs) != 1 || evs[0].Level != 3 {
		t.Fatalf("Next = %+v, %v; want the run-level event", evs, err)
	}
	short, stop := context.WithTimeout(ctx, 20*time.Millisecond)
	defer stop()
	if _, err := f.Next(short, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Next with nothing new = %v, want the deadline", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct{ name, line, want string }{
		{"not json", `{"kind":`, "bad event"},
		{"unknown kind", `{"seq":1,"kind":"phase.exploded"}`, `unknown kind "phase.exploded"`},
		{"negative node", `{"seq":1,"kind":"phase.done","node":-1}`, "negative"},
		{"too long", `{"kind":"phase.done","detail":"` + strings.Repeat("x", MaxLine) + `"}`, "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.line))
			if err == nil || !errors.Is(err, ErrBadEvent) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Decode = %v, want ErrBadEvent saying %q", err, tc.want)
			}
		})
	}
	e, err := Decode([]byte(`{"seq":7,"kind":"transition.applied","subject":3,"state":"Down","transition":12,"future":"ignored"}`))
	if err != nil || e.Seq != 7 || e.Subject != 3 || e.Transition != 12 {
		t.Errorf("Decode = %+v, %v; want transition 12 about node 3", e, err)
	}
}

// TestSocketPublishAndFollow runs PID 1's side and a daemon's side of the
// feed's socket: what the daemon publishes is numbered in PID 1's feed,
// and the daemon's copy holds every event, those from before it
// connected included, with PID 1's numbers.
func TestSocketPublishAndFollow(t *testing.T) {
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	path := filepath.Join(t.TempDir(), "private", "events.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := NewFeed(0)
	f.SetNode(2)
	served := make(chan struct{})
	go func() { Serve(ctx, ln, f, log); close(served) }()
	f.Publish(Event{Source: SourceInit, Kind: PhaseDone, Name: "early"})
	r, err := Dial(ctx, path, log)
	if err != nil {
		t.Fatal(err)
	}
	r.Publish(Event{Source: SourceLocusd, Kind: ServiceStarted, Name: ServiceMembership, Attrs: map[string]string{AttrTLS: "true"}, Seq: 99})
	got, err := f.Next(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Seq != 2 || got[0].Source != SourceLocusd || got[0].Attrs[AttrTLS] != "true" || got[0].Node != 2 {
		t.Errorf("published = %+v, want seq 2 (the feed's, not the sender's 99) from locusd on node 2", got[0])
	}
	f.Publish(Event{Source: SourceInit, Kind: RunLevelReached, Level: 3})
	var copied []Event
	for len(copied) < 3 {
		evs, err := r.Feed().Next(ctx, uint64(len(copied)))
		if err != nil {
			t.Fatalf("mirror has %d events: %v", len(copied), err)
		}
		copied = append(copied, evs...)
	}
	if copied[0].Name != "early" || copied[1].Seq != 2 || copied[2].Kind != RunLevelReached {
		t.Errorf("mirror = %+v, want early, the daemon's event, the run level", copied)
	}
	cancel()
	<-served
	<-r.Done()
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"seq":1,"at":"2026-12-01T10:00:00Z","node":1,"source":"init","kind":"phase.done","name":"early","ms":12}`))
	f.Add([]byte(`{"seq":9,"kind":"transition.applied","subject":3,"state":"Down","transition":40,"master":1,"detail":"fenced"}`))
	f.Add([]byte(`{"kind":"role.taken","name":"cfs-server","attrs":{"clean":"true"}}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		e, err := Decode(line)
		if err != nil {
			return
		}
		var b bytes.Buffer
		if err := Write(&b, e); err != nil {
			t.Fatalf("Write of a decoded event: %v", err)
		}
		again, err := Decode(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
		if err != nil {
			t.Fatalf("a written event does not decode: %v\n%s", err, b.Bytes())
		}
		if again.Seq != e.Seq || again.Kind != e.Kind || again.Subject != e.Subject {
			t.Fatalf("round trip changed the event: %+v -> %+v", e, again)
		}
		_ = e.String()
	})
}
