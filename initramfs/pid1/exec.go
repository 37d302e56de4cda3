package pid1

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/locus-ssi/locus/services/events"

	"github.com/locus-ssi/locus/internal/virtioport"
	"github.com/locus-ssi/locus/qemu/execwire"
)

// serveExec serves the QEMU exec channel, if this node has one: it runs
// the commands the host sends and answers with their output and status.
// It waits for the port to appear (virtio_console loads in the early phase)
// and reopens it when the host side disconnects.
func (n *Node) serveExec(ctx context.Context) {
	dev := waitPort(ctx, execwire.PortName)
	if dev == "" {
		return // not a QEMU node with an exec channel
	}
	n.log.Info("exec channel ready", "port", dev)
	for ctx.Err() == nil {
		if err := n.serveExecPort(ctx, dev); err != nil && !errors.Is(err, os.ErrClosed) {
			time.Sleep(200 * time.Millisecond)
		}
	}
}

func (n *Node) serveExecPort(ctx context.Context, dev string) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	r := execwire.NewReader(f)
	for ctx.Err() == nil {
		req, err := r.ReadRequest()
		if err != nil {
			if errors.Is(err, execwire.ErrBadMessage) {
				id := uint64(0)
				if req != nil {
					id = req.ID
				}
				if werr := execwire.Write(f, execwire.Response{ID: id, Exit: -1, Error: err.Error()}); werr != nil {
					return werr
				}
				continue
			}
			if errors.Is(err, io.EOF) {
				// No host on the other end, between two exec connections.
				// The port stays open: closing it would throw away a
				// request the next connection may already have sent
				// (virtio_console discards a port's unread data on
				// release), and that exec would wait for an answer that
				// never comes (docs/cfs.md's "exec stall").
				select {
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
				continue
			}
			return err
		}
		resp := n.runRequest(ctx, req)
		if err := execwire.Write(f, resp); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// waitPort returns the device of the virtio-serial port called name,
// waiting a minute for it to appear (virtio_console loads in the early
// phase); "" if it does not (not a QEMU VM) or ctx ends.
func waitPort(ctx context.Context, name string) string {
	for deadline := time.Now().Add(60 * time.Second); ; {
		if dev := virtioport.Find(name); dev != "" {
			return dev
		}
		if time.Now().After(deadline) {
			return ""
		}
		select {
		case <-ctx.Done():
			return ""
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// serveEventPort writes the node's event feed to the QEMU event channel,
// if this node has one: every event from the first, then each new one.
// A write blocks while the host has not connected, so nothing is lost
// before it does; after an error the port is opened again and the feed
// goes on from the last event written.
func (n *Node) serveEventPort(ctx context.Context) {
	dev := waitPort(ctx, events.PortName)
	if dev == "" {
		return
	}
	var last uint64
	for ctx.Err() == nil {
		f, err := os.OpenFile(dev, os.O_WRONLY, 0)
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		n.feed.Stream(ctx, last, func(e events.Event) error {
			if err := events.Write(f, e); err != nil {
				return err
			}
			last = e.Seq
			n.portWritten.Store(last)
			return nil
		})
		f.Close()
		time.Sleep(200 * time.Millisecond)
	}
}

// flushEvents waits, at most wait, until the event port has taken every
// event published (before a power-off, so the host has the last ones). A
// node without the port does not wait.
func (n *Node) flushEvents(wait time.Duration) {
	if virtioport.Find(events.PortName) == "" {
		return
	}
	for deadline := time.Now().Add(wait); n.portWritten.Load() < n.feed.Last() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	bytes.Buffer
	max       int
	truncated bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room < len(p) {
		b.truncated = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

func (n *Node) runRequest(ctx context.Context, req *execwire.Request) execwire.Response {
	timeout := 10 * time.Minute
	if req.TimeoutMS > 0 {
		timeout = time.Duration(req.TimeoutMS) * time.Millisecond
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	root := n.Root()
	if req.Initramfs {
		root = ""
	}
	cmd := commandIn(cctx, root, req.Argv)
	cmd.Env = Env()
	cmd.Stdin = bytes.NewReader(req.Stdin)
	stdout := &limitedBuffer{max: execwire.MaxOutput}
	stderr := &limitedBuffer{max: execwire.MaxOutput}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = time.Second
	err := n.procs.Run(cmd)
	resp := execwire.Response{ID: req.ID, Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), Truncated: stdout.truncated || stderr.truncated}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		resp.Exit = 0
	case cctx.Err() != nil:
		resp.Exit, resp.Error = -1, fmt.Sprintf("timed out after %s", timeout)
	case errors.As(err, &exitErr):
		resp.Exit = exitErr.ExitCode()
	default:
		resp.Exit, resp.Error = -1, err.Error()
	}
	return resp
}
