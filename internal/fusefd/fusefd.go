// Package fusefd hands a FUSE connection from the process that mounts
// it (init, which owns the node's mounts and boot) to the one that
// serves it (locusd), over a unix socket with SCM_RIGHTS:
//
//	init                                   server (locusd)
//	connect socket
//	open /dev/fuse, mount fd=N on dir
//	send N (SCM_RIGHTS) ------------------>  serve the kernel's requests
//	"ok" or "error: why" <-----------------
//
// Until the server answers, nothing may touch the mount point: every
// access would wait for a server that is not serving yet.
package fusefd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Mount opens /dev/fuse and mounts a connection of type fstype (fuse.X)
// named source on dir with opts (fd= is added); the caller hands the
// returned device to its server (HandOff).
func Mount(source, dir, fstype, opts string) (*os.File, error) {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("fusefd: open /dev/fuse: %w", err)
	}
	dev := os.NewFile(uintptr(fd), "/dev/fuse")
	opts = fmt.Sprintf("fd=%d,%s", fd, opts)
	if err := unix.Mount(source, dir, fstype, 0, opts); err != nil {
		dev.Close()
		return nil, fmt.Errorf("fusefd: mount %s on %s (%s): %w", fstype, dir, opts, err)
	}
	return dev, nil
}

// HandOff gives the server listening on socket the FUSE connection dev
// and waits until it serves it, or says why it cannot.
func HandOff(ctx context.Context, socket string, dev *os.File) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return fmt.Errorf("fusefd: hand-off: dial %s: %w", socket, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	uc := c.(*net.UnixConn)
	if _, _, err := uc.WriteMsgUnix([]byte{'F'}, unix.UnixRights(int(dev.Fd())), nil); err != nil {
		return fmt.Errorf("fusefd: hand-off: send the FUSE connection to %s: %w", socket, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("fusefd: hand-off: no answer from the server on %s: %w", socket, err)
	}
	line = strings.TrimSpace(line)
	if line != "ok" {
		return fmt.Errorf("fusefd: hand-off: the server on %s: %s", socket, strings.TrimPrefix(line, "error: "))
	}
	return nil
}

// Serve takes FUSE connections on ln and gives each to take, which
// returns once it serves it (or why it cannot), until ctx ends. A mount
// served is served until it is unmounted, also after ctx ends.
func Serve(ctx context.Context, ln *net.UnixListener, take func(fd int) error, log *slog.Logger) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer wg.Wait()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("fusefd: accept on %s: %w", ln.Addr(), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			err := receive(c, take)
			answer := "ok\n"
			if err != nil {
				log.Error("fusefd: cannot serve a FUSE mount handed over", "socket", ln.Addr().String(), "err", err)
				answer = "error: " + strings.ReplaceAll(err.Error(), "\n", " ") + "\n"
			}
			c.Write([]byte(answer))
		}()
	}
}

// receive reads one FUSE connection from c and hands it to take.
func receive(c *net.UnixConn, take func(fd int) error) error {
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return fmt.Errorf("read the hand-off: %w", err)
	}
	c.SetReadDeadline(time.Time{})
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fmt.Errorf("the hand-off carries no descriptor (%d control messages, %v)", len(msgs), err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return fmt.Errorf("the hand-off carries %d descriptors, want 1 (%v)", len(fds), err)
	}
	return take(fds[0])
}
