package qemu

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"sync"
	"time"
)

// Console records a VM's serial output: a log file with one timestamped
// line per console line ("[   12.345] text", seconds since the VM
// started), the lines in memory for WaitLine, and a fan-out of the raw
// bytes to attached terminals.
type Console struct {
	start  time.Time
	log    *os.File
	onLine func(line string, at time.Duration)

	mu      sync.Mutex
	lines   []string
	partial []byte
	changed chan struct{} // closed and replaced on every new line
	closed  bool
	subs    map[chan []byte]struct{}
}

// NewConsole returns a console logging to path (appended to).
func NewConsole(path string, start time.Time, onLine func(string, time.Duration)) (*Console, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("qemu: serial log: %w", err)
	}
	fmt.Fprintf(f, "--- VM started %s ---\n", start.Format(time.RFC3339Nano))
	return &Console{start: start, log: f, onLine: onLine, changed: make(chan struct{}), subs: map[chan []byte]struct{}{}}, nil
}

// Pump copies r (the VM's serial output) into the console until r ends.
func (c *Console) Pump(r io.Reader) {
	br := bufio.NewReaderSize(r, 32<<10)
	buf := make([]byte, 32<<10)
	for {
		n, err := br.Read(buf)
		if n > 0 {
			c.write(buf[:n])
		}
		if err != nil {
			break
		}
	}
	c.mu.Lock()
	if len(c.partial) > 0 {
		c.addLine(string(c.partial))
		c.partial = nil
	}
	c.closed = true
	close(c.changed)
	c.changed = make(chan struct{})
	for s := range c.subs {
		close(s)
		delete(c.subs, s)
	}
	c.mu.Unlock()
	c.log.Close()
}

func (c *Console) write(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.subs {
		select {
		case s <- append([]byte(nil), p...):
		default: // a slow terminal misses output rather than stall the VM
		}
	}
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		line := string(bytes.TrimRight(c.partial[:i], "\r"))
		c.partial = c.partial[i+1:]
		c.addLine(line)
	}
}

// addLine records one line; c.mu is held.
func (c *Console) addLine(line string) {
	at := time.Since(c.start)
	fmt.Fprintf(c.log, "[%9.3f] %s\n", at.Seconds(), line)
	c.lines = append(c.lines, line)
	close(c.changed)
	c.changed = make(chan struct{})
	if c.onLine != nil {
		c.onLine(line, at)
	}
}

// Lines returns a copy of the lines seen so far.
func (c *Console) Lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

// WaitLine waits for a line matching re, searching from the start of the
// output, and returns it. It fails when ctx ends or the VM's output ends.
func (c *Console) WaitLine(ctx context.Context, re *regexp.Regexp) (string, error) {
	return c.WaitLineFrom(ctx, re, 0)
}

// WaitLineFrom is WaitLine searching from line index from on.
func (c *Console) WaitLineFrom(ctx context.Context, re *regexp.Regexp, from int) (string, error) {
	for i := from; ; {
		c.mu.Lock()
		for ; i < len(c.lines); i++ {
			if re.MatchString(c.lines[i]) {
				l := c.lines[i]
				c.mu.Unlock()
				return l, nil
			}
		}
		ch, closed := c.changed, c.closed
		c.mu.Unlock()
		if closed {
			return "", fmt.Errorf("qemu: console ended before a line matched %q", re)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("qemu: no console line matched %q: %w", re, ctx.Err())
		case <-ch:
		}
	}
}

// Subscribe returns a channel of raw output from now on; cancel stops it.
func (c *Console) Subscribe() (<-chan []byte, func()) {
	ch := make(chan []byte, 256)
	c.mu.Lock()
	if c.closed {
		close(ch)
		c.mu.Unlock()
		return ch, func() {}
	}
	c.subs[ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		if _, ok := c.subs[ch]; ok {
			delete(c.subs, ch)
			close(ch)
		}
		c.mu.Unlock()
	}
}
