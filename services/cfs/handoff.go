package cfs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The FUSE hand-off: init mounts the shared root (it owns the mount
// namespace and the node's boot), the relay in locusd serves it.
//
//	init                                   relay (locusd)
//	connect FUSESocket
//	open /dev/fuse, mount fd=N on /sysroot
//	send N (SCM_RIGHTS) ------------------>  attach to the CFS server
//	                                         serve the kernel's requests
//	"ok" or "error: why" <-----------------
//
// Until the relay answers, nothing may touch the mount point: every
// access would wait for a server that is not serving yet.

// MountFUSE opens /dev/fuse and mounts the shared root's FUSE connection
// on dir; the caller hands the returned device to the relay (HandOff).
func MountFUSE(dir string) (*os.File, error) {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cfs: open /dev/fuse: %w", err)
	}
	dev := os.NewFile(uintptr(fd), "/dev/fuse")
	opts := fmt.Sprintf("fd=%d,%s,max_read=%d", fd, FUSEMountOptions, fuseMaxWrite)
	if err := unix.Mount("cfs", dir, "fuse.cfs", 0, opts); err != nil {
		dev.Close()
		return nil, fmt.Errorf("cfs: mount fuse.cfs on %s (%s): %w", dir, opts, err)
	}
	return dev, nil
}

// HandOff gives the relay listening on socket the FUSE connection dev
// and waits until it serves it, or says why it cannot.
func HandOff(ctx context.Context, socket string, dev *os.File) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return fmt.Errorf("cfs: hand-off: dial %s: %w", socket, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	uc := c.(*net.UnixConn)
	if _, _, err := uc.WriteMsgUnix([]byte{'F'}, unix.UnixRights(int(dev.Fd())), nil); err != nil {
		return fmt.Errorf("cfs: hand-off: send the FUSE connection to %s: %w", socket, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("cfs: hand-off: no answer from the relay on %s: %w", socket, err)
	}
	line = strings.TrimSpace(line)
	if line != "ok" {
		return fmt.Errorf("cfs: hand-off: the relay on %s: %s", socket, strings.TrimPrefix(line, "error: "))
	}
	return nil
}

// ServeHandOffs takes FUSE connections of the shared root from init on
// ln and serves them, until ctx ends. A mount served is served until it
// is unmounted (or its connection aborted), also after ctx ends: the
// node's processes run on it.
func (r *Relay) ServeHandOffs(ctx context.Context, ln *net.UnixListener) error {
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
			return fmt.Errorf("cfs relay: accept on %s: %w", ln.Addr(), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			err := r.takeOver(c)
			answer := "ok\n"
			if err != nil {
				r.log.Error("cfs relay: cannot serve the shared root's FUSE mount", "err", err)
				answer = "error: " + strings.ReplaceAll(err.Error(), "\n", " ") + "\n"
			}
			c.Write([]byte(answer))
		}()
	}
}

// takeOver reads one FUSE connection from c and starts serving it. The
// serving goroutine ends when the mount does.
func (r *Relay) takeOver(c *net.UnixConn) error {
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
	srv, err := r.NewFUSEServer(fds[0])
	if err != nil {
		return err
	}
	go func() {
		srv.Serve()
		r.log.Info("cfs relay: the shared root's FUSE mount is gone")
	}()
	if err := srv.WaitMount(); err != nil {
		return fmt.Errorf("serve the FUSE connection: %w", err)
	}
	r.log.Info("cfs relay: serving the shared root over FUSE")
	return nil
}
