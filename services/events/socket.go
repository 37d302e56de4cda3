package events

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/locus-ssi/locus/internal/privsock"
)

// SocketPath is where PID 1 serves the node's feed.
const SocketPath = "/run/locus/private/events.sock"

// PortName is the virtio-serial port of a QEMU VM on which PID 1 writes
// the feed, one event per line, for the host's harness.
const PortName = "org.locus.events"

// follow is the first line a client sends to read the feed; a client
// that publishes sends events instead.
type follow struct {
	Follow *uint64 `json:"follow"`
}

// Listen makes the feed's socket at path, in a directory only root can
// enter (an event is taken as the node's word).
func Listen(path string) (net.Listener, error) {
	ln, err := privsock.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	return ln, nil
}

// Serve answers clients on ln until ctx ends: a client that sends
// {"follow":N} gets the events after N and then each new one; any other
// client's lines are events to publish on f (their sequence numbers and
// times are the feed's).
func Serve(ctx context.Context, ln net.Listener, f *Feed, log *slog.Logger) {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			context.AfterFunc(cctx, func() { conn.Close() })
			if err := serveConn(cctx, cancel, conn, f); err != nil && !errors.Is(err, io.EOF) && cctx.Err() == nil {
				log.Warn("event feed client", "err", err)
			}
		}()
	}
}

// serveConn serves one client; cancel ends ctx (a follower that hangs up
// is noticed at once, not at the next event).
func serveConn(ctx context.Context, cancel context.CancelFunc, conn net.Conn, f *Feed) error {
	sc := newScanner(conn)
	first := true
	for sc.Scan() {
		if first {
			first = false
			var h follow
			if json.Unmarshal(sc.Bytes(), &h) == nil && h.Follow != nil {
				go func() { io.Copy(io.Discard, conn); cancel() }() // notice the client leaving
				return f.Stream(ctx, *h.Follow, func(e Event) error { return Write(conn, e) })
			}
		}
		e, err := Decode(sc.Bytes())
		if err != nil {
			return err
		}
		e.Seq, e.At = 0, time.Time{}
		f.Publish(e)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	return io.EOF
}

func newScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxLine+1)
	return sc
}

// Read decodes a stream of events, one per line, calling got for each,
// until the stream ends (nil) or a line is not an event.
func Read(r io.Reader, got func(Event)) error { return read(r, got, false) }

// ReadSkipping is Read for a stream that may carry other bytes (a
// guest's port): lines that are not events are skipped, not an error.
func ReadSkipping(r io.Reader, got func(Event)) error { return read(r, got, true) }

func read(r io.Reader, got func(Event), skip bool) error {
	sc := newScanner(r)
	for sc.Scan() {
		e, err := Decode(sc.Bytes())
		switch {
		case err != nil && skip:
			continue
		case err != nil:
			return err
		}
		got(e)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	return nil
}

// Remote is the node's feed as a process other than PID 1 sees it: what
// it publishes goes to PID 1's feed, and Feed is a copy of that feed
// (sequence numbers included), kept up to date.
type Remote struct {
	path   string
	log    *slog.Logger
	mirror *Feed
	queue  chan Event
	done   chan struct{}
}

// Dial connects to the feed served at path; the returned Remote works
// until ctx ends, reconnecting when the connection breaks.
func Dial(ctx context.Context, path string, log *slog.Logger) (*Remote, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	c.Close()
	r := &Remote{path: path, log: log, mirror: NewFeed(0), queue: make(chan Event, 1024), done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.follow(ctx) }()
	go func() { defer wg.Done(); r.publish(ctx) }()
	go func() { wg.Wait(); close(r.done) }()
	return r, nil
}

// Feed is the copy of the node's feed.
func (r *Remote) Feed() *Feed { return r.mirror }

// Done is closed once the Remote's goroutines have ended (after ctx).
func (r *Remote) Done() <-chan struct{} { return r.done }

// Publish sends e to the node's feed. It never blocks: if a thousand
// events are waiting for the connection, e is dropped and logged.
func (r *Remote) Publish(e Event) {
	select {
	case r.queue <- e:
	default:
		r.log.Warn("event feed: queue full, event dropped", "kind", e.Kind, "name", e.Name)
	}
}

// retry runs f until ctx ends, pausing between attempts.
func retry(ctx context.Context, f func() error, log *slog.Logger, what string) {
	for ctx.Err() == nil {
		if err := f(); err != nil && ctx.Err() == nil {
			log.Debug("event feed: "+what, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (r *Remote) follow(ctx context.Context) {
	retry(ctx, func() error {
		conn, err := (&net.Dialer{}).DialContext(ctx, "unix", r.path)
		if err != nil {
			return err
		}
		defer conn.Close()
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		defer stop()
		last := r.mirror.Last()
		if err := json.NewEncoder(conn).Encode(follow{Follow: &last}); err != nil {
			return err
		}
		return Read(conn, func(e Event) {
			if err := r.mirror.Mirror(e); err != nil {
				r.log.Debug("event feed", "err", err)
			}
		})
	}, r.log, "follow")
}

func (r *Remote) publish(ctx context.Context) {
	var pending *Event
	retry(ctx, func() error {
		conn, err := (&net.Dialer{}).DialContext(ctx, "unix", r.path)
		if err != nil {
			return err
		}
		defer conn.Close()
		for {
			if pending == nil {
				select {
				case <-ctx.Done():
					return nil
				case e := <-r.queue:
					pending = &e
				}
			}
			if err := Write(conn, *pending); err != nil {
				return err // sent again on the next connection
			}
			pending = nil
		}
	}, r.log, "publish")
}
