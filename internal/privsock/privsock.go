// Package privsock listens on a unix socket in a directory only root can
// enter, so that whoever connects is root on this machine: the node
// daemon's event feed and CFS relay sockets are made this way.
package privsock

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// Listen makes path's directory (mode 0700, also when it existed with
// another mode), removes a socket left at path by an earlier process, and
// listens there.
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("privsock: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("privsock: %w", err)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("privsock: %w", err)
	}
	return ln, nil
}

// IsPath says whether addr names a unix socket (an absolute path) rather
// than a TCP host:port.
func IsPath(addr string) bool { return filepath.IsAbs(addr) }

// ListenAddr listens on addr: a unix socket made as Listen makes it when
// addr is a path, else TCP (for tests on loopback).
func ListenAddr(addr string) (net.Listener, error) {
	if IsPath(addr) {
		return Listen(addr)
	}
	return net.Listen("tcp", addr)
}

// HTTPClient returns a client for the HTTP service at addr (a socket
// path or host:port) and the base URL to put before a request's path.
func HTTPClient(addr string, timeout time.Duration) (*http.Client, string) {
	if !IsPath(addr) {
		return &http.Client{Timeout: timeout}, "http://" + addr
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", addr)
	}}
	return &http.Client{Timeout: timeout, Transport: tr}, "http://localhost"
}
