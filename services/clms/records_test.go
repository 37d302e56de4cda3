package clms

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/hashicorp/raft"
)

func applyWrites(t *testing.T, f *fsm, index uint64, ws ...RecordWrite) any {
	t.Helper()
	b, err := json.Marshal(command{Kind: kindRecords, Writes: ws})
	if err != nil {
		t.Fatal(err)
	}
	return f.Apply(&raft.Log{Index: index, Data: b})
}

// TestRecordsCompareAndSet: a write applies only at the version it
// read, a batch all or none, a nil value deletes, and records survive a
// snapshot and restore.
func TestRecordsCompareAndSet(t *testing.T) {
	f := newFSM(nil)
	poked := make(chan struct{}, 1)
	f.watch(poked)
	if r := applyWrites(t, f, 5, RecordWrite{Key: "ha/web/0", Value: json.RawMessage(`{"node":2}`)}); r != (RecordsWritten{Version: 5}) {
		t.Fatalf("first write: %v", r)
	}
	select {
	case <-poked:
	default:
		t.Error("a write did not poke the watcher")
	}
	// Expecting 0 (absent) again, or a wrong version: refused, and the
	// whole batch with it.
	r := applyWrites(t, f, 6, RecordWrite{Key: "ha/db/0", Value: json.RawMessage(`1`)}, RecordWrite{Key: "ha/web/0", Value: json.RawMessage(`{"node":3}`)})
	if err, ok := r.(error); !ok || !errors.Is(err, ErrRecordChanged) {
		t.Fatalf("a stale write: %v", r)
	}
	if got := f.recordsWith("ha/"); len(got) != 1 || string(got[0].Value) != `{"node":2}` {
		t.Fatalf("after a refused batch: %+v", got)
	}
	if r := applyWrites(t, f, 7, RecordWrite{Key: "ha/web/0", Value: json.RawMessage(`{"node":3}`), Expect: 5}, RecordWrite{Key: "ha/db/0", Value: json.RawMessage(`1`)}); r != (RecordsWritten{Version: 7}) {
		t.Fatalf("a write at the version read: %v", r)
	}
	if r := applyWrites(t, f, 8, RecordWrite{Key: "ha/db/0", Expect: 7}); r != (RecordsWritten{Version: 8}) {
		t.Fatalf("delete: %v", r)
	}
	for _, bad := range [][]RecordWrite{nil, {{Key: ""}}, {{Key: "a\nb"}}, {{Key: "k", Value: bytes.Repeat([]byte("1"), maxRecordValue+1)}}} {
		if r, ok := applyWrites(t, f, 9, bad...).(error); !ok {
			t.Errorf("bad write %v applied: %v", bad, r)
		}
	}

	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	snap.Persist(sink{&buf})
	g := newFSM(nil)
	if err := g.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	got := g.recordsWith("")
	if len(got) != 1 || got[0].Key != "ha/web/0" || got[0].Version != 7 || string(got[0].Value) != `{"node":3}` {
		t.Errorf("records after restore: %+v", got)
	}
}

type sink struct{ *bytes.Buffer }

func (sink) ID() string    { return "test" }
func (sink) Cancel() error { return nil }
func (sink) Close() error  { return nil }
