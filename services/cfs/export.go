package cfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// Export is a local directory served as a 9P2000.L file tree. It is the
// p9.Attacher of a Server.
type Export struct {
	dir      string
	root     int    // O_PATH descriptor of dir, on a clone of its mount
	dev      uint64 // the exported filesystem's device
	creators *creators
}

// nCreators is how many creates may run at once: a create is a few
// system calls on the exported filesystem.
const nCreators = 4

// NewExport opens dir for serving. Close releases it.
//
// The export is dir's filesystem alone, never what is mounted in it: the
// server's node runs from the root it serves, with its own /proc, /sys,
// /dev, /run and /tmp mounted there, and a client must see the shared
// directories under them (which it covers with its own), not the
// server's node's. So dir is served through a clone of its mount without
// the mounts under it (open_tree(2), OPEN_TREE_CLONE, not recursive);
// where that is refused (no CAP_SYS_ADMIN), through dir itself, and a
// walk into another filesystem answers EXDEV.
func NewExport(dir string) (*Export, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSYS) {
		fd, err = unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("cfs: export %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("cfs: export %s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		unix.Close(fd)
		return nil, fmt.Errorf("cfs: export %s: not a directory", dir)
	}
	c, err := startCreators(nCreators)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("cfs: export %s: %w", dir, err)
	}
	return &Export{dir: dir, root: fd, dev: st.Dev, creators: c}, nil
}

// Dir is the exported directory.
func (e *Export) Dir() string { return e.dir }

// Close releases the export's root. Files attached before stay usable
// until their clients clunk them.
func (e *Export) Close() error {
	e.creators.stop()
	return unix.Close(e.root)
}

// Attach implements p9.Attacher: an attach that names no user is the
// user nobody's.
func (e *Export) Attach() (p9.File, error) { return e.AttachUID("", p9.NoUID) }

// nobody is the user of an attach that names none.
const nobody = 65534

// AttachUID implements p9.UIDAttacher: every attach starts at the
// export's root, and what is created under it belongs to uid (the Linux
// client attaches once for each user that uses the mount).
func (e *Export) AttachUID(_ string, uid p9.UID) (p9.File, error) {
	fd, err := unix.Openat(e.root, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cfs: attach %s: %w", e.dir, err)
	}
	if !uid.Ok() {
		uid = nobody
	}
	return &file{e: e, fd: fd, mode: unix.S_IFDIR, uid: int(uid), gen: generation(fd)}, nil
}

// file is one fid's file: an O_PATH descriptor of its inode, plus the
// descriptor opened for I/O once the client opens it.
type file struct {
	e    *Export
	fd   int    // O_PATH|O_NOFOLLOW: names the inode, cannot do I/O
	mode uint32 // S_IFMT bits, fixed for the inode's life
	uid  int    // the attaching user: owner of what is created from here
	gen  uint32 // the inode's generation (QID version)

	mu      sync.Mutex
	io      int // the descriptor opened for I/O, once opened
	opened  bool
	written atomic.Bool // written through this fid since it was opened
	dirents []p9.Dirent // directory listing, read at offset 0
	closed  bool        // fd was closed
}

var _ p9.File = (*file)(nil)

// procPath names f's inode through /proc/self/fd: the kernel resolves it
// to the inode itself, not a path, so it cannot leave the export. Used
// only for regular files and directories, never for symlinks.
func (f *file) procPath() string { return "/proc/self/fd/" + strconv.Itoa(f.fd) }

func (f *file) isSymlink() bool { return f.mode == unix.S_IFLNK }

// qidOf is the QID of the inode st describes, whose generation is gen:
// path the inode number, version its generation, so that a name that
// now holds another inode (one that reused the number, even) never
// passes for the file a client had.
func qidOf(st *unix.Stat_t, gen uint32) p9.QID {
	return p9.QID{Type: p9.FileMode(st.Mode).QIDType(), Path: st.Ino, Version: gen}
}

// generation is the inode generation of the file fd names, read from its
// file handle (name_to_handle_at needs no privilege and takes an O_PATH
// descriptor): ext4's handles are inode number then generation. Other
// filesystems' handles are hashed into one; 0 when there is none.
func generation(fd int) uint32 {
	h, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		return 0
	}
	b := h.Bytes()
	const fileidIno32Gen, fileidIno32GenParent = 1, 2
	if t := h.Type(); (t == fileidIno32Gen || t == fileidIno32GenParent) && len(b) >= 8 {
		return binary.NativeEndian.Uint32(b[4:8])
	}
	x := uint32(2166136261) // FNV-1a
	for _, c := range b {
		x = (x ^ uint32(c)) * 16777619
	}
	return x
}

// walkOne opens name in the directory dirfd as a new file.
func (f *file) walkOne(name string) (*file, p9.QID, *unix.Stat_t, error) {
	fd, err := unix.Openat(f.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, p9.QID{}, nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, p9.QID{}, nil, err
	}
	if st.Dev != f.e.dev {
		// A mount point of the server's own (see NewExport).
		unix.Close(fd)
		return nil, p9.QID{}, nil, linux.EXDEV
	}
	nf := &file{e: f.e, fd: fd, mode: st.Mode & unix.S_IFMT, uid: f.uid, gen: generation(fd)}
	return nf, qidOf(&st, nf.gen), &st, nil
}

func (f *file) walk(names []string) ([]p9.QID, *file, *unix.Stat_t, error) {
	if len(names) == 0 {
		fd, err := unix.FcntlInt(uintptr(f.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, nil, nil, err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, nil, nil, err
		}
		return nil, &file{e: f.e, fd: fd, mode: f.mode, uid: f.uid, gen: f.gen}, &st, nil
	}
	qids := make([]p9.QID, 0, len(names))
	cur := f
	var st *unix.Stat_t
	for _, name := range names {
		next, qid, s, err := cur.walkOne(name)
		if cur != f {
			cur.Close()
		}
		if err != nil {
			return nil, nil, nil, err
		}
		qids, cur, st = append(qids, qid), next, s
	}
	return qids, cur, st, nil
}

// Walk implements p9.File.Walk.
func (f *file) Walk(names []string) ([]p9.QID, p9.File, error) {
	qids, nf, _, err := f.walk(names)
	if err != nil {
		return nil, nil, err
	}
	return qids, nf, nil
}

// WalkGetAttr implements p9.File.WalkGetAttr: one round trip for the
// walk-then-stat every path lookup of the kernel client does.
func (f *file) WalkGetAttr(names []string) ([]p9.QID, p9.File, p9.AttrMask, p9.Attr, error) {
	qids, nf, st, err := f.walk(names)
	if err != nil {
		return nil, nil, p9.AttrMask{}, p9.Attr{}, err
	}
	mask, attr := attrOf(st)
	return qids, nf, mask, attr, nil
}

func attrOf(st *unix.Stat_t) (p9.AttrMask, p9.Attr) {
	return p9.AttrMask{Mode: true, NLink: true, UID: true, GID: true, RDev: true, ATime: true, MTime: true, CTime: true, INo: true, Size: true, Blocks: true},
		p9.Attr{
			Mode: p9.FileMode(st.Mode), UID: p9.UID(st.Uid), GID: p9.GID(st.Gid),
			NLink: p9.NLink(st.Nlink), RDev: p9.Dev(st.Rdev), Size: uint64(st.Size),
			BlockSize: uint64(st.Blksize), Blocks: uint64(st.Blocks),
			ATimeSeconds: uint64(st.Atim.Sec), ATimeNanoSeconds: uint64(st.Atim.Nsec),
			MTimeSeconds: uint64(st.Mtim.Sec), MTimeNanoSeconds: uint64(st.Mtim.Nsec),
			CTimeSeconds: uint64(st.Ctim.Sec), CTimeNanoSeconds: uint64(st.Ctim.Nsec),
		}
}

// GetAttr implements p9.File.GetAttr.
func (f *file) GetAttr(p9.AttrMask) (p9.QID, p9.AttrMask, p9.Attr, error) {
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, err
	}
	mask, attr := attrOf(&st)
	return qidOf(&st, f.gen), mask, attr, nil
}

// SetAttr implements p9.File.SetAttr: chmod, chown, truncate, utimes.
func (f *file) SetAttr(valid p9.SetAttrMask, attr p9.SetAttr) error {
	if valid.UID || valid.GID {
		uid, gid := -1, -1
		if valid.UID {
			uid = int(attr.UID)
		}
		if valid.GID {
			gid = int(attr.GID)
		}
		if err := unix.Fchownat(f.fd, "", uid, gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return errno(err)
		}
	}
	if valid.Permissions && !f.isSymlink() {
		// (A symlink's mode is always 0777: Linux has no lchmod.)
		if err := unix.Fchmodat(unix.AT_FDCWD, f.procPath(), uint32(attr.Permissions)&07777, 0); err != nil {
			return errno(err)
		}
	}
	if valid.Size {
		if f.mode != unix.S_IFREG {
			return linux.EINVAL
		}
		if err := unix.Truncate(f.procPath(), int64(attr.Size)); err != nil {
			return err
		}
	}
	if valid.ATime || valid.MTime {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if valid.ATime {
			ts[0] = timeArg(valid.ATimeNotSystemTime, attr.ATimeSeconds, attr.ATimeNanoSeconds)
		}
		if valid.MTime {
			ts[1] = timeArg(valid.MTimeNotSystemTime, attr.MTimeSeconds, attr.MTimeNanoSeconds)
		}
		// On the inode itself, a symlink's own times included.
		if err := unix.UtimesNanoAt(f.fd, "", ts, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return errno(err)
		}
	}
	return nil
}

func timeArg(given bool, sec, nsec uint64) unix.Timespec {
	if !given {
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
}

// openFlags are the Linux open flags a client may pass on; the rest
// (O_CREAT, O_NOFOLLOW, O_PATH, ...) are the server's business.
const openFlags = unix.O_ACCMODE | unix.O_TRUNC | unix.O_APPEND | unix.O_SYNC | unix.O_DSYNC | unix.O_DIRECT | unix.O_NOATIME

// Open implements p9.File.Open. Only regular files and directories
// open: a device node or FIFO on the shared root is the client's own
// (the kernel client never opens them here), never the server's.
func (f *file) Open(flags p9.OpenFlags) (p9.QID, uint32, error) {
	if f.mode != unix.S_IFREG && f.mode != unix.S_IFDIR {
		return p9.QID{}, 0, linux.EINVAL
	}
	fd, err := unix.Open(f.procPath(), int(uint32(flags)&openFlags)|unix.O_CLOEXEC, 0)
	if err != nil {
		return p9.QID{}, 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return p9.QID{}, 0, err
	}
	f.mu.Lock()
	f.io, f.opened = fd, true
	f.mu.Unlock()
	return qidOf(&st, f.gen), 0, nil
}

func (f *file) ioFD() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.opened {
		return -1, linux.EBADF
	}
	return f.io, nil
}

// ReadAt implements p9.File.ReadAt. End of file is a short read, not an
// error (the p9 server would turn io.EOF into EIO).
func (f *file) ReadAt(p []byte, offset int64) (int, error) {
	fd, err := f.ioFD()
	if err != nil {
		return 0, err
	}
	n := 0
	for n < len(p) {
		m, err := unix.Pread(fd, p[n:], offset+int64(n))
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

// WriteAt implements p9.File.WriteAt. A file opened with O_APPEND
// appends wherever offset points, as pwrite(2) does on Linux: appends
// from several nodes interleave whole, none overwrites another.
func (f *file) WriteAt(p []byte, offset int64) (int, error) {
	fd, err := f.ioFD()
	if err != nil {
		return 0, err
	}
	f.written.Store(true)
	if f.uid != 0 && f.mode == unix.S_IFREG && setID(fd) {
		// A user's write clears setuid and setgid: the kernel does it
		// when the write is that user's, not the server's.
		var n int
		err := f.e.creators.asUser(f.uid, func() (err error) { n, err = pwriteAll(fd, p, offset); return })
		return n, err
	}
	return pwriteAll(fd, p, offset)
}

// setID reports whether the file open at fd is setuid, or setgid and
// group-executable: the modes a user's write clears.
func setID(fd int) bool {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return false
	}
	return st.Mode&unix.S_ISUID != 0 || st.Mode&(unix.S_ISGID|unix.S_IXGRP) == unix.S_ISGID|unix.S_IXGRP
}

func pwriteAll(fd int, p []byte, offset int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Pwrite(fd, p[n:], offset+int64(n))
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return n, err
		}
		n += m
	}
	return n, nil
}

// FSync implements p9.File.FSync.
func (f *file) FSync() error {
	fd, err := f.ioFD()
	if err != nil {
		return err
	}
	return unix.Fsync(fd)
}

// Lock implements p9.File.Lock with open-file-description locks on the
// server: a POSIX lock taken on one node excludes every other node's.
func (f *file) Lock(pid int, locktype p9.LockType, flags p9.LockFlags, start, length uint64, client string) (p9.LockStatus, error) {
	fd, err := f.ioFD()
	if err != nil {
		return p9.LockStatusError, err
	}
	lk := unix.Flock_t{Whence: 0, Start: int64(start), Len: int64(length)}
	switch locktype {
	case p9.ReadLock:
		lk.Type = unix.F_RDLCK
	case p9.WriteLock:
		lk.Type = unix.F_WRLCK
	case p9.Unlock:
		lk.Type = unix.F_UNLCK
	default:
		return p9.LockStatusError, linux.EINVAL
	}
	// The kernel client retries a blocking request while the answer is
	// "blocked", so the server never sleeps holding a request.
	switch err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err {
	case nil:
		return p9.LockStatusOK, nil
	case unix.EAGAIN, unix.EACCES:
		return p9.LockStatusBlocked, nil
	default:
		return p9.LockStatusError, nil
	}
}

// GetLock implements p9.LockGetter with the server's F_OFD_GETLK: a
// lock through another fid (any node's) conflicts. The holder's process
// is not known here (another node's, or an open file description of the
// server's): its PID is 0.
func (f *file) GetLock(l p9.Lock) (p9.Lock, error) {
	fd, err := f.ioFD()
	if err != nil {
		return p9.Lock{}, err
	}
	lk := unix.Flock_t{Whence: 0, Start: int64(l.Start), Len: int64(l.Length)}
	switch l.Type {
	case p9.ReadLock:
		lk.Type = unix.F_RDLCK
	case p9.WriteLock:
		lk.Type = unix.F_WRLCK
	default:
		return p9.Lock{}, linux.EINVAL
	}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
		return p9.Lock{}, err
	}
	if lk.Type == unix.F_UNLCK {
		l.Type = p9.Unlock
		return l, nil
	}
	out := p9.Lock{Type: p9.ReadLock, Start: uint64(lk.Start), Length: uint64(lk.Len)}
	if lk.Type == unix.F_WRLCK {
		out.Type = p9.WriteLock
	}
	return out, nil
}

// Close implements p9.File.Close: the fid was clunked. A file written
// through it is synced first, so that what a client wrote and closed is
// on disk when its close returns, as NFS commits on close: a crash of
// the server (and a failover) loses nothing closed. A second Close does
// nothing: closing a descriptor number twice would close whatever the
// process opened under that number since.
func (f *file) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var err error
	if f.opened {
		if f.written.Load() {
			err = unix.Fdatasync(f.io)
		}
		unix.Close(f.io)
		f.opened = false
	}
	f.dirents = nil
	if f.closed {
		return err
	}
	f.closed = true
	if cerr := unix.Close(f.fd); err == nil {
		err = cerr
	}
	return err
}

// create runs mk, which makes a new inode named name here, as the
// caller: the attaching user and the group the client sent (the
// creating process's, or a setgid directory's; -1 when none was sent).
// The kernel sets owner, group and mode at once; nothing is changed
// after. It returns a new file for the inode.
func (f *file) create(name string, gid p9.GID, mk func() error) (*file, p9.QID, error) {
	g := -1
	if gid.Ok() {
		g = int(gid)
	}
	if err := f.e.creators.as(f.uid, g, mk); err != nil {
		return nil, p9.QID{}, errno(err)
	}
	nf, qid, _, err := f.walkOne(name)
	return nf, qid, err
}

// Create implements p9.File.Create: a new regular file, opened.
func (f *file) Create(name string, flags p9.OpenFlags, perm p9.FileMode, _ p9.UID, gid p9.GID) (p9.File, p9.QID, uint32, error) {
	fd := -1
	nf, qid, err := f.create(name, gid, func() (err error) {
		fd, err = unix.Openat(f.fd, name, int(uint32(flags)&openFlags)|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm.Permissions()))
		return err
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, p9.QID{}, 0, err
	}
	nf.io, nf.opened = fd, true
	return nf, qid, 0, nil
}

// createQID is create for the inodes that are not opened on creation.
func (f *file) createQID(name string, gid p9.GID, mk func() error) (p9.QID, error) {
	nf, qid, err := f.create(name, gid, mk)
	if err != nil {
		return p9.QID{}, err
	}
	nf.Close()
	return qid, nil
}

// Mkdir implements p9.File.Mkdir.
func (f *file) Mkdir(name string, perm p9.FileMode, _ p9.UID, gid p9.GID) (p9.QID, error) {
	return f.createQID(name, gid, func() error { return unix.Mkdirat(f.fd, name, uint32(perm.Permissions())) })
}

// Symlink implements p9.File.Symlink. The target is stored as given and
// only ever read back by clients.
func (f *file) Symlink(target, name string, _ p9.UID, gid p9.GID) (p9.QID, error) {
	return f.createQID(name, gid, func() error { return unix.Symlinkat(target, f.fd, name) })
}

// Mknod implements p9.File.Mknod: device nodes, FIFOs and sockets on the
// shared root, used by each client on its own.
func (f *file) Mknod(name string, mode p9.FileMode, major, minor uint32, _ p9.UID, gid p9.GID) (p9.QID, error) {
	return f.createQID(name, gid, func() error {
		return unix.Mknodat(f.fd, name, uint32(mode.FileType()|mode.Permissions()), int(unix.Mkdev(major, minor)))
	})
}

// Link implements p9.File.Link: a hard link to target named name here.
func (f *file) Link(target p9.File, name string) error {
	t, ok := target.(*file)
	if !ok {
		return linux.EXDEV
	}
	return errno(unix.Linkat(t.fd, "", f.fd, name, unix.AT_EMPTY_PATH))
}

// RenameAt implements p9.File.RenameAt.
func (f *file) RenameAt(oldName string, newDir p9.File, newName string) error {
	d, ok := newDir.(*file)
	if !ok {
		return linux.EXDEV
	}
	return errno(unix.Renameat(f.fd, oldName, d.fd, newName))
}

// Rename implements p9.File.Rename, the old fid-based rename; clients
// use RenameAt (Trenameat), which names the old directory.
func (f *file) Rename(p9.File, string) error { return linux.EOPNOTSUPP }

// Renamed implements p9.File.Renamed: descriptors name inodes, not
// paths, so there is nothing to update.
func (f *file) Renamed(p9.File, string) {}

// UnlinkAt implements p9.File.UnlinkAt (flags: AT_REMOVEDIR).
func (f *file) UnlinkAt(name string, flags uint32) error {
	return errno(unix.Unlinkat(f.fd, name, int(flags&unix.AT_REMOVEDIR)))
}

// errno keeps a system call's error number exact on the wire: the p9
// server maps errors that match os.ErrExist or os.ErrPermission to EEXIST
// and EACCES, which would turn ENOTEMPTY and EPERM into the wrong answer.
func errno(err error) error {
	if e, ok := err.(unix.Errno); ok {
		return linux.Errno(e)
	}
	return err
}

// Readlink implements p9.File.Readlink.
func (f *file) Readlink() (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(f.fd, "", buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// StatFS implements p9.File.StatFS.
func (f *file) StatFS() (p9.FSStat, error) {
	var s unix.Statfs_t
	if err := unix.Fstatfs(f.fd, &s); err != nil {
		return p9.FSStat{}, err
	}
	return p9.FSStat{
		Type: uint32(s.Type), BlockSize: uint32(s.Bsize), Blocks: s.Blocks, BlocksFree: s.Bfree,
		BlocksAvailable: s.Bavail, Files: s.Files, FilesFree: s.Ffree,
		FSID: uint64(uint32(s.Fsid.Val[0])) | uint64(uint32(s.Fsid.Val[1]))<<32, NameLength: uint32(s.Namelen),
	}, nil
}

// Readdir implements p9.File.Readdir. The listing is read whole when a
// client starts at offset 0 and served from there, so offsets stay
// stable while the client pages through it; entry i has offset i+1.
func (f *file) Readdir(offset uint64, count uint32) (p9.Dirents, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.opened {
		return nil, linux.EBADF
	}
	if offset == 0 || f.dirents == nil {
		ents, err := readDir(f.io)
		if err != nil {
			return nil, err
		}
		f.dirents = ents
	}
	if offset >= uint64(len(f.dirents)) {
		return nil, nil
	}
	// count is bytes; the reply is cut to fit it, an entry takes 24
	// bytes and its name at least.
	n := uint64(count)/24 + 1
	end := min(offset+n, uint64(len(f.dirents)))
	return f.dirents[offset:end], nil
}

// readDir lists the directory open at fd with getdents64, keeping the
// kernel's d_type, which the 9P2000.L client hands to readdir(3) as is.
func readDir(fd int) ([]p9.Dirent, error) {
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return nil, err
	}
	var out []p9.Dirent
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return nil, fmt.Errorf("cfs: getdents: bad record length %d", reclen)
			}
			ino := binary.NativeEndian.Uint64(b[0:8])
			dt := b[18]
			name := b[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			out = append(out, p9.Dirent{
				QID:    p9.QID{Type: dtQIDType(dt), Path: ino},
				Offset: uint64(len(out) + 1),
				Type:   p9.QIDType(dt),
				Name:   string(name),
			})
			b = b[reclen:]
		}
	}
}

func dtQIDType(dt byte) p9.QIDType {
	switch dt {
	case unix.DT_DIR:
		return p9.TypeDir
	case unix.DT_LNK:
		return p9.TypeSymlink
	}
	return p9.TypeRegular
}

// GetXattr implements p9.File.GetXattr. The kernel reads
// security.capability on every exec: "no such attribute" must be ENODATA.
func (f *file) GetXattr(attr string) ([]byte, error) {
	if f.isSymlink() {
		return nil, linux.ENODATA
	}
	for size := 256; size <= 64<<10; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Getxattr(f.procPath(), attr, buf)
		if err == unix.ERANGE {
			continue
		}
		if err != nil {
			return nil, errno(err)
		}
		return buf[:n], nil
	}
	return nil, linux.E2BIG
}

// SetXattr implements p9.File.SetXattr.
func (f *file) SetXattr(attr string, data []byte, flags p9.XattrFlags) error {
	if f.isSymlink() {
		return linux.EPERM
	}
	return errno(unix.Setxattr(f.procPath(), attr, data, int(flags)))
}

// ListXattrs implements p9.File.ListXattrs.
func (f *file) ListXattrs() ([]string, error) {
	if f.isSymlink() {
		return nil, nil
	}
	buf := make([]byte, 64<<10)
	n, err := unix.Listxattr(f.procPath(), buf)
	if err != nil {
		return nil, errno(err)
	}
	var names []string
	for _, name := range bytes.Split(buf[:n], []byte{0}) {
		if len(name) > 0 {
			names = append(names, string(name))
		}
	}
	return names, nil
}

// RemoveXattr implements p9.File.RemoveXattr.
func (f *file) RemoveXattr(attr string) error {
	if f.isSymlink() {
		return linux.ENODATA
	}
	return errno(unix.Removexattr(f.procPath(), attr))
}
