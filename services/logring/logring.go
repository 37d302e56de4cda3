// Package logring keeps a daemon's structured log (log/slog) in a
// bounded ring, beside wherever else it goes, so that `locus logs` can
// read every node's recent lines and follow new ones. Handler tees each
// record into the ring and on to the next handler; Ring numbers the
// lines and hands out those after a sequence number, waiting for new
// ones when asked to.
package logring

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultSize is how many lines a ring keeps.
const DefaultSize = 4096

// Line is one log record.
type Line struct {
	Seq   uint64    `json:"seq"`
	At    time.Time `json:"at"`
	Node  int       `json:"node,omitempty"`
	Level string    `json:"level"`
	Msg   string    `json:"msg"`
	// Attrs are the record's attributes as key=value, in order (groups
	// dotted, as slog's text handler writes them).
	Attrs string `json:"attrs,omitempty"`
}

// String is the line as one line of text.
func (l Line) String() string {
	s := fmt.Sprintf("%s node %d %-5s %s", l.At.Local().Format("15:04:05.000"), l.Node, l.Level, l.Msg)
	if l.Attrs != "" {
		s += " " + l.Attrs
	}
	return s
}

// Ring is a bounded, numbered log.
type Ring struct {
	mu    sync.Mutex
	node  int
	lines []Line // oldest first, at most size
	size  int
	last  uint64
	wake  chan struct{} // closed and replaced at each new line
	id    string        // this ring's, so a reader sees a new one (a reboot) as such
	disk  *persist      // where lines are written too (Persist), or nil
}

// New makes a ring of size lines (DefaultSize if 0).
func New(size int) *Ring {
	if size <= 0 {
		size = DefaultSize
	}
	return &Ring{size: size, wake: make(chan struct{}), id: strconv.FormatInt(time.Now().UnixNano(), 36)}
}

// ID names this ring: its lines' numbers count from 1 in each.
func (r *Ring) ID() string { return r.id }

// SetNode sets the node number its lines carry (once the daemon knows
// it).
func (r *Ring) SetNode(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.node = n
}

func (r *Ring) add(l Line) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addLocked(l)
}

func (r *Ring) addLocked(l Line) {
	r.last++
	l.Seq, l.Node = r.last, r.node
	if len(r.lines) == r.size {
		copy(r.lines, r.lines[1:])
		r.lines = r.lines[:len(r.lines)-1]
	}
	r.lines = append(r.lines, l)
	if r.disk != nil {
		r.disk.write(r, l)
	}
	close(r.wake)
	r.wake = make(chan struct{})
}

// Filter selects lines.
type Filter struct {
	Since time.Time  // lines at or after (zero: all kept)
	Level slog.Level // at least
	Grep  *regexp.Regexp
}

// ParseFilter makes a filter from its text forms: since a duration ago
// ("" for all), a level name (debug, info, warn, error; "" for all) and
// a regular expression ("" for none); errors name the bad one.
func ParseFilter(since, level, grep string, now time.Time) (Filter, error) {
	f := Filter{Level: slog.LevelDebug}
	if since != "" {
		d, err := time.ParseDuration(since)
		if err != nil || d < 0 {
			return f, fmt.Errorf("logs: since %q: want a duration like 10m", since)
		}
		f.Since = now.Add(-d)
	}
	if level != "" {
		if err := f.Level.UnmarshalText([]byte(level)); err != nil {
			return f, fmt.Errorf("logs: level %q: want debug, info, warn or error", level)
		}
	}
	if grep != "" {
		re, err := regexp.Compile(grep)
		if err != nil {
			return f, fmt.Errorf("logs: grep %q: %w", grep, err)
		}
		f.Grep = re
	}
	return f, nil
}

// Match says whether l passes f.
func (f Filter) Match(l Line) bool {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err == nil && lv < f.Level {
		return false
	}
	if !f.Since.IsZero() && l.At.Before(f.Since) {
		return false
	}
	return f.Grep == nil || f.Grep.MatchString(l.Msg+" "+l.Attrs)
}

// After returns the lines after seq that f matches, and the last
// sequence number the ring has given.
func (r *Ring) After(seq uint64, f Filter) ([]Line, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Line
	for _, l := range r.lines {
		if l.Seq > seq && f.Match(l) {
			out = append(out, l)
		}
	}
	return out, r.last
}

// Wait waits until the ring has a line after seq, or ctx ends.
func (r *Ring) Wait(ctx context.Context, seq uint64) error {
	for {
		r.mu.Lock()
		last, wake := r.last, r.wake
		r.mu.Unlock()
		if last > seq {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		}
	}
}

// Handler tees records into a ring and on to next.
type Handler struct {
	next  slog.Handler
	ring  *Ring
	attrs string // pre-set attributes, formatted
	group string // the open group's prefix ("a.b.")
}

// NewHandler is next, with each record also kept in ring.
func NewHandler(next slog.Handler, ring *Ring) *Handler {
	return &Handler{next: next, ring: ring}
}

// Enabled follows the next handler's level.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle keeps r and passes it on.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, h.group, a)
		return true
	})
	at := r.Time
	if at.IsZero() {
		at = time.Now()
	}
	h.ring.add(Line{At: at, Level: r.Level.String(), Msg: r.Message, Attrs: strings.TrimSpace(b.String())})
	return h.next.Handle(ctx, r)
}

// WithAttrs keeps attrs for every record.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range attrs {
		appendAttr(&b, h.group, a)
	}
	return &Handler{next: h.next.WithAttrs(attrs), ring: h.ring, attrs: b.String(), group: h.group}
}

// WithGroup opens a group.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &Handler{next: h.next.WithGroup(name), ring: h.ring, attrs: h.attrs, group: h.group + name + "."}
}

func appendAttr(b *strings.Builder, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			appendAttr(b, p, g)
		}
		return
	}
	v := a.Value.String()
	if strings.ContainsAny(v, " \"=\n") || v == "" {
		v = fmt.Sprintf("%q", v)
	}
	b.WriteString(" " + prefix + a.Key + "=" + v)
}

// Merge orders lines from several nodes by time (then node, then seq).
func Merge(lines []Line) []Line {
	out := slices.Clone(lines)
	slices.SortStableFunc(out, func(a, b Line) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		if a.Node != b.Node {
			return a.Node - b.Node
		}
		return int(a.Seq) - int(b.Seq)
	})
	return out
}
