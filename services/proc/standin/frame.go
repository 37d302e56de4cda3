package standin

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Kind is what a frame carries.
type Kind byte

// Frames from the stand-in.
const (
	KindStart      Kind = 'S' // Start (JSON): the first frame
	KindStdin      Kind = 'i' // bytes for the job's stdin
	KindStdinClose Kind = 'c' // the stand-in's stdin ended: close the job's
	KindResize     Kind = 'r' // Resize (JSON): the terminal's new size
	KindSignal     Kind = 'k' // Signal (JSON): a signal for the job
)

// Frames to the stand-in.
const (
	KindStarted Kind = 'P' // Started (JSON): where the job runs, its CPID
	KindStdout  Kind = 'o' // bytes the job wrote to stdout (or its terminal)
	KindStderr  Kind = 'e' // bytes the job wrote to stderr
	KindExit    Kind = 'x' // Exit (JSON): how the job ended; the last frame
)

// MaxFrame is the largest frame payload.
const MaxFrame = 1 << 20

// Frame is one message of a job's stream.
type Frame struct {
	Kind Kind
	Data []byte
}

// Start is what to run and how: the first frame of a stream.
type Start struct {
	// Node is where to run: a node number, or 0 for the least loaded
	// node (fast).
	Node int      `json:"node"`
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	// TTY asks for a pseudo-terminal of Rows×Cols with $TERM Term.
	TTY  bool   `json:"tty,omitempty"`
	Term string `json:"term,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	// Detach starts the job in its own session with stdio on /dev/null,
	// independent of the stream: the stream ends once it started.
	Detach bool `json:"detach,omitempty"`
	// User is who runs it; the caller's daemon sets it from the caller's
	// identity (whatever a client put there is replaced).
	User *User `json:"user,omitempty"`
	// Origin is the node the stand-in runs on (set by its daemon).
	Origin int `json:"origin,omitempty"`
}

// User is the identity a job runs as: the same uid on every node (the
// shared root has one /etc/passwd).
type User struct {
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups,omitempty"`
}

// Resize is a terminal's size.
type Resize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Signal asks for a signal to the job's process group.
type Signal struct {
	Signo int `json:"signo"`
}

// Started says where the job runs.
type Started struct {
	Node int   `json:"node"`
	PID  int   `json:"pid"`
	CPID int64 `json:"cpid"`
}

// Exit is how a job ended.
type Exit struct {
	// Code is the exit status when the job exited.
	Code int `json:"code"`
	// Signal is the signal that ended it (0: it exited).
	Signal int  `json:"signal,omitempty"`
	Core   bool `json:"core,omitempty"`
	// Lost says the job's node or the stream to it was lost: its fate is
	// unknown (the stand-in exits 255).
	Lost bool `json:"lost,omitempty"`
	// Reason says why, when the job did not simply exit: "node 3 went
	// Down", "prog: command not found".
	Reason string `json:"reason,omitempty"`
	// Node is the node that ended it, when it never started there.
	Node int `json:"node,omitempty"`
}

// Lost is the exit of a job whose stream to its node was cut.
func Lost(reason string) Exit { return Exit{Code: 255, Lost: true, Reason: reason} }

// JSONFrame is a frame with v as its JSON payload.
func JSONFrame(k Kind, v any) Frame {
	b, _ := json.Marshal(v)
	return Frame{Kind: k, Data: b}
}

// Decode reads a JSON frame's payload into v.
func (f Frame) Decode(v any) error {
	if err := json.Unmarshal(f.Data, v); err != nil {
		return fmt.Errorf("proc: %q frame: %w", f.Kind, err)
	}
	return nil
}

// known says whether k is a kind of frame.
func (k Kind) known() bool {
	switch k {
	case KindStart, KindStdin, KindStdinClose, KindResize, KindSignal, KindStarted, KindStdout, KindStderr, KindExit:
		return true
	}
	return false
}

// Marshal is the frame on the wire: kind, payload length (4 bytes, big
// endian), payload.
func (f Frame) Marshal() []byte {
	b := make([]byte, 5+len(f.Data))
	b[0] = byte(f.Kind)
	binary.BigEndian.PutUint32(b[1:], uint32(len(f.Data)))
	copy(b[5:], f.Data)
	return b
}

// UnmarshalFrame reads one whole frame (an ICS message).
func UnmarshalFrame(b []byte) (Frame, error) {
	if len(b) < 5 {
		return Frame{}, fmt.Errorf("proc: frame of %d bytes is shorter than its header", len(b))
	}
	f, n, err := header(b[:5])
	if err != nil {
		return Frame{}, err
	}
	if n != len(b)-5 {
		return Frame{}, fmt.Errorf("proc: %q frame says %d bytes and has %d", f.Kind, n, len(b)-5)
	}
	f.Data = b[5:]
	return f, nil
}

func header(h []byte) (Frame, int, error) {
	k := Kind(h[0])
	if !k.known() {
		return Frame{}, 0, fmt.Errorf("proc: unknown frame kind %q", h[0])
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > MaxFrame {
		return Frame{}, 0, fmt.Errorf("proc: %q frame of %d bytes is over the limit of %d", k, n, MaxFrame)
	}
	return Frame{Kind: k}, int(n), nil
}

// Conn carries frames over a byte stream (a unix socket or TLS
// connection to a node daemon): reads from one goroutine, writes from
// any.
type Conn struct {
	rw  io.ReadWriteCloser
	r   *bufio.Reader
	wmu sync.Mutex
}

// NewConn frames rw.
func NewConn(rw io.ReadWriteCloser) *Conn { return &Conn{rw: rw, r: bufio.NewReaderSize(rw, 64<<10)} }

// Read returns the next frame; io.EOF at a clean end between frames.
func (c *Conn) Read() (Frame, error) {
	var h [5]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, fmt.Errorf("proc: stream cut inside a frame header")
		}
		return Frame{}, err
	}
	f, n, err := header(h[:])
	if err != nil {
		return Frame{}, err
	}
	f.Data = make([]byte, n)
	if _, err := io.ReadFull(c.r, f.Data); err != nil {
		return Frame{}, fmt.Errorf("proc: stream cut inside a %q frame: %w", f.Kind, err)
	}
	return f, nil
}

// Write sends a frame.
func (c *Conn) Write(f Frame) error {
	if len(f.Data) > MaxFrame {
		return fmt.Errorf("proc: %q frame of %d bytes is over the limit", f.Kind, len(f.Data))
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.rw.Write(f.Marshal())
	return err
}

// Close closes the stream.
func (c *Conn) Close() error { return c.rw.Close() }
