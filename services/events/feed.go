package events

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Publisher takes events to publish; the feed numbers and stamps them.
type Publisher interface {
	Publish(Event)
}

// DefaultSize is how many events a feed keeps: a boot of a node makes a
// few hundred; a long-lived one drops its oldest.
const DefaultSize = 4096

// Feed is a node's events, numbered in the order published, the last
// size of them kept in memory.
type Feed struct {
	mu     sync.Mutex
	node   int
	size   int
	events []Event
	last   uint64
	// wake is closed (and replaced) whenever an event is added.
	wake chan struct{}
}

// NewFeed returns an empty feed keeping the last size events
// (DefaultSize if size <= 0).
func NewFeed(size int) *Feed {
	if size <= 0 {
		size = DefaultSize
	}
	return &Feed{size: size, wake: make(chan struct{})}
}

// SetNode sets the node number stamped on events published without one
// (init learns its number in the network phase).
func (f *Feed) SetNode(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.node = n
}

// Publish adds e with the next sequence number, the time now (unless e
// has one) and the feed's node (unless e names one).
func (f *Feed) Publish(e Event) { f.Add(e) }

// Add is Publish, returning the event as stored.
func (f *Feed) Add(e Event) Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last++
	e.Seq = f.last
	if e.At.IsZero() {
		e.At = time.Now().UTC()
	}
	if e.Node == 0 {
		e.Node = f.node
	}
	f.store(e)
	return e
}

// Mirror adds an event numbered elsewhere (a copy of another process's
// feed); sequence numbers must grow.
func (f *Feed) Mirror(e Event) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e.Seq <= f.last {
		return fmt.Errorf("%w: seq %d after %d", ErrBadEvent, e.Seq, f.last)
	}
	f.last = e.Seq
	f.store(e)
	return nil
}

func (f *Feed) store(e Event) {
	f.events = append(f.events, e)
	if len(f.events) > f.size {
		f.events = append(f.events[:0:0], f.events[len(f.events)-f.size:]...)
	}
	close(f.wake)
	f.wake = make(chan struct{})
}

// Last is the sequence number of the newest event (0: none yet).
func (f *Feed) Last() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// Since returns the events kept whose sequence number is after seq.
func (f *Feed) Since(seq uint64) []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.since(seq)
}

func (f *Feed) since(seq uint64) []Event {
	// Sequence numbers are dense within what is kept (Mirror may skip
	// some), so search.
	i := len(f.events)
	for i > 0 && f.events[i-1].Seq > seq {
		i--
	}
	return append([]Event(nil), f.events[i:]...)
}

// Next waits until there are events after seq and returns them, or
// returns ctx's error.
func (f *Feed) Next(ctx context.Context, seq uint64) ([]Event, error) {
	for {
		f.mu.Lock()
		evs, wake := f.since(seq), f.wake
		f.mu.Unlock()
		if len(evs) > 0 {
			return evs, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wake:
		}
	}
}

// Stream writes the events after seq to write, then each new one as it
// comes, until ctx ends or write fails.
func (f *Feed) Stream(ctx context.Context, seq uint64, write func(Event) error) error {
	for {
		evs, err := f.Next(ctx, seq)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if err := write(e); err != nil {
				return err
			}
			seq = e.Seq
		}
	}
}
