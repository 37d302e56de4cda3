package cfs

import (
	"context"
	"fmt"
	"net"
	"os"

	"github.com/locus-ssi/locus/internal/fusefd"
)

// The FUSE hand-off (internal/fusefd): init mounts the shared root (it
// owns the mount namespace and the node's boot), the relay in locusd
// serves it.

// MountFUSE opens /dev/fuse and mounts the shared root's FUSE connection
// on dir; the caller hands the returned device to the relay (HandOff).
func MountFUSE(dir string) (*os.File, error) {
	return fusefd.Mount("cfs", dir, "fuse.cfs", fmt.Sprintf("%s,max_read=%d", FUSEMountOptions, fuseMaxWrite))
}

// HandOff gives the relay listening on socket the FUSE connection dev
// and waits until it serves it, or says why it cannot.
func HandOff(ctx context.Context, socket string, dev *os.File) error {
	return fusefd.HandOff(ctx, socket, dev)
}

// ServeHandOffs takes FUSE connections of the shared root from init on
// ln and serves them, until ctx ends. A mount served is served until it
// is unmounted (or its connection aborted), also after ctx ends: the
// node's processes run on it.
func (r *Relay) ServeHandOffs(ctx context.Context, ln *net.UnixListener) error {
	return fusefd.Serve(ctx, ln, r.serveFD, r.log)
}

// serveFD serves the FUSE connection fd; the serving goroutine ends
// when the mount does.
func (r *Relay) serveFD(fd int) error {
	srv, err := r.NewFUSEServer(fd)
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
