package qemu

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/locus-ssi/locus/qemu/execwire"
)

// ExecResult is the outcome of a command run on a node.
type ExecResult struct {
	Stdout []byte
	Stderr []byte
	Exit   int
}

// ErrExecUnavailable means the node's exec channel did not answer: the VM
// is off, or its init is not serving the channel (yet).
var ErrExecUnavailable = errors.New("exec channel unavailable")

// Exec runs argv on the node whose exec socket is sock and returns its
// output and exit code. The command runs under the node's init with the
// deadline of ctx (10 minutes when ctx has none).
func Exec(ctx context.Context, sock string, argv []string, stdin []byte) (*ExecResult, error) {
	return ExecIn(ctx, sock, argv, stdin, false)
}

// WriteFile writes data to path on the node whose exec socket is sock,
// mode 0755, making its directory, in pieces the channel carries (a
// message is at most execwire.MaxLine bytes): how tests and benchmarks
// put programs onto a node's root. The node needs busybox, as images
// have it at /usr/local/bin/busybox.
func WriteFile(ctx context.Context, sock, path string, data []byte) error {
	const piece = 4 << 20 // base64 in JSON: well under MaxLine
	sh := func(script string, chunk []byte) error {
		res, err := Exec(ctx, sock, []string{"/usr/local/bin/busybox", "sh", "-c", script}, chunk)
		if err == nil && res.Exit != 0 {
			err = fmt.Errorf("exit %d: %s", res.Exit, res.Stderr)
		}
		if err != nil {
			return fmt.Errorf("qemu: write %s: %w", path, err)
		}
		return nil
	}
	q := "'" + strings.ReplaceAll(path, "'", `'\''`) + "'"
	dir := "'" + strings.ReplaceAll(filepath.Dir(path), "'", `'\''`) + "'"
	if err := sh("mkdir -p "+dir+" && : > "+q+" && chmod 755 "+q, nil); err != nil {
		return err
	}
	for off := 0; off < len(data); off += piece {
		if err := sh("cat >> "+q, data[off:min(off+piece, len(data))]); err != nil {
			return err
		}
	}
	return nil
}

// ExecIn is Exec, in init's own root (the initramfs) when initramfs is
// set rather than the node's shared root: what a rescue needs when the
// shared root's server does not answer.
func ExecIn(ctx context.Context, sock string, argv []string, stdin []byte, initramfs bool) (*ExecResult, error) {
	if len(argv) == 0 {
		return nil, errors.New("qemu: exec: no command")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, fmt.Errorf("qemu: exec: %w: %w", ErrExecUnavailable, err)
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Minute)
	}
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	var idb [8]byte
	rand.Read(idb[:])
	req := execwire.Request{ID: binary.LittleEndian.Uint64(idb[:]), Argv: argv, Stdin: stdin, TimeoutMS: time.Until(deadline).Milliseconds(), Initramfs: initramfs}
	if err := execwire.Write(conn, req); err != nil {
		return nil, fmt.Errorf("qemu: exec: send: %w", err)
	}
	r := execwire.NewReader(conn)
	for {
		resp, err := r.ReadResponse()
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("qemu: exec %q: %w", argv[0], ctx.Err())
			}
			if errors.Is(err, execwire.ErrBadMessage) {
				continue // noise from an earlier, abandoned session
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, fmt.Errorf("qemu: exec %q: %w: no answer before the deadline", argv[0], ErrExecUnavailable)
			}
			return nil, fmt.Errorf("qemu: exec %q: %w", argv[0], err)
		}
		if resp.ID != req.ID {
			continue // the answer to an abandoned request
		}
		if resp.Error != "" && resp.Exit == -1 {
			return &ExecResult{Stdout: resp.Stdout, Stderr: resp.Stderr, Exit: -1}, fmt.Errorf("qemu: exec %q on the node: %s", argv[0], resp.Error)
		}
		return &ExecResult{Stdout: resp.Stdout, Stderr: resp.Stderr, Exit: resp.Exit}, nil
	}
}
