package cfs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// needRoot skips a test that sets other users' ownership.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the server creates files as other users")
	}
}

// attachAs attaches to the export at addr as uid, as the kernel client
// does for each user of the mount.
func attachAs(t *testing.T, addr string, uid p9.UID) p9.File {
	t.Helper()
	cl, _ := attach(t, addr)
	root, err := cl.AttachAs("", uid)
	if err != nil {
		t.Fatalf("attach as %d: %v", uid, err)
	}
	t.Cleanup(func() { root.Close() })
	return root
}

// lstat is the server's own view of path.
func lstat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func wantOwner(t *testing.T, path string, mode, uid, gid uint32) {
	t.Helper()
	st := lstat(t, path)
	if st.Mode&07777 != mode || st.Uid != uid || st.Gid != gid {
		t.Errorf("%s: mode,uid,gid %#o,%d,%d; want %#o,%d,%d", filepath.Base(path), st.Mode&07777, st.Uid, st.Gid, mode, uid, gid)
	}
}

// ownershipCases creates one of each kind of inode under root (attached
// as uid 65534, group 65533 sent by the client) and checks on the
// server's disk that each has that owner and group and exactly the mode
// asked for: no umask of the server's, setuid and setgid kept; in a
// setgid directory, the directory's group and (for a directory) its bit.
func ownershipCases(t *testing.T, root p9.File, export string) {
	t.Helper()
	const uid, gid = 65534, 65533
	old := unix.Umask(0o077) // the server's own umask must not apply
	defer unix.Umask(old)

	_, dir, err := root.Walk(nil)
	if err != nil {
		t.Fatal(err)
	}
	f, _, _, err := dir.Create("file", p9.WriteOnly, 0o642, p9.NoUID, gid)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	f.Close()
	wantOwner(t, filepath.Join(export, "file"), 0o642, uid, gid)

	_, dir, _ = root.Walk(nil)
	f, _, _, err = dir.Create("suid", p9.WriteOnly, 0o6755, p9.NoUID, gid)
	if err != nil {
		t.Fatalf("create setuid: %v", err)
	}
	f.Close()
	wantOwner(t, filepath.Join(export, "suid"), 0o6755, uid, gid)

	if _, err := root.Mkdir("dir", 0o777, p9.NoUID, gid); err != nil {
		t.Fatalf("mkdir: %v", err)
	}
	wantOwner(t, filepath.Join(export, "dir"), 0o777, uid, gid)
	if _, err := root.Symlink("target", "link", p9.NoUID, gid); err != nil {
		t.Fatalf("symlink: %v", err)
	}
	if st := lstat(t, filepath.Join(export, "link")); st.Uid != uid || st.Gid != gid {
		t.Errorf("symlink owned by %d:%d; want %d:%d", st.Uid, st.Gid, uid, gid)
	}
	if _, err := root.Mknod("fifo", p9.ModeNamedPipe|0o666, 0, 0, p9.NoUID, gid); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	wantOwner(t, filepath.Join(export, "fifo"), 0o666, uid, gid)

	// A setgid directory of group 4242 (the caller is not in it): what is
	// made in it takes its group, a directory its setgid bit too.
	sg := filepath.Join(export, "shared")
	if err := os.Mkdir(sg, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(sg, 0, 4242); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(sg, 0o2777); err != nil {
		t.Fatal(err)
	}
	sgf := walk(t, root, "shared")
	if _, err := sgf.Mkdir("sub", 0o755, p9.NoUID, gid); err != nil {
		t.Fatalf("mkdir in a setgid directory: %v", err)
	}
	wantOwner(t, filepath.Join(sg, "sub"), 0o2755, uid, 4242)
	_, d2, _ := sgf.Walk(nil)
	f, _, _, err = d2.Create("f", p9.WriteOnly, 0o644, p9.NoUID, gid)
	if err != nil {
		t.Fatalf("create in a setgid directory: %v", err)
	}
	f.Close()
	wantOwner(t, filepath.Join(sg, "f"), 0o644, uid, 4242)
}

// TestOwnership: what a user creates through CFS is that user's.
func TestOwnership(t *testing.T) {
	needRoot(t)
	addr, export, _ := serve(t, nil)
	ownershipCases(t, attachAs(t, addr, 65534), export)
}

// TestSetAttr: chmod keeps setuid and setgid; times are set to the
// nanosecond, on a symlink itself too.
func TestSetAttr(t *testing.T) {
	needRoot(t)
	addr, export, _ := serve(t, nil)
	root := attachAs(t, addr, 0)
	writeFile(t, root, "f", []byte("x"))
	f := walk(t, root, "f")
	if err := f.SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o4711}); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, filepath.Join(export, "f")); st.Mode&07777 != 0o4711 {
		t.Errorf("chmod 04711 gave %#o", st.Mode&07777)
	}
	if _, err := root.Symlink("f", "l", p9.NoUID, p9.NoGID); err != nil {
		t.Fatal(err)
	}
	l := walk(t, root, "l")
	set := p9.SetAttr{ATimeSeconds: 1000, ATimeNanoSeconds: 123456789, MTimeSeconds: 2000, MTimeNanoSeconds: 987654321}
	if err := l.SetAttr(p9.SetAttrMask{ATime: true, MTime: true, ATimeNotSystemTime: true, MTimeNotSystemTime: true}, set); err != nil {
		t.Fatal(err)
	}
	st := lstat(t, filepath.Join(export, "l"))
	if st.Atim.Sec != 1000 || st.Atim.Nsec != 123456789 || st.Mtim.Sec != 2000 || st.Mtim.Nsec != 987654321 {
		t.Errorf("symlink times %v %v; want 1000.123456789 2000.987654321", st.Atim, st.Mtim)
	}
}

// TestUserWriteClearsSetID: a user's write to a setuid file clears
// setuid and setgid, as on a local filesystem; root's keeps them.
func TestUserWriteClearsSetID(t *testing.T) {
	needRoot(t)
	addr, export, _ := serve(t, nil)
	path := filepath.Join(export, "f")
	for _, c := range []struct {
		uid  p9.UID
		want uint32
	}{{65534, 0o777}, {0, 0o6777}} {
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := unix.Chmod(path, 0o6777); err != nil {
			t.Fatal(err)
		}
		f := walk(t, attachAs(t, addr, c.uid), "f")
		if _, _, err := f.Open(p9.WriteOnly); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("x"), 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if st := lstat(t, path); st.Mode&07777 != c.want {
			t.Errorf("after a write by uid %d the mode is %#o; want %#o", c.uid, st.Mode&07777, c.want)
		}
	}
}
