package cfs

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// failoverServer is a CFS server on a fixed loopback address that a test
// can stop and start again, as HA-CFS moves the service address from a
// dead node to its standby.
type failoverServer struct {
	t      *testing.T
	addr   string
	export string
	cancel context.CancelFunc
	done   chan error
}

func newFailoverServer(t *testing.T) *failoverServer {
	export := filepath.Join(t.TempDir(), "export")
	if err := os.Mkdir(export, 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &failoverServer{t: t, addr: ln.Addr().String(), export: export}
	s.start(ln)
	t.Cleanup(s.stop)
	return s
}

func (s *failoverServer) start(ln net.Listener) {
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.addr); err != nil {
			s.t.Fatalf("listen again on %s: %v", s.addr, err)
		}
	}
	e, err := NewExport(s.export)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan error, 1)
	srv := NewServer(e, nil, slog.New(slog.DiscardHandler))
	go func() { s.done <- srv.Serve(ctx, ln); e.Close() }()
}

// stop kills the server: its connections close under the clients.
func (s *failoverServer) stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
	s.cancel = nil
}

// TestRelayReconnectOnRequest: Reconnect (the server's node was taken
// Down) moves the relay to whatever answers at the address now, without
// waiting for the old connection to time out.
func TestRelayReconnectOnRequest(t *testing.T) {
	srv := newFailoverServer(t)
	relay, mnt := fuseMount(t, srv.addr)
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	relay.Reconnect("test")
	if got, err := os.ReadFile(filepath.Join(mnt, "f")); string(got) != "x" {
		t.Errorf("read after Reconnect: %q, %v", got, err)
	}
	if g := relay.Generation(); g != 2 {
		t.Errorf("relay made %d upstream connections, want 2", g)
	}
	ents, err := os.ReadDir(mnt)
	if err != nil || len(ents) != 1 || ents[0].Name() != "f" {
		t.Errorf("readdir after Reconnect: %v, %v", ents, err)
	}
}

// TestRelayGivesUp: with no server for longer than its patience, a call
// fails with EIO rather than hanging forever.
func TestRelayGivesUp(t *testing.T) {
	srv := newFailoverServer(t)
	relay, mnt := fuseMount(t, srv.addr)
	relay.SetPatience(time.Second)
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	srv.stop()
	start := time.Now()
	if _, err := f.ReadAt(make([]byte, 1), 0); !errors.Is(err, unix.EIO) {
		t.Errorf("read with no server: %v, want EIO", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("gave up after %s, patience was 1s", took)
	}
}

// TestRelayXattrs: extended attributes go through the FUSE front, the
// relay and the p9 client over the wire: a missing one is ENODATA (each
// exec asks for security.capability), the others are set, read, listed
// and removed.
func TestRelayXattrs(t *testing.T) {
	srv := newFailoverServer(t)
	_, mnt := fuseMount(t, srv.addr)
	p := filepath.Join(mnt, "f")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := unix.Getxattr(p, "security.capability", buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("getxattr of a missing attribute: %v, want ENODATA", err)
	}
	if err := unix.Setxattr(p, "user.locus", []byte("value"), 0); err != nil {
		t.Skipf("this filesystem takes no user xattrs: %v", err)
	}
	if n, err := unix.Getxattr(p, "user.locus", buf); err != nil || string(buf[:n]) != "value" {
		t.Errorf("getxattr = %q, %v", buf[:n], err)
	}
	if n, err := unix.Getxattr(p, "user.locus", nil); err != nil || n != len("value") {
		t.Errorf("getxattr's size = %d, %v", n, err)
	}
	if n, err := unix.Listxattr(p, buf); err != nil || !slices.Contains(strings.Split(string(buf[:n]), "\x00"), "user.locus") {
		t.Errorf("listxattr = %q, %v", buf[:n], err)
	}
	if err := unix.Removexattr(p, "user.locus"); err != nil {
		t.Errorf("removexattr: %v", err)
	}
	if _, err := unix.Getxattr(p, "user.locus", buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("getxattr after removexattr: %v, want ENODATA", err)
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != "x" {
		t.Errorf("read after xattr calls: %q, %v", got, err)
	}
}
