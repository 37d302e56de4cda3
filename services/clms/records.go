package clms

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// Record is a small piece of cluster state a service keeps in the
// membership's Raft log beside the node table (which node runs which HA
// instance, a service's failure counts): every node applies the same
// writes in the same order, and a new master inherits them.
type Record struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
	// Version is the Raft index of the record's last write.
	Version uint64 `json:"version"`
}

// RecordWrite sets Key to Value (or deletes it, Value nil) if the
// record is still at version Expect (0: it must not exist). The writes
// of one WriteRecords call apply all or none.
type RecordWrite struct {
	Key    string          `json:"key"`
	Value  json.RawMessage `json:"value,omitempty"`
	Expect uint64          `json:"expect"`
}

// RecordsWritten is what applying a record write returns: the version
// its records now have.
type RecordsWritten struct{ Version uint64 }

// kindRecords is the command that writes records.
const kindRecords = "records"

// Limits of a record write.
const (
	maxRecordKey   = 256
	maxRecordValue = 16 << 10
	maxRecordBatch = 256
)

// ErrRecordChanged: a write's record was not at the version it expected
// (another write came first); read again and decide again.
var ErrRecordChanged = errors.New("clms: record changed since it was read")

func checkWrites(ws []RecordWrite) error {
	if len(ws) == 0 || len(ws) > maxRecordBatch {
		return fmt.Errorf("clms: %d record writes in one batch (1-%d)", len(ws), maxRecordBatch)
	}
	for _, w := range ws {
		if w.Key == "" || len(w.Key) > maxRecordKey || strings.ContainsAny(w.Key, "\x00\n") {
			return fmt.Errorf("clms: record key %q: 1-%d bytes, no NUL or newline", w.Key, maxRecordKey)
		}
		if len(w.Value) > maxRecordValue {
			return fmt.Errorf("clms: record %s: value of %d bytes (at most %d)", w.Key, len(w.Value), maxRecordValue)
		}
	}
	return nil
}

// applyRecords applies one batch at index (f.mu held).
func (f *fsm) applyRecords(ws []RecordWrite, index uint64) error {
	if err := checkWrites(ws); err != nil {
		return err
	}
	for _, w := range ws {
		if got := f.records[w.Key].Version; got != w.Expect {
			return fmt.Errorf("%w: %s is at version %d, the write expected %d", ErrRecordChanged, w.Key, got, w.Expect)
		}
	}
	for _, w := range ws {
		if w.Value == nil {
			delete(f.records, w.Key)
			continue
		}
		f.records[w.Key] = Record{Key: w.Key, Value: w.Value, Version: index}
	}
	return nil
}

// recordsWith returns the records whose keys start with prefix, by key.
func (f *fsm) recordsWith(prefix string) []Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Record
	for k, r := range f.records {
		if strings.HasPrefix(k, prefix) {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Records returns this node's copy of the records whose keys start with
// prefix, sorted by key.
func (m *Member) Records(prefix string) []Record { return m.fsm.recordsWith(prefix) }

// WriteRecords commits a batch of record writes; only the master can
// (ErrNotMaster elsewhere). It returns ErrRecordChanged (wrapped) when
// a record was not at its expected version: nothing was written.
func (m *Member) WriteRecords(ws ...RecordWrite) error {
	if err := checkWrites(ws); err != nil {
		return err
	}
	if m.rn().State() != raft.Leader {
		return ErrNotMaster
	}
	b, err := json.Marshal(command{Kind: kindRecords, Writes: ws, At: time.Now().UTC(), Master: m.cfg.Node})
	if err != nil {
		return fmt.Errorf("clms: record write: %w", err)
	}
	f := m.rn().Apply(b, 2*time.Second)
	if err := m.await(f); err != nil {
		return fmt.Errorf("clms: write records %s: %w", ws[0].Key, err)
	}
	m.pushCommit()
	if err, ok := f.Response().(error); ok {
		return err
	}
	return nil
}

// WatchRecords pokes ch (without blocking) whenever records change on
// this node; the returned func stops it.
func (m *Member) WatchRecords(ch chan<- struct{}) (cancel func()) {
	return m.fsm.watch(ch)
}

func (f *fsm) watch(ch chan<- struct{}) func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.nextWatch
	f.nextWatch++
	f.watchers[id] = ch
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.watchers, id)
	}
}

// pokeWatchers tells the watchers records changed (f.mu held).
func (f *fsm) pokeWatchers() {
	for _, ch := range f.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
