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

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"

	"github.com/locus-ssi/locus/internal/fsconform"
)

// loopbackRelay is a relay to the server at addr on loopback that waits
// 10 s for it to come back.
func loopbackRelay(addr string) *Relay {
	r := NewRelay(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}, slog.New(slog.DiscardHandler))
	r.SetPatience(10 * time.Second)
	return r
}

// fuseMount mounts the shared root of the server at addr through a relay
// and its FUSE front on a fresh directory.
func fuseMount(t *testing.T, addr string) (*Relay, string) {
	t.Helper()
	needRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE here: %v", err)
	}
	r := loopbackRelay(addr)
	dir := t.TempDir()
	srv, err := r.MountFUSE(dir)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; ; i++ {
			err := srv.Unmount()
			if err == nil {
				break
			}
			if i == 50 {
				t.Errorf("unmount %s: %v", dir, err)
				unix.Unmount(dir, unix.MNT_DETACH)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		srv.Wait()
	})
	return r, dir
}

// TestFUSEConformance: the conformance checks fail through the FUSE front
// only where they fail on the server's own filesystem.
func TestFUSEConformance(t *testing.T) {
	addr, export, _ := serve(t, nil)
	_, mnt := fuseMount(t, addr)
	// Other users must reach both (t.TempDir makes its directories 0700).
	for _, d := range []string{filepath.Dir(export), filepath.Dir(filepath.Dir(export)), filepath.Dir(mnt)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	local, err := fsconform.Run(ctx, export, nil)
	if err != nil {
		t.Fatal(err)
	}
	remote, err := fsconform.Run(ctx, mnt, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range remote.Failed() {
		if !slices.Contains(local.Failed(), name) {
			for _, c := range remote.Checks {
				if c.Name == name {
					t.Errorf("through FUSE only: %+v", c)
				}
			}
		}
	}
	t.Logf("%d checks; %d failures on the export's filesystem, %d through FUSE", len(remote.Checks), local.Failures, remote.Failures)
}

// TestFUSETimes: times set through the mount keep their nanoseconds.
func TestFUSETimes(t *testing.T) {
	addr, export, _ := serve(t, nil)
	_, mnt := fuseMount(t, addr)
	p := filepath.Join(mnt, "f")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := []unix.Timespec{{Sec: 1000, Nsec: 123456789}, {Sec: 2000, Nsec: 987654321}}
	if err := unix.UtimesNano(p, ts); err != nil {
		t.Fatal(err)
	}
	for _, at := range []string{p, filepath.Join(export, "f")} {
		st := lstat(t, at)
		if st.Atim != ts[0] || st.Mtim != ts[1] {
			t.Errorf("%s: times %v %v; want %v %v", at, st.Atim, st.Mtim, ts[0], ts[1])
		}
	}
}

// TestFUSEFailover: through the FUSE front, an open file keeps being
// written while the server dies and comes back (the write waits), a
// directory renamed before is found under its new name, and a file
// another node replaced by rename meanwhile answers ESTALE instead of
// writing into the new one.
func TestFUSEFailover(t *testing.T) {
	srv := newFailoverServer(t)
	if err := os.MkdirAll(filepath.Join(srv.export, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(srv.export, "doc"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	relay, mnt := fuseMount(t, srv.addr)
	log, err := os.OpenFile(filepath.Join(mnt, "dir", "log"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	if _, err := log.WriteAt([]byte("one\n"), 0); err != nil {
		t.Fatal(err)
	}
	doc, err := os.OpenFile(filepath.Join(mnt, "doc"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer doc.Close()
	if err := os.Rename(filepath.Join(mnt, "dir"), filepath.Join(mnt, "moved")); err != nil {
		t.Fatal(err)
	}

	srv.stop()
	// The editor's atomic save, on another node while the server is away.
	path := filepath.Join(srv.export, "doc")
	if err := os.WriteFile(path+".new", []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	gap := 700 * time.Millisecond
	go func() {
		time.Sleep(gap)
		srv.start(nil)
	}()
	start := time.Now()
	if _, err := log.WriteAt([]byte("two\n"), 4); err != nil {
		t.Fatalf("write through the failover: %v", err)
	}
	if waited := time.Since(start); waited < gap/2 {
		t.Errorf("the write returned after %s, before the server came back", waited)
	}
	if err := log.Sync(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(srv.export, "moved", "log")); string(got) != "one\ntwo\n" {
		t.Errorf("the file written through the failover holds %q", got)
	}
	if _, err := doc.WriteAt([]byte("XXX"), 0); !errors.Is(err, unix.ESTALE) {
		t.Errorf("a write to the replaced file after the failover: %v; want ESTALE", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "new" {
		t.Errorf("the file now under the name holds %q; want \"new\"", got)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "doc")); string(got) != "new" {
		t.Errorf("reading the name again gives %q, %v", got, err)
	}
	if g := relay.Generation(); g != 2 {
		t.Errorf("relay made %d upstream connections, want 2", g)
	}
}

func setLock(t *testing.T, f *os.File, typ int16) error {
	t.Helper()
	return unix.FcntlFlock(f.Fd(), unix.F_SETLK, &unix.Flock_t{Type: typ, Whence: 0})
}

// TestFUSELocks: fcntl locks through two nodes' FUSE mounts exclude each
// other on the server, F_GETLK sees the other node's, and a lock is
// taken again on the server after a failover; one that another node
// took meanwhile makes its file answer EIO.
func TestFUSELocks(t *testing.T) {
	srv := newFailoverServer(t)
	for _, name := range []string{"kept", "lost"} {
		if err := os.WriteFile(filepath.Join(srv.export, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, a := fuseMount(t, srv.addr)
	_, b := fuseMount(t, srv.addr)
	open := func(dir, name string) *os.File {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	kept, lost := open(a, "kept"), open(a, "lost")
	for _, f := range []*os.File{kept, lost} {
		if err := setLock(t, f, unix.F_WRLCK); err != nil {
			t.Fatalf("lock %s: %v", f.Name(), err)
		}
	}
	other := open(b, "kept")
	if err := setLock(t, other, unix.F_WRLCK); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("the other node's lock on a locked file: %v; want EAGAIN", err)
	}
	lk := unix.Flock_t{Type: unix.F_RDLCK}
	if err := unix.FcntlFlock(other.Fd(), unix.F_GETLK, &lk); err != nil || lk.Type != unix.F_WRLCK {
		t.Errorf("F_GETLK from the other node: type %d, %v; want F_WRLCK (%d)", lk.Type, err, unix.F_WRLCK)
	}

	srv.stop()
	srv.start(nil)
	// Another node takes "lost" on the new server before a comes back.
	_, direct := attach(t, srv.addr)
	o := walk(t, direct, "lost")
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
	if err := setLock(t, other, unix.F_WRLCK); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("the other node's lock after the failover: %v; want EAGAIN (the lock was taken again)", err)
	}
	if _, err := lost.WriteAt([]byte("y"), 0); !errors.Is(err, unix.EIO) {
		t.Errorf("write to the file whose lock was taken meanwhile: %v; want EIO", err)
	}
	if err := setLock(t, kept, unix.F_UNLCK); err != nil {
		t.Fatal(err)
	}
	if err := setLock(t, other, unix.F_WRLCK); err != nil {
		t.Errorf("the other node's lock once released: %v", err)
	}
}

// TestExportOwnFilesystemOnly: what is mounted inside the exported
// directory (the server's node's own /proc, /tmp, ...) is not served:
// clients see the shared directory under it, which they cover with
// their own mounts.
func TestExportOwnFilesystemOnly(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tmp", "under"), []byte("shared"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", filepath.Join(dir, "tmp"), "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(filepath.Join(dir, "tmp"), unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(dir, "tmp", "servers-own"), []byte("private"), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := NewExport(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	root, err := e.AttachUID("", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, _, err := root.Walk([]string{"tmp", "servers-own"}); !errors.Is(err, unix.ENOENT) {
		t.Errorf("walk to a file of the server's own mount: %v; want ENOENT", err)
	}
	_, f, err := root.Walk([]string{"tmp", "under"})
	if err != nil {
		t.Fatalf("walk to the shared file under the mount point: %v", err)
	}
	f.Close()
}

// TestFUSEUnsyncedWritesSurvive: writes the server acknowledged but had
// not synced when it died are sent again to the next server (here the
// dead server's loss is made by hand: the file is cut back to nothing,
// as a crash before writeback leaves it), so the file holds everything
// its writer wrote; what was synced is not sent again; of a log opened
// O_APPEND, the appends past the new server's end of file are made
// again, and one that came back as NULs is written again in its place,
// none twice.
func TestFUSEUnsyncedWritesSurvive(t *testing.T) {
	srv := newFailoverServer(t)
	_, mnt := fuseMount(t, srv.addr)
	log, err := os.OpenFile(filepath.Join(mnt, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	for _, rec := range []string{"one\n", "two\n"} {
		if _, err := log.WriteString(rec); err != nil {
			t.Fatal(err)
		}
	}
	shared, err := os.OpenFile(filepath.Join(mnt, "shared"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	if _, err := shared.WriteString("mine\n"); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(mnt, "data"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("before-"), 0); err != nil {
		t.Fatal(err)
	}
	synced, err := os.OpenFile(filepath.Join(mnt, "synced"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer synced.Close()
	if _, err := synced.WriteAt([]byte("kept"), 0); err != nil {
		t.Fatal(err)
	}
	if err := synced.Sync(); err != nil {
		t.Fatal(err)
	}
	srv.stop()
	for _, name := range []string{"data", "synced"} {
		if err := os.Truncate(filepath.Join(srv.export, name), 0); err != nil {
			t.Fatal(err)
		}
	}
	// The dead server wrote back the log's first record and the size of
	// the second, not its data: NULs where it was.
	if err := os.WriteFile(filepath.Join(srv.export, "log"), []byte("one\n\x00\x00\x00\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Where this node's append was, the new server has another node's.
	if err := os.WriteFile(filepath.Join(srv.export, "shared"), []byte("them\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv.start(nil)
	if _, err := shared.WriteString("again\n"); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(srv.export, "shared")); string(got) != "them\nagain\n" {
		t.Errorf("a file another node appended to meanwhile holds %q; want \"them\\nagain\\n\" (nothing written over the other node's)", got)
	}
	if _, err := log.WriteString("three\n"); err != nil {
		t.Fatalf("append after the failover: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(srv.export, "log")); string(got) != "one\ntwo\nthree\n" {
		t.Errorf("the log appended to through the failover holds %q", got)
	}
	if _, err := f.WriteAt([]byte("after"), 7); err != nil {
		t.Fatalf("write after the failover: %v", err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(srv.export, "data")); string(got) != "before-after" {
		t.Errorf("the file written through the failover holds %q; want \"before-after\"", got)
	}
	// What was synced is the server's to keep: not written again.
	if _, err := synced.WriteAt([]byte("!"), 4); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(srv.export, "synced")); string(got) != "\x00\x00\x00\x00!" {
		t.Errorf("a file synced before the failover holds %q after a write; want its synced bytes not sent again", got)
	}
}

// TestHandOff: init's way of mounting. A FUSE mount made here
// (MountFUSE) is handed to a relay listening on a unix socket
// (ServeHandOffs), which answers once it serves it; a hand-off with no
// descriptor is refused with a reason.
func TestHandOff(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE here: %v", err)
	}
	addr, export, _ := serve(t, nil)
	if err := os.WriteFile(filepath.Join(export, "hello"), []byte("from the server"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := loopbackRelay(addr)
	sock := filepath.Join(t.TempDir(), "fuse.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.ServeHandOffs(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeHandOffs: %v", err)
		}
		r.Close()
	})

	// A connection that sends no descriptor is told why.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte{'F'})
	b := make([]byte, 200)
	n, _ := c.Read(b)
	c.Close()
	if !strings.Contains(string(b[:n]), "error: the hand-off carries no descriptor") {
		t.Errorf("a hand-off without a descriptor was answered %q", b[:n])
	}

	mnt := t.TempDir()
	dev, err := MountFUSE(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
	defer hcancel()
	if err := HandOff(hctx, sock, dev); err != nil {
		t.Fatalf("hand-off: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "hello")); err != nil || string(got) != "from the server" {
		t.Errorf("the handed-off mount reads %q, %v", got, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil || st.Type != 0x65735546 {
		t.Errorf("the mount is not FUSE: type %#x, %v", st.Type, err)
	}
}
