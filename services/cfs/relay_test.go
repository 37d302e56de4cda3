package cfs

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
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

// relayTo starts a relay to addr and attaches a client through it.
func relayTo(t *testing.T, addr string) (*Relay, p9.File) {
	t.Helper()
	r, at := startRelayTo(t, addr)
	_, root := attach(t, at)
	return r, root
}

// relayListener starts a relay to addr and returns where it listens.
func relayListener(t *testing.T, addr string) string {
	t.Helper()
	_, at := startRelayTo(t, addr)
	return at
}

func startRelayTo(t testing.TB, addr string) (*Relay, string) {
	t.Helper()
	r := NewRelay(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}, slog.New(slog.DiscardHandler))
	r.SetPatience(10 * time.Second)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay Serve: %v", err)
		}
	})
	return r, ln.Addr().String()
}

// TestRelayFailover: a client of the relay keeps its open files, its
// directories and its place in them while the server dies and another
// takes the address; calls made in the gap wait instead of failing.
func TestRelayFailover(t *testing.T) {
	srv := newFailoverServer(t)
	if err := os.MkdirAll(filepath.Join(srv.export, "dir", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(srv.export, "dir", "sub", "read-me"), []byte("before the failover"), 0o644); err != nil {
		t.Fatal(err)
	}
	relay, root := relayTo(t, srv.addr)

	dir := walk(t, root, "dir")
	sub := walk(t, dir, "sub")
	_, d, _ := dir.Walk(nil)
	log, _, _, err := d.Create("log", p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := log.WriteAt([]byte("one\n"), 0); err != nil {
		t.Fatal(err)
	}
	if err := log.FSync(); err != nil {
		t.Fatal(err)
	}
	reader := walk(t, sub, "read-me")
	if _, _, err := reader.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	// A directory renamed before the failover is found again under its
	// new name after it.
	if err := root.RenameAt("dir", root, "moved"); err != nil {
		t.Fatal(err)
	}
	// An open file that was unlinked cannot come back.
	doomed := writeAndOpen(t, root, "doomed")
	if err := root.UnlinkAt("doomed", 0); err != nil {
		t.Fatal(err)
	}

	srv.stop()
	gap := 700 * time.Millisecond
	restarted := make(chan time.Time, 1)
	go func() {
		time.Sleep(gap)
		srv.start(nil)
		restarted <- time.Now()
	}()

	// Issued while no server is there: it waits, then lands.
	start := time.Now()
	if _, err := log.WriteAt([]byte("two\n"), 4); err != nil {
		t.Fatalf("write through the failover: %v", err)
	}
	waited := time.Since(start)
	back := <-restarted
	t.Logf("a write issued with the server down waited %s (server gone for %s)", waited.Round(time.Millisecond), gap)
	if waited < gap/2 {
		t.Errorf("the write returned after %s, before the server came back", waited)
	}
	if time.Since(back) > 5*time.Second {
		t.Errorf("the relay took %s to use the new server", time.Since(back))
	}
	if err := log.FSync(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(srv.export, "moved", "log")); string(got) != "one\ntwo\n" {
		t.Errorf("the file written through the failover holds %q", got)
	}
	buf := make([]byte, 64)
	n, err := reader.ReadAt(buf, 0)
	if err != nil || string(buf[:n]) != "before the failover" {
		t.Errorf("the file open for reading reads %q, %v", buf[:n], err)
	}
	// The directory fids walk and create as before.
	_, s2, _ := sub.Walk(nil)
	nf, _, _, err := s2.Create("after", p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
	if err != nil {
		t.Fatalf("create in a directory walked before the failover: %v", err)
	}
	nf.Close()
	if _, err := os.Stat(filepath.Join(srv.export, "moved", "sub", "after")); err != nil {
		t.Errorf("the file created after the failover: %v", err)
	}
	if _, err := doomed.ReadAt(buf, 0); !errors.Is(err, linux.ESTALE) {
		t.Errorf("an open file unlinked before the failover: %v, want ESTALE", err)
	}
	if g := relay.Generation(); g != 2 {
		t.Errorf("relay made %d upstream connections, want 2", g)
	}
}

// TestRelayReconnectOnRequest: Reconnect (the server's node was taken
// Down) moves the relay to whatever answers at the address now, without
// waiting for the old connection to time out.
func TestRelayReconnectOnRequest(t *testing.T) {
	srv := newFailoverServer(t)
	relay, root := relayTo(t, srv.addr)
	writeFile(t, root, "f", []byte("x"))
	relay.Reconnect("test")
	if got := readFile(t, root, "f"); string(got) != "x" {
		t.Errorf("read after Reconnect: %q", got)
	}
	if g := relay.Generation(); g != 2 {
		t.Errorf("relay made %d upstream connections, want 2", g)
	}
	ents, err := root.Readdir(0, 4096)
	if err == nil {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name)
		}
		if !slices.Contains(names, "f") {
			t.Errorf("readdir after Reconnect: %v", names)
		}
	}
}

// TestRelayGivesUp: with no server for longer than its patience, a call
// fails with EIO rather than hanging forever.
func TestRelayGivesUp(t *testing.T) {
	srv := newFailoverServer(t)
	relay, root := relayTo(t, srv.addr)
	relay.SetPatience(time.Second)
	f := writeAndOpen(t, root, "f")
	srv.stop()
	start := time.Now()
	_, err := f.ReadAt(make([]byte, 1), 0)
	if !errors.Is(err, linux.EIO) {
		t.Errorf("read with no server: %v, want EIO", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("gave up after %s, patience was 1s", took)
	}
}

func writeAndOpen(t *testing.T, dir p9.File, name string) p9.File {
	t.Helper()
	writeFile(t, dir, name, []byte("data"))
	f := walk(t, dir, name)
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestRelayXattrs: extended attributes go through the relay and the p9
// client over the wire: a missing one is ENODATA (each exec asks for
// security.capability), the others are set, read, listed and removed.
func TestRelayXattrs(t *testing.T) {
	srv := newFailoverServer(t)
	_, root := relayTo(t, srv.addr)
	writeFile(t, root, "f", []byte("x"))
	f := walk(t, root, "f")
	if _, err := f.GetXattr("security.capability"); !errors.Is(err, linux.ENODATA) {
		t.Errorf("GetXattr of a missing attribute: %v, want ENODATA", err)
	}
	if err := f.SetXattr("user.locus", []byte("value"), 0); err != nil {
		t.Skipf("this filesystem takes no user xattrs: %v", err)
	}
	if b, err := f.GetXattr("user.locus"); err != nil || string(b) != "value" {
		t.Errorf("GetXattr = %q, %v", b, err)
	}
	if names, err := f.ListXattrs(); err != nil || !slices.Contains(names, "user.locus") {
		t.Errorf("ListXattrs = %v, %v", names, err)
	}
	if err := f.RemoveXattr("user.locus"); err != nil {
		t.Errorf("RemoveXattr: %v", err)
	}
	if _, err := f.GetXattr("user.locus"); !errors.Is(err, linux.ENODATA) {
		t.Errorf("GetXattr after RemoveXattr: %v, want ENODATA", err)
	}
	// The fid the attributes were walked from is still the file (the
	// p9 server used to close it with the attribute's fid).
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatalf("open after xattr calls: %v", err)
	}
	if b := make([]byte, 8); true {
		if n, err := f.ReadAt(b, 0); err != nil || string(b[:n]) != "x" {
			t.Errorf("read after xattr calls: %q, %v", b[:n], err)
		}
	}
}

// TestRelayReplacedFile: a file open through the relay that another node
// replaces by rename while the server fails over answers ESTALE after
// it; nothing is written into the file now under its name.
func TestRelayReplacedFile(t *testing.T) {
	srv := newFailoverServer(t)
	_, root := relayTo(t, srv.addr)
	writeFile(t, root, "doc", []byte("old"))
	f := walk(t, root, "doc")
	if _, _, err := f.Open(p9.ReadWrite); err != nil {
		t.Fatal(err)
	}
	srv.stop()
	// The editor's atomic save, done on another node meanwhile.
	path := filepath.Join(srv.export, "doc")
	if err := os.WriteFile(path+".new", []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	srv.start(nil)
	if _, err := f.WriteAt([]byte("XXX"), 0); !errors.Is(err, linux.ESTALE) {
		t.Errorf("a write to the replaced file after the failover: %v; want ESTALE", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "new" {
		t.Errorf("the file now under the name holds %q; want \"new\"", got)
	}
	// The name itself works: a new walk finds the new file.
	if got := readFile(t, root, "doc"); string(got) != "new" {
		t.Errorf("reading the name again gives %q", got)
	}
}

// TestRelayLocksFailover: a POSIX lock taken through the relay is taken
// again on the new server; if another client took a conflicting one
// meanwhile, the holder's file answers EIO instead of the lock being
// silently gone.
func TestRelayLocksFailover(t *testing.T) {
	srv := newFailoverServer(t)
	_, root := relayTo(t, srv.addr)
	writeFile(t, root, "kept", []byte("x"))
	writeFile(t, root, "lost", []byte("x"))
	lockThrough := func(name string) p9.File {
		f := walk(t, root, name)
		if _, _, err := f.Open(p9.ReadWrite); err != nil {
			t.Fatal(err)
		}
		if st, err := f.Lock(7, p9.WriteLock, 0, 0, 0, "node2"); err != nil || st != p9.LockStatusOK {
			t.Fatalf("lock %s: %v %v", name, st, err)
		}
		return f
	}
	kept, lost := lockThrough("kept"), lockThrough("lost")
	srv.stop()
	srv.start(nil)
	// Another node, straight to the new server, before the relay comes back.
	_, other := attach(t, srv.addr)
	o := walk(t, other, "lost")
	// The fid holds the lock: a collected clientFile clunks itself.
	t.Cleanup(func() { o.Close() })
	if _, _, err := o.Open(p9.ReadWrite); err != nil {
		t.Fatal(err)
	}
	if st, err := o.Lock(9, p9.WriteLock, 0, 0, 0, "node3"); err != nil || st != p9.LockStatusOK {
		t.Fatalf("the other node's lock: %v %v", st, err)
	}
	if _, err := kept.WriteAt([]byte("y"), 0); err != nil {
		t.Fatalf("write to the file whose lock was kept: %v", err)
	}
	o2 := walk(t, other, "kept")
	if _, _, err := o2.Open(p9.ReadWrite); err != nil {
		t.Fatal(err)
	}
	if st, err := o2.Lock(9, p9.WriteLock, 0, 0, 0, "node3"); err != nil || st != p9.LockStatusBlocked {
		t.Errorf("another node's lock on the file locked before the failover: %v %v; want blocked", st, err)
	}
	if _, err := lost.WriteAt([]byte("y"), 0); !errors.Is(err, linux.EIO) {
		t.Errorf("write to the file whose lock was taken meanwhile: %v; want EIO", err)
	}
}
