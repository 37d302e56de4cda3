package cfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// serve starts a server for a fresh export on loopback and returns its
// address and the exported directory. allow may be nil.
func serve(t testing.TB, allow func(netip.Addr) bool) (string, string, *Server) {
	t.Helper()
	dir := t.TempDir()
	export := filepath.Join(dir, "export")
	if err := os.Mkdir(export, 0o755); err != nil {
		t.Fatal(err)
	}
	// A file beside the export that no client may reach.
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("outside"), 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := NewExport(export)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(e, allow, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		e.Close()
	})
	return ln.Addr().String(), export, s
}

// attach dials the server and attaches to the export's root.
func attach(t testing.TB, addr string) (*p9.Client, p9.File) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := p9.NewClient(c, p9.WithMessageSize(1<<20))
	if err != nil {
		c.Close()
		t.Fatalf("version: %v", err)
	}
	root, err := cl.Attach("/")
	if err != nil {
		cl.Close()
		t.Fatalf("attach: %v", err)
	}
	t.Cleanup(func() { root.Close(); cl.Close() })
	return cl, root
}

func walk(t testing.TB, f p9.File, names ...string) p9.File {
	t.Helper()
	_, nf, err := f.Walk(names)
	if err != nil {
		t.Fatalf("walk %v: %v", names, err)
	}
	return nf
}

func writeFile(t testing.TB, dir p9.File, name string, data []byte) {
	t.Helper()
	_, f, err := dir.Walk(nil)
	if err != nil {
		t.Fatal(err)
	}
	nf, _, _, err := f.Create(name, p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	defer nf.Close()
	for off := 0; off < len(data); {
		n, err := nf.WriteAt(data[off:], int64(off))
		if err != nil {
			t.Fatalf("write %s at %d: %v", name, off, err)
		}
		off += n
	}
}

func readFile(t testing.TB, dir p9.File, name string) []byte {
	t.Helper()
	f := walk(t, dir, name)
	defer f.Close()
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	var out []byte
	buf := make([]byte, 256<<10)
	for {
		n, err := f.ReadAt(buf, int64(len(out)))
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("read %s: %v", name, err)
		}
		if n == 0 {
			return out
		}
		out = append(out, buf[:n]...)
	}
}

func TestMetadata(t *testing.T) {
	addr, export, _ := serve(t, nil)
	_, root := attach(t, addr)

	if _, err := root.Mkdir("etc", 0o755, p9.NoUID, p9.NoGID); err != nil {
		t.Fatal(err)
	}
	etc := walk(t, root, "etc")
	writeFile(t, etc, "hostname", []byte("node1\n"))
	if _, err := etc.Symlink("hostname", "link", p9.NoUID, p9.NoGID); err != nil {
		t.Fatal(err)
	}
	if _, err := etc.Mknod("fifo", p9.ModeNamedPipe|0o600, 0, 0, p9.NoUID, p9.NoGID); err != nil {
		t.Fatal(err)
	}
	host := walk(t, etc, "hostname")
	if err := etc.Link(host, "hardlink"); err != nil {
		t.Fatal(err)
	}

	// What the server made is what is on its disk.
	if b, err := os.ReadFile(filepath.Join(export, "etc/hardlink")); err != nil || string(b) != "node1\n" {
		t.Errorf("hard link on disk: %q, %v", b, err)
	}
	if target, _ := os.Readlink(filepath.Join(export, "etc/link")); target != "hostname" {
		t.Errorf("symlink target on disk = %q, want hostname", target)
	}
	link := walk(t, etc, "link")
	if got, err := link.Readlink(); err != nil || got != "hostname" {
		t.Errorf("Readlink = %q, %v", got, err)
	}

	// chmod, chown, truncate, utimes.
	if err := host.SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o600}); err != nil {
		t.Fatal(err)
	}
	if err := host.SetAttr(p9.SetAttrMask{UID: true, GID: true}, p9.SetAttr{UID: 1234, GID: 5678}); err != nil {
		t.Fatal(err)
	}
	if err := host.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 3}); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := host.SetAttr(p9.SetAttrMask{MTime: true, MTimeNotSystemTime: true}, p9.SetAttr{MTimeSeconds: uint64(mtime.Unix())}); err != nil {
		t.Fatal(err)
	}
	_, _, attr, err := host.GetAttr(p9.AttrMaskAll)
	if err != nil {
		t.Fatal(err)
	}
	if attr.Mode.Permissions() != 0o600 || attr.UID != 1234 || attr.GID != 5678 || attr.Size != 3 || attr.MTimeSeconds != uint64(mtime.Unix()) || attr.NLink != 2 {
		t.Errorf("attributes after setattr: %v", attr)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(export, "etc/hostname"), &st); err != nil || st.Uid != 1234 || st.Mode&0o777 != 0o600 {
		t.Errorf("on disk: uid %d mode %o, %v", st.Uid, st.Mode&0o777, err)
	}

	// Directory listing with d_types, and paging by offset.
	if _, _, err := etc.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	got := map[string]uint8{}
	for off := uint64(0); ; {
		ents, err := etc.Readdir(off, 64)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) == 0 {
			break
		}
		for _, e := range ents {
			got[e.Name] = uint8(e.Type)
			off = e.Offset
		}
	}
	want := map[string]uint8{".": unix.DT_DIR, "..": unix.DT_DIR, "hostname": unix.DT_REG, "hardlink": unix.DT_REG, "link": unix.DT_LNK, "fifo": unix.DT_FIFO}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("readdir = %v, want %v", got, want)
	}

	// statfs answers for the exported filesystem.
	if fs, err := root.StatFS(); err != nil || fs.Blocks == 0 || fs.NameLength == 0 {
		t.Errorf("statfs = %+v, %v", fs, err)
	}
}

func TestRenameUnlink(t *testing.T) {
	addr, export, _ := serve(t, nil)
	_, root := attach(t, addr)
	for _, d := range []string{"a", "b"} {
		if _, err := root.Mkdir(d, 0o755, p9.NoUID, p9.NoGID); err != nil {
			t.Fatal(err)
		}
	}
	a, b := walk(t, root, "a"), walk(t, root, "b")
	writeFile(t, a, "f", []byte("one"))
	writeFile(t, b, "g", []byte("two"))

	// An open file stays readable after it is renamed away and after it
	// is unlinked (POSIX: the inode lives while it is open).
	f := walk(t, a, "f")
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	if err := a.RenameAt("f", b, "g"); err != nil {
		t.Fatalf("rename over an existing file: %v", err)
	}
	if err := b.UnlinkAt("g", 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if n, err := f.ReadAt(buf, 0); err != nil || string(buf[:n]) != "one" {
		t.Errorf("read of the unlinked open file = %q, %v", buf[:n], err)
	}
	if _, err := os.Stat(filepath.Join(export, "b/g")); !os.IsNotExist(err) {
		t.Errorf("b/g still on disk: %v", err)
	}
	// rmdir of a non-empty directory fails; of an empty one succeeds.
	writeFile(t, a, "h", nil)
	if err := root.UnlinkAt("a", unix.AT_REMOVEDIR); !errors.Is(err, linux.ENOTEMPTY) {
		t.Errorf("rmdir of a non-empty directory: %v, want ENOTEMPTY", err)
	}
	if err := a.UnlinkAt("h", 0); err != nil {
		t.Fatal(err)
	}
	if err := root.UnlinkAt("a", unix.AT_REMOVEDIR); err != nil {
		t.Errorf("rmdir: %v", err)
	}
	// The walked fid of a directory renamed elsewhere still works.
	if err := root.RenameAt("b", root, "c"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, b, "after-rename", []byte("x"))
	if _, err := os.Stat(filepath.Join(export, "c/after-rename")); err != nil {
		t.Errorf("a file made through a renamed directory's fid: %v", err)
	}
}

func TestLargeReadWrite(t *testing.T) {
	addr, export, _ := serve(t, nil)
	_, root := attach(t, addr)
	data := make([]byte, 24<<20+12345)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	writeFile(t, root, "big", data)
	if got := readFile(t, root, "big"); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, not what was written (%d bytes)", len(got), len(data))
	}
	if fi, err := os.Stat(filepath.Join(export, "big")); err != nil || fi.Size() != int64(len(data)) {
		t.Errorf("on disk: %v, %v", fi, err)
	}
}

// TestConcurrentClients: many clients at once, each writing its own file
// and reading every other's, and all appending to one shared file.
func TestConcurrentClients(t *testing.T) {
	addr, export, _ := serve(t, nil)
	const clients = 32
	roots := make([]p9.File, clients)
	for i := range roots {
		_, roots[i] = attach(t, addr)
	}
	writeFile(t, roots[0], "log", nil)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			root := roots[i]
			name := fmt.Sprintf("f%02d", i)
			body := bytes.Repeat([]byte{byte(i)}, 64<<10)
			_, dir, err := root.Walk(nil)
			if err != nil {
				errs <- err
				return
			}
			// Tlcreate turns the directory's fid into the new file's.
			nf, _, _, err := dir.Create(name, p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
			if err != nil {
				errs <- err
				return
			}
			_, err = nf.WriteAt(body, 0)
			nf.Close()
			if err != nil {
				errs <- err
				return
			}
			_, lf, err := root.Walk([]string{"log"})
			if err != nil {
				errs <- err
				return
			}
			defer lf.Close()
			if _, _, err := lf.Open(p9.WriteOnly | p9.OpenFlags(unix.O_APPEND)); err != nil {
				errs <- err
				return
			}
			for range 20 {
				if _, err := lf.WriteAt([]byte(fmt.Sprintf("client %02d\n", i)), 0); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range clients {
		got := readFile(t, roots[(i+1)%clients], fmt.Sprintf("f%02d", i))
		if len(got) != 64<<10 || got[0] != byte(i) || got[len(got)-1] != byte(i) {
			t.Errorf("client %d's file read by another: %d bytes", i, len(got))
		}
	}
	// O_APPEND is the server's: every line arrived whole, none lost.
	b, _ := os.ReadFile(filepath.Join(export, "log"))
	if lines := bytes.Count(b, []byte("\n")); lines != clients*20 || len(b) != clients*20*10 {
		t.Errorf("appended log has %d lines, %d bytes; want %d lines of 10 bytes", lines, len(b), clients*20)
	}
}

// TestConfinement: nothing a client sends reaches outside the export.
func TestConfinement(t *testing.T) {
	addr, export, _ := serve(t, nil)
	cl, root := attach(t, addr)
	outside := filepath.Join(filepath.Dir(export), "secret")
	if err := os.Symlink("../secret", filepath.Join(export, "up")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(export), filepath.Join(export, "abs")); err != nil {
		t.Fatal(err)
	}
	for _, names := range [][]string{{".."}, {"."}, {"a/b"}, {""}, {"abs", "secret"}, {"up", "x"}} {
		if _, f, err := root.Walk(names); err == nil {
			f.Close()
			t.Errorf("walk %q succeeded", names)
		}
	}
	if _, err := cl.Attach("/.."); err == nil {
		t.Errorf("attach to /.. succeeded")
	}
	// A symlink is read, never followed: opening it fails.
	up := walk(t, root, "up")
	if _, _, err := up.Open(p9.ReadOnly); err == nil {
		t.Errorf("open of a symlink to outside succeeded")
	}
	// (A symlink has no size to set: EINVAL, as truncate(2) of one
	// would follow it on the client.)
	if err := up.SetAttr(p9.SetAttrMask{Permissions: true, Size: true}, p9.SetAttr{Permissions: 0o777}); err != linux.EINVAL {
		t.Errorf("setattr of size on a symlink: %v; want EINVAL", err)
	}
	if fi, _ := os.Stat(outside); fi.Mode().Perm() != 0o600 || fi.Size() != 7 {
		t.Errorf("the file outside changed through a symlink: %v", fi.Mode())
	}
	// Creating through names with a slash or dot-dot is refused.
	for _, name := range []string{"../escape", "a/b", "..", "."} {
		if _, _, _, err := root.Create(name, p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID); err == nil {
			t.Errorf("create %q succeeded", name)
		}
		if err := root.RenameAt("up", root, name); err == nil {
			t.Errorf("rename to %q succeeded", name)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(export), "escape")); err == nil {
		t.Errorf("a file was created outside the export")
	}
}

// TestAdmission: a connection from an address the cluster did not admit
// is closed before the server reads anything.
func TestAdmission(t *testing.T) {
	addr, _, s := serve(t, func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.2") })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := p9.NewClient(c); err == nil {
		t.Fatal("a client from 127.0.0.1 got an answer")
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	c2, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := p9.NewClient(c2)
	if err != nil {
		t.Fatalf("an admitted client was refused: %v", err)
	}
	defer cl.Close()
	if s.Clients() != 1 {
		t.Errorf("Clients() = %d, want 1", s.Clients())
	}
}

// TestClientVanishes: a client that disappears mid-write leaves what it
// wrote on disk and the server serving others.
func TestClientVanishes(t *testing.T) {
	addr, export, s := serve(t, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := p9.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	root, err := cl.Attach("/")
	if err != nil {
		t.Fatal(err)
	}
	f, _, _, err := walk(t, root).Create("partial", p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("written before"), 0); err != nil {
		t.Fatal(err)
	}
	// Half a Twrite header, then the connection drops.
	c.Write([]byte{0xff, 0xff, 0x00, 0x00, 118})
	c.Close()
	for deadline := time.Now().Add(5 * time.Second); s.Clients() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server still counts the vanished client")
		}
	}
	if b, _ := os.ReadFile(filepath.Join(export, "partial")); string(b) != "written before" {
		t.Errorf("after the client vanished the file holds %q", b)
	}
	_, root2 := attach(t, addr)
	if got := readFile(t, root2, "partial"); string(got) != "written before" {
		t.Errorf("another client reads %q", got)
	}
}

// exportRoot attaches to an export of a temp directory holding one file,
// name, without a connection: for the calls the p9 module's client cannot
// make (Tlock without its fid upstream, no xattr calls).
func exportRoot(t *testing.T, name string) p9.File {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	e, err := NewExport(dir)
	if err != nil {
		t.Fatal(err)
	}
	root, err := e.Attach()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close(); e.Close() })
	return root
}

// TestLocks: a POSIX lock taken through one fid excludes another's, as
// it would between two nodes.
func TestLocks(t *testing.T) {
	root := exportRoot(t, "lockfile")
	open := func() p9.File {
		f := walk(t, root, "lockfile")
		if _, _, err := f.Open(p9.ReadWrite); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	f1, f2 := open(), open()
	if st, err := f1.Lock(1, p9.WriteLock, 0, 0, 0, "node1"); err != nil || st != p9.LockStatusOK {
		t.Fatalf("first lock: %v, %v", st, err)
	}
	if st, err := f2.Lock(2, p9.ReadLock, 0, 0, 0, "node2"); err != nil || st != p9.LockStatusBlocked {
		t.Errorf("conflicting lock: %v, %v; want blocked", st, err)
	}
	if st, err := f1.Lock(1, p9.Unlock, 0, 0, 0, "node1"); err != nil || st != p9.LockStatusOK {
		t.Fatalf("unlock: %v, %v", st, err)
	}
	if st, err := f2.Lock(2, p9.WriteLock, 0, 0, 0, "node2"); err != nil || st != p9.LockStatusOK {
		t.Errorf("lock after unlock: %v, %v", st, err)
	}
}

// TestXattrs: a missing attribute is ENODATA, the answer the kernel
// needs when it reads security.capability on every exec.
func TestXattrs(t *testing.T) {
	root := exportRoot(t, "bin")
	f := walk(t, root, "bin")
	defer f.Close()
	if _, err := f.GetXattr("security.capability"); !errors.Is(err, linux.ENODATA) {
		t.Errorf("GetXattr of a missing attribute: %v, want ENODATA", err)
	}
	if err := f.SetXattr("user.locus", []byte("v"), 0); err != nil {
		t.Skipf("this filesystem takes no user xattrs: %v", err)
	}
	if b, err := f.GetXattr("user.locus"); err != nil || string(b) != "v" {
		t.Errorf("GetXattr = %q, %v", b, err)
	}
	if names, err := f.ListXattrs(); err != nil || !slices.Contains(names, "user.locus") {
		t.Errorf("ListXattrs = %v, %v", names, err)
	}
	if err := f.RemoveXattr("user.locus"); err != nil {
		t.Errorf("RemoveXattr: %v", err)
	}
}

// TestPrivilegedPort: with RequirePrivilegedPort, a connection from an
// ordinary port is closed unread; one from a reserved port (root's) is
// served.
func TestPrivilegedPort(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("binding a privileged port needs root")
	}
	dir := t.TempDir()
	e, err := NewExport(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(e, nil, slog.New(slog.DiscardHandler))
	s.RequirePrivilegedPort()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p9.NewClient(c); err == nil {
		t.Error("a client on an unprivileged port was served")
	}
	c.Close()

	pc, err := DialPrivileged(context.Background(), netip.MustParseAddr("127.0.0.1"), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if port := pc.LocalAddr().(*net.TCPAddr).Port; port >= 1024 {
		t.Errorf("DialPrivileged used port %d", port)
	}
	cl, err := p9.NewClient(pc)
	if err != nil {
		t.Fatalf("a client on a privileged port was refused: %v", err)
	}
	if _, err := cl.Attach("/"); err != nil {
		t.Errorf("attach from a privileged port: %v", err)
	}
	cl.Close()
}

// TestDropFrom: the connections of a node taken Down close at once; a
// write sent after that reaches nothing.
func TestDropFrom(t *testing.T) {
	addr, export, s := serve(t, nil)
	_, root := attach(t, addr)
	writeFile(t, root, "before", []byte("x"))
	if n := s.DropFrom(netip.MustParseAddr("127.0.0.1")); n != 1 {
		t.Fatalf("DropFrom closed %d connections; want 1", n)
	}
	_, d, err := root.Walk(nil)
	if err == nil {
		_, _, _, err = d.Create("after", p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
	}
	if err == nil {
		t.Fatalf("a create after DropFrom succeeded")
	}
	if _, err := os.Stat(filepath.Join(export, "after")); err == nil {
		t.Errorf("a file was created by a dropped connection")
	}
}

// TestMetrics: the server's requests by operation (a histogram), the
// errors it answered, its clients while connected, and a relay's
// upstream connections.
func TestMetrics(t *testing.T) {
	addr, _, s := serve(t, nil)
	m := NewMetrics(1)
	s.SetMetrics(m)
	cl, root := attach(t, addr)
	writeFile(t, root, "f", []byte("hello"))
	if got := readFile(t, root, "f"); string(got) != "hello" {
		t.Fatalf("read %q", got)
	}
	if _, _, err := root.Walk([]string{"missing"}); err == nil {
		t.Fatal("walk to a missing file succeeded")
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	count := func(name, op string) float64 {
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		sum := 0.0
		for _, f := range fams {
			if f.GetName() != name {
				continue
			}
			for _, mt := range f.Metric {
				ok := op == ""
				for _, l := range mt.Label {
					ok = ok || (l.GetName() == "op" && l.GetValue() == op)
				}
				switch {
				case !ok:
				case mt.Histogram != nil:
					sum += float64(mt.Histogram.GetSampleCount())
				case mt.Counter != nil:
					sum += mt.Counter.GetValue()
				case mt.Gauge != nil:
					sum += mt.Gauge.GetValue()
				}
			}
		}
		return sum
	}
	for _, op := range []string{"attach", "write", "read", "lopen", "walk"} {
		if n := count("locus_cfs_op_seconds", op); n < 1 {
			t.Errorf("no %s in the op histogram", op)
		}
	}
	// The create: Tlcreate, or Tucreate (p9's, naming the uid).
	if n := count("locus_cfs_op_seconds", "lcreate") + count("locus_cfs_op_seconds", "ucreate"); n != 1 {
		t.Errorf("creates in the op histogram: %v, want 1", n)
	}
	if n := count("locus_cfs_op_errors_total", "walk"); n < 1 {
		t.Errorf("the walk to a missing file is not counted as an error: %v", n)
	}
	if n := count("locus_cfs_op_errors_total", "write"); n != 0 {
		t.Errorf("%v write errors, want none", n)
	}
	if n := count("locus_cfs_clients", ""); n != 1 {
		t.Errorf("clients: %v, want 1", n)
	}
	root.Close()
	cl.Close()
	for deadline := time.Now().Add(5 * time.Second); count("locus_cfs_clients", "") != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("clients: %v after the client closed, want 0", count("locus_cfs_clients", ""))
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := NewRelay(func(ctx context.Context) (net.Conn, error) { return net.Dial("tcp", addr) }, slog.New(slog.DiscardHandler))
	defer r.Close()
	m.WatchRelay(r)
	if _, _, err := r.upstream(p9.NoUID); err != nil {
		t.Fatal(err)
	}
	if n := count("locus_cfs_relay_connections_total", ""); n != 1 {
		t.Errorf("relay connections: %v, want 1", n)
	}
}
