// Package execwire is the protocol of the QEMU exec channel: the host asks
// a node's init, over a virtio-serial port, to run a command, and gets its
// output and exit code back. One JSON object per line each way; a request
// carries an id that its response echoes, so a response to an abandoned
// request is recognised and skipped.
//
// The channel exists only on QEMU clusters, for tests and rescue: it is the
// hypervisor's own wire, not a network service.
package execwire

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// PortName is the virtio-serial port name init serves.
const PortName = "org.locus.exec"

// Limits on what crosses the channel.
const (
	MaxLine   = 8 << 20 // one encoded message
	MaxOutput = 2 << 20 // stdout and stderr, each
	MaxArgs   = 256
)

// Request asks the guest to run Argv.
type Request struct {
	ID        uint64   `json:"id"`
	Argv      []string `json:"argv"`
	Stdin     []byte   `json:"stdin,omitempty"`
	TimeoutMS int64    `json:"timeout_ms,omitempty"`
	// Initramfs runs the command in init's own root rather than the
	// node's shared root: for rescue when the shared root hangs.
	Initramfs bool `json:"initramfs,omitempty"`
}

// Response is the outcome of a Request.
type Response struct {
	ID     uint64 `json:"id"`
	Stdout []byte `json:"stdout"`
	Stderr []byte `json:"stderr"`
	// Exit is the exit code; -1 if the command did not run or was killed.
	Exit int `json:"exit"`
	// Error says why the command did not run or did not finish.
	Error string `json:"error,omitempty"`
	// Truncated is set when output was cut at MaxOutput.
	Truncated bool `json:"truncated,omitempty"`
}

// ErrBadMessage is returned (wrapped) for a line that is not a valid message.
var ErrBadMessage = errors.New("execwire: bad message")

// Reader reads messages from a stream.
type Reader struct{ r *bufio.Reader }

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader { return &Reader{bufio.NewReaderSize(r, 64<<10)} }

// line reads one line of at most MaxLine bytes. An over-long line is
// consumed and reported as ErrBadMessage, so the stream stays in step.
func (r *Reader) line() ([]byte, error) {
	var buf []byte
	long := false
	for {
		chunk, err := r.r.ReadSlice('\n')
		if !long {
			if len(buf)+len(chunk) > MaxLine {
				long, buf = true, nil
			} else {
				buf = append(buf, chunk...)
			}
		}
		switch {
		case err == nil:
			if long {
				return nil, fmt.Errorf("%w: line longer than %d bytes", ErrBadMessage, MaxLine)
			}
			return buf, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return nil, err
		}
	}
}

// ReadRequest reads and checks one request.
func (r *Reader) ReadRequest() (*Request, error) {
	b, err := r.line()
	if err != nil {
		return nil, err
	}
	return DecodeRequest(b)
}

// ReadResponse reads one response.
func (r *Reader) ReadResponse() (*Response, error) {
	b, err := r.line()
	if err != nil {
		return nil, err
	}
	var resp Response
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	return &resp, nil
}

// DecodeRequest parses and checks one encoded request.
func DecodeRequest(b []byte) (*Request, error) {
	var req Request
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return &req, fmt.Errorf("%w: request %d has no command", ErrBadMessage, req.ID)
	}
	if len(req.Argv) > MaxArgs {
		return &req, fmt.Errorf("%w: request %d has %d arguments, at most %d", ErrBadMessage, req.ID, len(req.Argv), MaxArgs)
	}
	if req.TimeoutMS < 0 {
		return &req, fmt.Errorf("%w: request %d has a negative timeout", ErrBadMessage, req.ID)
	}
	return &req, nil
}

// Write encodes v as one line.
func Write(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
