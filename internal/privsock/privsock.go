// Package privsock listens on a unix socket in a directory only root can
// enter, so that whoever connects is root on this machine: the node
// daemon's event feed and CFS relay sockets are made this way.
package privsock

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
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
