package dlm

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Uevent is one kernel uevent: what the DLM sends when a lockspace is
// joined or left (SUBSYSTEM=dlm, ACTION=online/offline, LOCKSPACE=name),
// what GFS2 sends when it withdraws, and the misc devices' add/remove.
type Uevent struct {
	Action    string
	Subsystem string
	DevPath   string
	Vars      map[string]string
}

// ParseUevent reads one uevent datagram: a header "action@devpath" and
// NUL-separated KEY=VALUE pairs. Anything else (udev's own broadcasts,
// which start "libudev") is an error.
func ParseUevent(b []byte) (Uevent, error) {
	parts := bytes.Split(b, []byte{0})
	head := string(parts[0])
	action, devpath, ok := strings.Cut(head, "@")
	if !ok || action == "" || !strings.HasPrefix(devpath, "/") {
		return Uevent{}, fmt.Errorf("dlm: uevent header %q: want action@/devpath", truncate(head))
	}
	u := Uevent{Action: action, DevPath: devpath, Vars: map[string]string{}}
	for _, p := range parts[1:] {
		if len(p) == 0 {
			continue
		}
		k, v, ok := strings.Cut(string(p), "=")
		if !ok || k == "" {
			return Uevent{}, fmt.Errorf("dlm: uevent %s: variable %q without a value", truncate(head), truncate(string(p)))
		}
		u.Vars[k] = v
	}
	if a := u.Vars["ACTION"]; a != "" && a != action {
		return Uevent{}, fmt.Errorf("dlm: uevent %s: ACTION=%s disagrees with its header", truncate(head), truncate(a))
	}
	u.Subsystem = u.Vars["SUBSYSTEM"]
	return u, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// ueventSocket listens to the kernel's uevents (netlink group 1). It is
// opened before anything can make a lockspace: a join whose online event
// is missed waits in the kernel for good.
type ueventSocket struct {
	f *os.File
}

func openUevents() (*ueventSocket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("dlm: uevent socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1); err != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 2<<20)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("dlm: uevent socket: bind: %w", err)
	}
	return &ueventSocket{f: os.NewFile(uintptr(fd), "uevents")}, nil
}

// read returns the next datagram (the poller waits; Close ends it).
func (s *ueventSocket) read(buf []byte) (int, error) { return s.f.Read(buf) }

func (s *ueventSocket) Close() error { return s.f.Close() }
