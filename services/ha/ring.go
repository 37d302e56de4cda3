package ha

import (
	"bufio"
	"io"
	"strings"
	"sync"
	"time"
)

// LogLine is one line of an instance's output or of what the daemon did
// with it.
type LogLine struct {
	At       time.Time `json:"at"`
	Service  string    `json:"service"`
	Instance string    `json:"instance"`
	Node     int       `json:"node"`
	// Stream: stdout, stderr (the command's or the agent's), ocf (an
	// agent action's result), locus (the supervisor).
	Stream string `json:"stream"`
	Text   string `json:"text"`
}

// ringLines is how many lines an instance keeps.
const ringLines = 1000

// ring keeps an instance's last lines.
type ring struct {
	mu       sync.Mutex
	service  string
	instance string
	node     int
	lines    []LogLine
	next     int
	full     bool
}

func newRing(service, instance string, node int) *ring {
	return &ring{service: service, instance: instance, node: node, lines: make([]LogLine, ringLines)}
}

func (r *ring) add(stream, text string) {
	if len(text) > 4096 {
		text = text[:4096]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines[r.next] = LogLine{At: time.Now().UTC(), Service: r.service, Instance: r.instance, Node: r.node, Stream: stream, Text: strings.ToValidUTF8(text, "?")}
	r.next = (r.next + 1) % len(r.lines)
	if r.next == 0 {
		r.full = true
	}
}

// copy adds every line read from rd until it ends.
func (r *ring) copy(stream string, rd io.Reader) {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		r.add(stream, sc.Text())
	}
	io.Copy(io.Discard, rd) // a line over the limit: drain the rest
}

// all is the kept lines, oldest first.
func (r *ring) all() []LogLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		return append([]LogLine(nil), r.lines[:r.next]...)
	}
	return append(append([]LogLine(nil), r.lines[r.next:]...), r.lines[:r.next]...)
}
