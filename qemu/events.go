package qemu

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/locus-ssi/locus/services/events"
)

// eventsPath is the VM's event channel socket (QEMU's end of init's
// org.locus.events port).
func eventsPath(dir string) string { return filepath.Join(dir, "events.sock") }

// EventLog is the file where the harness keeps node n's events: one JSON
// object per line, in the order received, from every boot since QEMU was
// last started for the node (a PXE node may reboot in one QEMU run).
func EventLog(dir string, n int) string {
	return filepath.Join(dir, fmt.Sprintf("node%d", n), "events.jsonl")
}

// ReadEventLog reads an event log that EventLog names.
func ReadEventLog(path string) ([]events.Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("qemu: event log: %w", err)
	}
	defer f.Close()
	var out []events.Event
	err = events.Read(f, func(e events.Event) { out = append(out, e) })
	return out, err
}

// eventLog is what the harness has received of a VM's events.
type eventLog struct {
	mu      sync.Mutex
	all     []events.Event
	changed chan struct{} // closed and replaced on each event
	ended   bool
}

func newEventLog() *eventLog { return &eventLog{changed: make(chan struct{})} }

func (l *eventLog) add(e events.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, e)
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *eventLog) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ended = true
	close(l.changed)
	l.changed = make(chan struct{})
}

// readEvents reads the VM's event channel until QEMU exits: every event
// goes to the VM's event log file and to onEvent. QEMU makes the socket
// at start; it is dialled until it answers.
func (vm *VM) readEvents(done <-chan struct{}, onEvent func(events.Event, time.Duration)) {
	defer vm.events.end()
	var conn net.Conn
	for conn == nil {
		c, err := net.Dial("unix", eventsPath(vm.dir))
		if err == nil {
			conn = c
			break
		}
		select {
		case <-done:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	defer conn.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-done:
		case <-stop:
		}
		conn.Close()
	}()
	logFile, err := os.Create(filepath.Join(vm.dir, "events.jsonl"))
	if err != nil {
		return
	}
	defer logFile.Close()
	// What is not an event (the guest's noise) is skipped; the channel
	// goes on.
	events.ReadSkipping(conn, func(e events.Event) {
		events.Write(logFile, e)
		vm.events.add(e)
		onEvent(e, time.Since(vm.started))
	})
}

// Events returns the events received from the VM so far, every boot's.
func (vm *VM) Events() []events.Event {
	vm.events.mu.Lock()
	defer vm.events.mu.Unlock()
	return append([]events.Event(nil), vm.events.all...)
}

// WaitEvent waits for an event match accepts among those received from
// index from on (0: the first), and returns it with its index. It fails
// when ctx ends or the VM has exited.
func (vm *VM) WaitEvent(ctx context.Context, from int, match func(events.Event) bool) (events.Event, int, error) {
	l := vm.events
	for i := from; ; {
		l.mu.Lock()
		for ; i < len(l.all); i++ {
			if match(l.all[i]) {
				e := l.all[i]
				l.mu.Unlock()
				return e, i, nil
			}
		}
		ch, ended := l.changed, l.ended
		l.mu.Unlock()
		if ended {
			return events.Event{}, 0, fmt.Errorf("qemu: node %d: the VM stopped before the event came", vm.cfg.Number)
		}
		select {
		case <-ctx.Done():
			return events.Event{}, 0, fmt.Errorf("qemu: node %d: no such event: %w", vm.cfg.Number, ctx.Err())
		case <-ch:
		}
	}
}

// Reached matches the event of init reaching its run level.
func Reached(e events.Event) bool { return e.Kind == events.RunLevelReached }
