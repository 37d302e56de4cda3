package cfs

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// FUSESocket is where a node's relay takes the kernel's FUSE connection
// for the shared root from init (see HandOff), in a directory only root
// may enter.
const FUSESocket = "/run/locus/cfs/fuse.sock"

// FUSEMountOptions are the kernel's options for a FUSE mount of the
// shared root, after fd=: every user reaches it (allow_other) and the
// kernel checks permissions itself from the modes and owners the server
// reports (default_permissions), with the caller's whole credentials.
const FUSEMountOptions = "rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions"

// fuseMaxWrite is the largest read or write the kernel sends: the
// upstream message size less 9P's header.
const fuseMaxWrite = relayMsize - 4096

// The FUSE front.
//
// The kernel's 9P client has a fixed timestamp granularity of one second
// on Debian's 6.1 (v9fs never sets s_time_gran), so every time set
// through it loses its nanoseconds; and it needs a second 9P stack in the
// relay. The FUSE front serves the kernel's FUSE requests straight from
// the relay's files: one protocol translation on the node instead of two,
// the kernel's granularity is the server's (1 ns), and the relay's
// failover (reconnect, reopen by path with identity check, locks taken
// again) is the same code.
//
// Coherence is that of the 9P mount it replaces: no attribute or name is
// cached by the kernel (timeouts 0), so every stat and every lookup asks
// the server, and what another node changed is seen at once. File data
// is kept in the node's page cache between opens only while the file's
// size and modification time stay what the server says they are: the
// kernel asks for the attributes before each read (auto_inval_data) and
// drops the pages when they changed.

// fnode is one inode the kernel knows (a FUSE node ID).
type fnode struct {
	id  uint64
	qid p9.QID
	rf  *relayFile // walked from root's attach; never opened

	// Guarded by fuseFS.mu.
	lookups uint64
	parent  *fnode
	name    string
	gone    bool // unlinked or replaced by a rename: no name any more
	// users are fids of this directory walked from other users' attaches:
	// the server creates files as the user whose attach the directory's
	// fid comes from.
	users map[p9.UID]*relayFile
}

// fhandle is one open file or directory (a FUSE file handle).
type fhandle struct {
	rf *relayFile // opened

	mu      sync.Mutex
	written bool // written since the last flush
}

type childKey struct {
	parent uint64
	name   string
}

// fuseFS implements fuse.RawFileSystem on a Relay.
type fuseFS struct {
	fuse.RawFileSystem // ENOSYS for what is not here
	r                  *Relay
	log                *slog.Logger

	mu       sync.Mutex
	nodes    map[uint64]*fnode
	children map[childKey]*fnode // the node each name has, by directory
	nextNode uint64
	handles  map[uint64]*fhandle
	nextFH   uint64
}

func newFuseFS(r *Relay, log *slog.Logger) (*fuseFS, error) {
	fs := &fuseFS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		r:             r,
		log:           log,
		nodes:         map[uint64]*fnode{},
		children:      map[childKey]*fnode{},
		nextNode:      fuse.FUSE_ROOT_ID + 1,
		handles:       map[uint64]*fhandle{},
		nextFH:        1,
	}
	rf := r.placed(0, func() ([]string, bool) { return nil, true }, p9.QID{}, false)
	if _, err := rf.current(); err != nil {
		rf.Close()
		return nil, fmt.Errorf("cfs fuse: attach to the shared root: %w", err)
	}
	fs.nodes[fuse.FUSE_ROOT_ID] = &fnode{id: fuse.FUSE_ROOT_ID, rf: rf, lookups: 1}
	return fs, nil
}

// NewFUSEServer returns a FUSE server of the shared root through r on
// dev, a /dev/fuse descriptor init opened and mounted (see HandOff); the
// server owns it from then on, also when this fails. Serve it; it ends
// when the mount goes.
func (r *Relay) NewFUSEServer(dev int) (*fuse.Server, error) {
	fs, err := newFuseFS(r, r.log)
	if err != nil {
		unix.Close(dev)
		return nil, err
	}
	srv, err := fuse.NewServer(fs, fmt.Sprintf("/dev/fd/%d", dev), fuseOptions(r.log))
	if err != nil {
		return nil, fmt.Errorf("cfs fuse: serve /dev/fuse: %w", err)
	}
	return srv, nil
}

// MountFUSE mounts the shared root through r on dir itself (tests, and
// nodes whose init does not hand a connection over).
func (r *Relay) MountFUSE(dir string) (*fuse.Server, error) {
	fs, err := newFuseFS(r, r.log)
	if err != nil {
		return nil, err
	}
	opts := fuseOptions(r.log)
	opts.DirectMountStrict = true
	opts.Options = []string{"default_permissions"}
	srv, err := fuse.NewServer(fs, dir, opts)
	if err != nil {
		return nil, fmt.Errorf("cfs fuse: mount on %s: %w", dir, err)
	}
	return srv, nil
}

func fuseOptions(log *slog.Logger) *fuse.MountOptions {
	return &fuse.MountOptions{
		AllowOther:         true,
		FsName:             "cfs",
		Name:               "cfs",
		MaxWrite:           fuseMaxWrite,
		EnableLocks:        true,
		DisableReadDirPlus: true,
		MaxBackground:      64,
		Logger:             slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

func (fs *fuseFS) String() string { return "cfs" }

// status turns an error of the relay into the kernel's errno.
func status(err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	var le linux.Errno
	if errors.As(err, &le) {
		return fuse.Status(le)
	}
	var ue unix.Errno
	if errors.As(err, &ue) {
		return fuse.Status(ue)
	}
	return fuse.EIO
}

func (fs *fuseFS) node(id uint64) *fnode {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.nodes[id]
}

func (fs *fuseFS) handle(fh uint64) *fhandle {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.handles[fh]
}

// place returns the function that names n for its relay files.
func (fs *fuseFS) place(n *fnode) func() ([]string, bool) {
	return func() ([]string, bool) {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		var names []string
		for p := n; p.id != fuse.FUSE_ROOT_ID; p = p.parent {
			if p.gone || p.parent == nil {
				return nil, false
			}
			names = append([]string{p.name}, names...)
		}
		return names, true
	}
}

// as returns the fid of directory n to create in as uid.
func (fs *fuseFS) as(n *fnode, uid uint32) *relayFile {
	if uid == 0 {
		return n.rf
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	u := p9.UID(uid)
	if f := n.users[u]; f != nil {
		return f
	}
	f := fs.r.placed(u, fs.place(n), n.qid, n.id != fuse.FUSE_ROOT_ID)
	if n.users == nil {
		n.users = map[p9.UID]*relayFile{}
	}
	n.users[u] = f
	return f
}

// detach forgets the name parent/name: its file was unlinked or replaced.
// Called with fs.mu held.
func (fs *fuseFS) detach(parent uint64, name string) {
	k := childKey{parent, name}
	if n := fs.children[k]; n != nil {
		delete(fs.children, k)
		n.gone, n.parent, n.name = true, nil, ""
	}
}

// enter makes the kernel's entry for name in p, whose fid cf (walked from
// p.rf) found qid with attr; the node's lookup count goes up by one. The
// name's node is the same as long as the name holds the same inode: the
// kernel checks that a cached name still has its node ID, and drops the
// name (and anything mounted on it) if not. Another name of the same
// inode (a hard link) is another node: QIDs are unique only within one
// server's filesystem, and a node of its own per name keeps it so.
func (fs *fuseFS) enter(p *fnode, name string, cf *relayFile, qid p9.QID, attr p9.Attr, out *fuse.EntryOut) {
	fs.mu.Lock()
	k := childKey{p.id, name}
	n := fs.children[k]
	if n != nil && n.qid == qid {
		n.lookups++
		fs.mu.Unlock()
		cf.Close()
	} else {
		n = &fnode{id: fs.nextNode, qid: qid, rf: cf, lookups: 1, parent: p, name: name}
		fs.nextNode++
		fs.detach(p.id, name)
		fs.nodes[n.id], fs.children[k] = n, n
		fs.mu.Unlock()
		cf.setPlace(fs.place(n))
	}
	*out = fuse.EntryOut{NodeId: n.id, Generation: uint64(qid.Version)}
	fillAttr(&out.Attr, qid, attr)
}

// lookup walks to name in p and enters it.
func (fs *fuseFS) lookup(p *fnode, name string, out *fuse.EntryOut) fuse.Status {
	qids, f, _, attr, err := p.rf.WalkGetAttr([]string{name})
	if err != nil {
		return status(err)
	}
	fs.enter(p, name, f, qids[len(qids)-1], attr, out)
	return fuse.OK
}

func fillAttr(a *fuse.Attr, q p9.QID, at p9.Attr) {
	*a = fuse.Attr{
		Ino:       q.Path,
		Size:      at.Size,
		Blocks:    at.Blocks,
		Atime:     at.ATimeSeconds,
		Atimensec: uint32(at.ATimeNanoSeconds),
		Mtime:     at.MTimeSeconds,
		Mtimensec: uint32(at.MTimeNanoSeconds),
		Ctime:     at.CTimeSeconds,
		Ctimensec: uint32(at.CTimeNanoSeconds),
		Mode:      uint32(at.Mode),
		Nlink:     uint32(at.NLink),
		Owner:     fuse.Owner{Uid: uint32(at.UID), Gid: uint32(at.GID)},
		Rdev:      uint32(at.RDev),
		Blksize:   uint32(at.BlockSize),
	}
}

// Lookup implements fuse.RawFileSystem.
func (fs *fuseFS) Lookup(_ <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	p := fs.node(h.NodeId)
	if p == nil {
		return fuse.Status(syscall.ESTALE)
	}
	return fs.lookup(p, name, out)
}

// Forget implements fuse.RawFileSystem.
func (fs *fuseFS) Forget(id, nlookup uint64) {
	fs.mu.Lock()
	n := fs.nodes[id]
	if n == nil || id == fuse.FUSE_ROOT_ID {
		fs.mu.Unlock()
		return
	}
	if n.lookups > nlookup {
		n.lookups -= nlookup
		fs.mu.Unlock()
		return
	}
	delete(fs.nodes, id)
	if n.parent != nil && !n.gone {
		if k := (childKey{n.parent.id, n.name}); fs.children[k] == n {
			delete(fs.children, k)
		}
	}
	users := n.users
	n.users = nil
	fs.mu.Unlock()
	n.rf.Close()
	for _, f := range users {
		f.Close()
	}
}

// fileFor is the fid an attribute call goes through: the open file's if
// the kernel names one (an unlinked file open here has no name), else
// the node's.
func (fs *fuseFS) fileFor(id uint64, fh uint64, useFH bool) *relayFile {
	if useFH {
		if h := fs.handle(fh); h != nil {
			return h.rf
		}
	}
	if n := fs.node(id); n != nil {
		return n.rf
	}
	return nil
}

// GetAttr implements fuse.RawFileSystem.
func (fs *fuseFS) GetAttr(_ <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	f := fs.fileFor(in.NodeId, in.Fh(), in.Flags()&fuse.FUSE_GETATTR_FH != 0)
	if f == nil {
		return fuse.Status(syscall.ESTALE)
	}
	q, _, attr, err := f.GetAttr(p9.AttrMaskAll)
	if err != nil {
		return status(err)
	}
	fillAttr(&out.Attr, q, attr)
	return fuse.OK
}

// SetAttr implements fuse.RawFileSystem.
func (fs *fuseFS) SetAttr(_ <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	fh, useFH := in.GetFh()
	f := fs.fileFor(in.NodeId, fh, useFH)
	if f == nil {
		return fuse.Status(syscall.ESTALE)
	}
	var (
		valid p9.SetAttrMask
		attr  p9.SetAttr
	)
	v := in.Valid
	if v&fuse.FATTR_MODE != 0 {
		valid.Permissions, attr.Permissions = true, p9.FileMode(in.Mode&07777)
	}
	if v&fuse.FATTR_UID != 0 {
		valid.UID, attr.UID = true, p9.UID(in.Owner.Uid)
	}
	if v&fuse.FATTR_GID != 0 {
		valid.GID, attr.GID = true, p9.GID(in.Owner.Gid)
	}
	if v&fuse.FATTR_SIZE != 0 {
		valid.Size, attr.Size = true, in.Size
	}
	// 9P2000.L: a time without "not system time" is the server's now.
	if v&(fuse.FATTR_ATIME|fuse.FATTR_ATIME_NOW) != 0 {
		valid.ATime = true
		if v&fuse.FATTR_ATIME_NOW == 0 {
			valid.ATimeNotSystemTime = true
			attr.ATimeSeconds, attr.ATimeNanoSeconds = in.Atime, uint64(in.Atimensec)
		}
	}
	if v&(fuse.FATTR_MTIME|fuse.FATTR_MTIME_NOW) != 0 {
		valid.MTime = true
		if v&fuse.FATTR_MTIME_NOW == 0 {
			valid.MTimeNotSystemTime = true
			attr.MTimeSeconds, attr.MTimeNanoSeconds = in.Mtime, uint64(in.Mtimensec)
		}
	}
	if v&fuse.FATTR_CTIME != 0 {
		valid.CTime = true
	}
	if !valid.Empty() {
		if err := f.SetAttr(valid, attr); err != nil {
			return status(err)
		}
	}
	q, _, a, err := f.GetAttr(p9.AttrMaskAll)
	if err != nil {
		return status(err)
	}
	fillAttr(&out.Attr, q, a)
	return fuse.OK
}

// Readlink implements fuse.RawFileSystem.
func (fs *fuseFS) Readlink(_ <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	n := fs.node(h.NodeId)
	if n == nil {
		return nil, fuse.Status(syscall.ESTALE)
	}
	s, err := n.rf.Readlink()
	if err != nil {
		return nil, status(err)
	}
	return []byte(s), fuse.OK
}

// made enters what a create call made as name in p.
func (fs *fuseFS) made(p *fnode, name string, err error, out *fuse.EntryOut) fuse.Status {
	if err != nil {
		return status(err)
	}
	return fs.lookup(p, name, out)
}

// Mknod implements fuse.RawFileSystem.
func (fs *fuseFS) Mknod(_ <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	p := fs.node(in.NodeId)
	if p == nil {
		return fuse.Status(syscall.ESTALE)
	}
	dev := uint64(in.Rdev)
	_, err := fs.as(p, in.Uid).Mknod(name, p9.FileMode(in.Mode), unix.Major(dev), unix.Minor(dev), p9.UID(in.Uid), p9.GID(in.Gid))
	return fs.made(p, name, err, out)
}

// Mkdir implements fuse.RawFileSystem.
func (fs *fuseFS) Mkdir(_ <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	p := fs.node(in.NodeId)
	if p == nil {
		return fuse.Status(syscall.ESTALE)
	}
	_, err := fs.as(p, in.Uid).Mkdir(name, p9.FileMode(in.Mode&07777), p9.UID(in.Uid), p9.GID(in.Gid))
	return fs.made(p, name, err, out)
}

// Symlink implements fuse.RawFileSystem.
func (fs *fuseFS) Symlink(_ <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	p := fs.node(h.NodeId)
	if p == nil {
		return fuse.Status(syscall.ESTALE)
	}
	_, err := fs.as(p, h.Uid).Symlink(target, name, p9.UID(h.Uid), p9.GID(h.Gid))
	return fs.made(p, name, err, out)
}

// Link implements fuse.RawFileSystem.
func (fs *fuseFS) Link(_ <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	p, old := fs.node(in.NodeId), fs.node(in.Oldnodeid)
	if p == nil || old == nil {
		return fuse.Status(syscall.ESTALE)
	}
	return fs.made(p, name, p.rf.Link(old.rf, name), out)
}

func (fs *fuseFS) unlink(h *fuse.InHeader, name string, flags uint32) fuse.Status {
	p := fs.node(h.NodeId)
	if p == nil {
		return fuse.Status(syscall.ESTALE)
	}
	if err := p.rf.UnlinkAt(name, flags); err != nil {
		return status(err)
	}
	fs.mu.Lock()
	fs.detach(p.id, name)
	fs.mu.Unlock()
	return fuse.OK
}

// Unlink implements fuse.RawFileSystem.
func (fs *fuseFS) Unlink(_ <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fs.unlink(h, name, 0)
}

// Rmdir implements fuse.RawFileSystem.
func (fs *fuseFS) Rmdir(_ <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fs.unlink(h, name, unix.AT_REMOVEDIR)
}

// Rename implements fuse.RawFileSystem. 9P2000.L's renameat has no
// flags: RENAME_NOREPLACE and RENAME_EXCHANGE are refused (EINVAL, as
// the 9P client does).
func (fs *fuseFS) Rename(_ <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if in.Flags != 0 {
		return fuse.EINVAL
	}
	p, np := fs.node(in.NodeId), fs.node(in.Newdir)
	if p == nil || np == nil {
		return fuse.Status(syscall.ESTALE)
	}
	if err := p.rf.RenameAt(oldName, np.rf, newName); err != nil {
		return status(err)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	moved := fs.children[childKey{p.id, oldName}]
	if moved != nil && (p.id != np.id || oldName != newName) {
		delete(fs.children, childKey{p.id, oldName})
	}
	if target := fs.children[childKey{np.id, newName}]; target != moved {
		fs.detach(np.id, newName)
	}
	if moved != nil {
		moved.parent, moved.name = np, newName
		fs.children[childKey{np.id, newName}] = moved
	}
	return fuse.OK
}

// open opens a fresh fid of n with the kernel's flags.
func (fs *fuseFS) open(n *fnode, flags uint32) (*relayFile, error) {
	_, rf, err := n.rf.Walk(nil)
	if err != nil {
		return nil, err
	}
	// The server opens with these; O_CREAT and O_EXCL the kernel has
	// dealt with, O_TRUNC comes as a setattr.
	of := p9.OpenFlags(flags & (unix.O_ACCMODE | unix.O_APPEND | unix.O_SYNC | unix.O_DSYNC | unix.O_NOATIME))
	if _, _, err := rf.Open(of); err != nil {
		rf.Close()
		return nil, err
	}
	return rf, nil
}

func (fs *fuseFS) addHandle(rf *relayFile) uint64 {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fh := fs.nextFH
	fs.nextFH++
	fs.handles[fh] = &fhandle{rf: rf}
	return fh
}

// Open implements fuse.RawFileSystem. The node's cached pages are kept
// (FOPEN_KEEP_CACHE): the kernel drops them when the attributes it asks
// for before a read show the file changed.
func (fs *fuseFS) Open(_ <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fs.openHandle(in.NodeId, in.Flags, fuse.FOPEN_KEEP_CACHE, out)
}

// openHandle opens node id with flags as a new file handle.
func (fs *fuseFS) openHandle(id uint64, flags, openFlags uint32, out *fuse.OpenOut) fuse.Status {
	n := fs.node(id)
	if n == nil {
		return fuse.Status(syscall.ESTALE)
	}
	rf, err := fs.open(n, flags)
	if err != nil {
		return status(err)
	}
	out.Fh, out.OpenFlags = fs.addHandle(rf), openFlags
	return fuse.OK
}

// Create implements fuse.RawFileSystem.
func (fs *fuseFS) Create(_ <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	p := fs.node(in.NodeId)
	if p == nil {
		return fuse.Status(syscall.ESTALE)
	}
	of := p9.OpenFlags(in.Flags & (unix.O_ACCMODE | unix.O_APPEND | unix.O_SYNC | unix.O_DSYNC | unix.O_EXCL))
	rf, _, _, err := fs.as(p, in.Uid).Create(name, of, p9.FileMode(in.Mode&07777), p9.UID(in.Uid), p9.GID(in.Gid))
	if err != nil {
		return status(err)
	}
	if st := fs.lookup(p, name, &out.EntryOut); !st.Ok() {
		rf.Close()
		return st
	}
	if n := fs.node(out.NodeId); n != nil {
		rf.setPlace(fs.place(n))
	}
	out.Fh, out.OpenFlags = fs.addHandle(rf), fuse.FOPEN_KEEP_CACHE
	return fuse.OK
}

// Read implements fuse.RawFileSystem.
func (fs *fuseFS) Read(_ <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h := fs.handle(in.Fh)
	if h == nil {
		return nil, fuse.EBADF
	}
	if int(in.Size) < len(buf) {
		buf = buf[:in.Size]
	}
	n, err := h.rf.ReadAt(buf, int64(in.Offset))
	if err != nil {
		return nil, status(err)
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

// Write implements fuse.RawFileSystem.
func (fs *fuseFS) Write(_ <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	h := fs.handle(in.Fh)
	if h == nil {
		return 0, fuse.EBADF
	}
	n, err := h.rf.WriteAt(data, int64(in.Offset))
	if n > 0 {
		h.mu.Lock()
		h.written = true
		h.mu.Unlock()
	}
	return uint32(n), status(err)
}

// Flush implements fuse.RawFileSystem: a close(2). What was written
// through the descriptor is on the server's disk when close returns, as
// NFS commits on close (and the 9P server syncs on clunk): a failover
// loses nothing closed.
func (fs *fuseFS) Flush(_ <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	h := fs.handle(in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	h.mu.Lock()
	written := h.written
	h.written = false
	h.mu.Unlock()
	if !written {
		return fuse.OK
	}
	return status(h.rf.FSync())
}

// Fsync implements fuse.RawFileSystem.
func (fs *fuseFS) Fsync(_ <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	h := fs.handle(in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	return status(h.rf.FSync())
}

func (fs *fuseFS) release(fh uint64) {
	fs.mu.Lock()
	h := fs.handles[fh]
	delete(fs.handles, fh)
	fs.mu.Unlock()
	if h != nil {
		h.rf.Close()
	}
}

// Release implements fuse.RawFileSystem.
func (fs *fuseFS) Release(_ <-chan struct{}, in *fuse.ReleaseIn) { fs.release(in.Fh) }

// OpenDir implements fuse.RawFileSystem.
func (fs *fuseFS) OpenDir(_ <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fs.openHandle(in.NodeId, unix.O_RDONLY, 0, out)
}

// ReadDir implements fuse.RawFileSystem.
func (fs *fuseFS) ReadDir(_ <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	h := fs.handle(in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	ents, err := h.rf.Readdir(in.Offset, in.Size)
	if err != nil {
		return status(err)
	}
	for _, e := range ents {
		if !out.AddDirEntry(fuse.DirEntry{Name: e.Name, Ino: e.QID.Path, Mode: uint32(e.Type) << 12, Off: e.Offset}) {
			break
		}
	}
	return fuse.OK
}

// ReleaseDir implements fuse.RawFileSystem.
func (fs *fuseFS) ReleaseDir(in *fuse.ReleaseIn) { fs.release(in.Fh) }

// FsyncDir implements fuse.RawFileSystem.
func (fs *fuseFS) FsyncDir(_ <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	h := fs.handle(in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	return status(h.rf.FSync())
}

// StatFs implements fuse.RawFileSystem.
func (fs *fuseFS) StatFs(_ <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	st, err := fs.node(fuse.FUSE_ROOT_ID).rf.StatFS()
	if err != nil {
		return status(err)
	}
	*out = fuse.StatfsOut{
		Blocks: st.Blocks, Bfree: st.BlocksFree, Bavail: st.BlocksAvailable,
		Files: st.Files, Ffree: st.FilesFree,
		Bsize: st.BlockSize, Frsize: st.BlockSize, NameLen: st.NameLength,
	}
	return fuse.OK
}

// GetXAttr implements fuse.RawFileSystem.
func (fs *fuseFS) GetXAttr(_ <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	n := fs.node(h.NodeId)
	if n == nil {
		return 0, fuse.Status(syscall.ESTALE)
	}
	b, err := n.rf.GetXattr(attr)
	if err != nil {
		return 0, status(err)
	}
	return xattrReply(dest, b)
}

// xattrReply answers getxattr and listxattr with b: its size alone for
// an empty dest (the caller asks how much to allocate), else b copied.
func xattrReply(dest, b []byte) (uint32, fuse.Status) {
	if len(dest) == 0 {
		return uint32(len(b)), fuse.OK
	}
	if len(dest) < len(b) {
		return uint32(len(b)), fuse.ERANGE
	}
	return uint32(copy(dest, b)), fuse.OK
}

// ListXAttr implements fuse.RawFileSystem.
func (fs *fuseFS) ListXAttr(_ <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	n := fs.node(h.NodeId)
	if n == nil {
		return 0, fuse.Status(syscall.ESTALE)
	}
	names, err := n.rf.ListXattrs()
	if err != nil {
		return 0, status(err)
	}
	var b []byte
	for _, s := range names {
		b = append(append(b, s...), 0)
	}
	return xattrReply(dest, b)
}

// SetXAttr implements fuse.RawFileSystem.
func (fs *fuseFS) SetXAttr(_ <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	n := fs.node(in.NodeId)
	if n == nil {
		return fuse.Status(syscall.ESTALE)
	}
	return status(n.rf.SetXattr(attr, data, p9.XattrFlags(in.Flags)))
}

// RemoveXAttr implements fuse.RawFileSystem.
func (fs *fuseFS) RemoveXAttr(_ <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	n := fs.node(h.NodeId)
	if n == nil {
		return fuse.Status(syscall.ESTALE)
	}
	return status(n.rf.RemoveXattr(attr))
}

// lockOf turns a FUSE lock into 9P's type, start and length (0: to the
// end of the file).
func lockOf(lk fuse.FileLock) (p9.LockType, uint64, uint64, bool) {
	var t p9.LockType
	switch lk.Typ {
	case syscall.F_RDLCK:
		t = p9.ReadLock
	case syscall.F_WRLCK:
		t = p9.WriteLock
	case syscall.F_UNLCK:
		t = p9.Unlock
	default:
		return 0, 0, 0, false
	}
	length := uint64(0)
	if lk.End != uint64(1<<63-1) && lk.End >= lk.Start {
		length = lk.End - lk.Start + 1
	}
	return t, lk.Start, length, true
}

// lockOwner names the kernel's lock owner of in as 9P's lock client.
func lockOwner(in *fuse.LkIn) string { return fmt.Sprintf("fuse-%x", in.Owner) }

func (fs *fuseFS) setLock(cancel <-chan struct{}, in *fuse.LkIn, wait bool) fuse.Status {
	h := fs.handle(in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	t, start, length, ok := lockOf(in.Lk)
	if !ok {
		return fuse.EINVAL
	}
	if in.LkFlags&fuse.LK_FLOCK != 0 {
		start, length = 0, 0 // flock(2): the whole file
	}
	client := lockOwner(in)
	// The server never sleeps holding a request: a lock that must wait
	// is asked for again, as the 9P client does.
	delay := 10 * time.Millisecond
	for {
		st, err := h.rf.Lock(int(in.Lk.Pid), t, 0, start, length, client)
		if err != nil {
			return status(err)
		}
		switch st {
		case p9.LockStatusOK:
			return fuse.OK
		case p9.LockStatusBlocked:
			if !wait {
				return fuse.EAGAIN
			}
		default:
			return fuse.Status(syscall.ENOLCK)
		}
		select {
		case <-cancel:
			return fuse.EINTR
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// GetLk implements fuse.RawFileSystem (F_GETLK).
func (fs *fuseFS) GetLk(_ <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	h := fs.handle(in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	t, start, length, ok := lockOf(in.Lk)
	if !ok || t == p9.Unlock {
		return fuse.EINVAL
	}
	l, err := h.rf.GetLock(p9.Lock{Type: t, Start: start, Length: length, PID: int32(in.Lk.Pid), Client: lockOwner(in)})
	if err != nil {
		return status(err)
	}
	out.Lk = fuse.FileLock{Typ: syscall.F_UNLCK, Start: in.Lk.Start, End: in.Lk.End}
	if l.Type == p9.Unlock {
		return fuse.OK
	}
	out.Lk = fuse.FileLock{Typ: syscall.F_RDLCK, Start: l.Start, End: 1<<63 - 1}
	if l.Type == p9.WriteLock {
		out.Lk.Typ = syscall.F_WRLCK
	}
	if l.Length != 0 {
		out.Lk.End = l.Start + l.Length - 1
	}
	return fuse.OK
}

// SetLk implements fuse.RawFileSystem.
func (fs *fuseFS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	return fs.setLock(cancel, in, false)
}

// SetLkw implements fuse.RawFileSystem.
func (fs *fuseFS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	return fs.setLock(cancel, in, true)
}
