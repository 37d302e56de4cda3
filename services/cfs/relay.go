package cfs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// Relay stands between a node's kernel and the CFS server, so that the
// shared root survives the server's failover: the kernel mounts the
// shared root over FUSE and the relay serves that mount (fuse.go) from
// files of its own, each forwarding to the current CFS server over one
// upstream 9P2000.L connection.
//
// Each relayFile knows its name (its place in the FUSE front's tree) and
// whether and how it was opened. When the upstream connection breaks
// (the server's node went Down, or a reply did not come in time), calls
// wait while the relay dials the service address again; the first call
// on each file after that walks the file's path from the new server's
// root, checks that it found the same inode (QID: inode and generation;
// another file now under the name answers ESTALE), opens it again, takes
// its POSIX locks again (EIO if another node took a conflicting one
// meanwhile), and the call is retried. The kernel sees a pause, not an
// error.
//
// What cannot come back: a file unlinked while open (its name is gone;
// it answers ESTALE after a failover). A write that was in flight when
// the server died is sent again: at the same offset that changes
// nothing, but on a file opened O_APPEND (appended where the server's
// end is) it may land twice if the first one reached the disk.
type Relay struct {
	dial func(ctx context.Context) (net.Conn, error)
	log  *slog.Logger
	// patience is how long a call waits for the server to come back
	// before it fails with EIO; 0 waits as long as it takes (a hard
	// mount).
	patience time.Duration

	mu     sync.Mutex
	gen    uint64 // counts upstream connections made
	client *p9.Client
	conn   net.Conn
	// roots are the upstream attaches on the current connection, one
	// for each user files were created as: the server creates files as
	// the user whose attach they are made under.
	roots map[p9.UID]p9.File
	// ready is closed when a new upstream is there (or dialing gave up).
	ready   chan struct{}
	dialing bool
	closed  bool

	// names guards every relayFile's parent, name and place.
	names sync.RWMutex
}

// NewRelay returns a relay that reaches the CFS server through dial
// (which dials the service address).
func NewRelay(dial func(ctx context.Context) (net.Conn, error), log *slog.Logger) *Relay {
	if log == nil {
		log = slog.Default()
	}
	return &Relay{dial: dial, log: log}
}

// SetPatience sets how long a call waits for the server to come back;
// 0 (the default) is as long as it takes, as NFS's hard mounts: a
// process whose root is the shared root dies of EIO, so giving up is
// for those who asked for it.
func (r *Relay) SetPatience(d time.Duration) { r.patience = d }

// Close ends the relay: calls fail with EIO from then on.
func (r *Relay) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.conn != nil {
		r.conn.Close()
	}
}

// Reconnect drops the upstream connection (the server's node went Down,
// or the service moved): calls in flight fail over to the next one.
func (r *Relay) Reconnect(why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil {
		r.log.Info("cfs relay: dropping the server connection", "why", why)
		r.conn.Close()
	}
}

// Generation is the number of upstream connections made so far.
func (r *Relay) Generation() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gen
}

// upstream returns uid's root on the current connection and its
// generation, dialing the server (again) if there is none and attaching
// as uid if it has not yet.
func (r *Relay) upstream(uid p9.UID) (p9.File, uint64, error) {
	var deadline time.Time // none
	if r.patience > 0 {
		deadline = time.Now().Add(r.patience)
	}
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return nil, 0, linux.EIO
		}
		if r.client != nil {
			root, gen, client := r.roots[uid], r.gen, r.client
			r.mu.Unlock()
			if root != nil {
				return root, gen, nil
			}
			root, err := client.AttachAs("", uid)
			if isTransport(err) {
				r.broken(gen, err)
				continue
			}
			if err != nil {
				return nil, 0, err
			}
			r.mu.Lock()
			if r.gen != gen || r.client == nil {
				r.mu.Unlock()
				continue // the connection went meanwhile
			}
			if have := r.roots[uid]; have != nil {
				root.Close() // another call attached first
				root = have
			} else {
				r.roots[uid] = root
			}
			r.mu.Unlock()
			return root, gen, nil
		}
		if !r.dialing {
			r.dialing = true
			r.ready = make(chan struct{})
			go r.connect(deadline)
		}
		ready := r.ready
		r.mu.Unlock()
		<-ready
		r.mu.Lock()
		ok := r.client != nil
		r.mu.Unlock()
		if !ok {
			return nil, 0, linux.EIO
		}
	}
}

// connect dials until a server answers or the deadline (if any) passes,
// saying every so often that it still waits.
func (r *Relay) connect(deadline time.Time) {
	start := time.Now()
	say := start.Add(3 * time.Second)
	var lastErr error
	for attempt := 1; ; attempt++ {
		r.mu.Lock()
		closed := r.closed
		r.mu.Unlock()
		if closed || (!deadline.IsZero() && time.Now().After(deadline)) {
			r.log.Error("cfs relay: no CFS server; calls on the shared root fail with EIO", "tried", attempt-1, "for", time.Since(start).Round(time.Millisecond), "err", lastErr)
			break
		}
		if time.Now().After(say) {
			limit := "as long as it takes (root.cfs.patience: hard)"
			if !deadline.IsZero() {
				limit = "until " + deadline.Format(time.TimeOnly)
			}
			r.log.Warn("cfs relay: the shared root's server does not answer; processes using / wait "+limit, "waiting", time.Since(start).Round(time.Second), "attempts", attempt-1, "err", lastErr)
			say = time.Now().Add(10 * time.Second)
		}
		// Short attempts: right after a takeover the first SYN may go
		// to the dead server's MAC (until the standby's gratuitous ARP),
		// and TCP would resend it only after a second.
		ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
		c, err := r.dial(ctx)
		cancel()
		if err == nil {
			var client *p9.Client
			var root p9.File
			if client, err = p9.NewClient(c, p9.WithMessageSize(relayMsize)); err == nil {
				// Root's attach proves the server serves us.
				if root, err = client.AttachAs("", 0); err != nil {
					client.Close()
				}
			} else {
				c.Close()
			}
			if err == nil {
				r.mu.Lock()
				r.gen++
				r.client, r.conn, r.roots = client, c, map[p9.UID]p9.File{0: root}
				gen := r.gen
				r.mu.Unlock()
				r.log.Info("cfs relay: connected to the CFS server", "addr", c.RemoteAddr().String(), "generation", gen, "after", time.Since(start).Round(time.Millisecond), "attempts", attempt)
				break
			}
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	r.mu.Lock()
	r.dialing = false
	close(r.ready)
	r.mu.Unlock()
}

// relayMsize is the upstream connection's message size.
const relayMsize = 256 << 10

// broken ends upstream connection gen after a transport error on it.
func (r *Relay) broken(gen uint64, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen != gen || r.client == nil {
		return
	}
	r.log.Warn("cfs relay: lost the CFS server; reconnecting", "generation", gen, "err", err)
	r.client.Close()
	r.client, r.conn, r.roots = nil, nil, nil
}

// isTransport reports whether err came from the connection rather than
// from the server (which answers with an errno).
func isTransport(err error) bool {
	// A short read's io.EOF is the client's own (unwrapped); so are
	// running out of tags or fids.
	if err == nil || err == io.EOF || errors.Is(err, p9.ErrOutOfTags) || errors.Is(err, p9.ErrOutOfFIDs) {
		return false
	}
	var errno linux.Errno
	return !errors.As(err, &errno)
}

func (r *Relay) newFile(parent *relayFile, name string, uid p9.UID) *relayFile {
	return &relayFile{r: r, parent: parent, name: name, uid: uid}
}

// setPlace makes place name f (see relayFile.place).
func (f *relayFile) setPlace(place func() ([]string, bool)) {
	f.r.names.Lock()
	f.parent, f.name, f.place = nil, "", place
	f.r.names.Unlock()
}

// placed returns a file of uid's named by place, walked there on first
// use; if known, the walk must find the file qid names.
func (r *Relay) placed(uid p9.UID, place func() ([]string, bool), qid p9.QID, known bool) *relayFile {
	f := r.newFile(nil, "", uid)
	f.setPlace(place)
	f.qid, f.known = qid, known
	return f
}

// relayFile is a file of the FUSE front's: a node, or an open file.
type relayFile struct {
	r *Relay

	// parent and name (guarded by r.names) place the file; the root has
	// no parent.
	parent *relayFile
	name   string
	// place, if set, names the file instead of parent and name: the FUSE
	// front (fuse.go) keeps the tree itself. It answers false once the
	// file has no name (unlinked, or replaced by a rename onto it).
	place func() ([]string, bool)
	uid   p9.UID // the user whose attach f was walked from

	mu     sync.Mutex
	gen    uint64  // the upstream connection f belongs to
	f      p9.File // the upstream fid, nil when not yet walked
	opened bool
	flags  p9.OpenFlags
	gone   bool // unlinked or replaced: it cannot be found again by name
	// qid is the file's identity as the server first named it (inode and
	// generation); known is false for the root, which is always itself.
	qid   p9.QID
	known bool
	// locks are the POSIX lock calls granted through f, in order: played
	// again on a new server they give the same locks. lost is set when
	// that failed (another node took a conflicting lock meanwhile) or
	// there were too many to keep: f then answers EIO, as NFS does for
	// a lock it could not reclaim.
	locks []lockCall
	lost  bool
	// unsynced are the writes made through f since its last sync, which
	// the server acknowledged from its page cache: a server that dies
	// before writing them back loses them, so they are sent again to the
	// next one, as an NFS client sends its unstable writes again when
	// the server's write verifier changes. For a file opened O_APPEND
	// the offset is where the kernel expected the write to land, and
	// only those at or beyond the new server's end of file are sent
	// again (see rewrite).
	unsynced     []unsyncedWrite
	unsyncedSize int
	synced       uint64 // writes recorded so far, for FSync to forget those it covered
}

// unsyncedWrite is one acknowledged, not yet synced write.
type unsyncedWrite struct {
	seq  uint64
	off  int64
	data []byte
}

// maxUnsynced bounds the data one file keeps unsynced: a write beyond it
// syncs the file first, as the kernel's dirty limits make a local
// filesystem write back.
const maxUnsynced = 8 << 20

// lockCall is one granted Tlock.
type lockCall struct {
	typ           p9.LockType
	start, length uint64
	pid           int
	client        string
}

// maxLockCalls bounds the lock calls kept for one fid; a whole-file
// unlock forgets them all.
const maxLockCalls = 4096

// path is the file's names from the root; false if it has none.
func (f *relayFile) path() ([]string, bool) {
	f.r.names.RLock()
	var names []string
	p := f
	for ; p.parent != nil; p = p.parent {
		names = append([]string{p.name}, names...)
	}
	place := p.place
	f.r.names.RUnlock()
	if place == nil {
		return names, true
	}
	// Called without r.names held: place takes the front's own lock.
	base, ok := place()
	return append(base, names...), ok
}

// pathString is the file's path for log lines.
func (f *relayFile) pathString() string {
	names, ok := f.path()
	if !ok {
		return "(unlinked)"
	}
	return "/" + joinPath(names)
}

// current returns f's upstream fid on the current connection, walking
// and opening it there first if it was made on an earlier one.
func (f *relayFile) current() (p9.File, error) {
	for {
		root, gen, err := f.r.upstream(f.uid)
		if err != nil {
			return nil, err
		}
		f.mu.Lock()
		if f.f != nil && f.gen == gen {
			uf := f.f
			f.mu.Unlock()
			return uf, nil
		}
		if f.gone {
			f.mu.Unlock()
			return nil, linux.ESTALE
		}
		if f.lost {
			f.mu.Unlock()
			return nil, linux.EIO
		}
		names, ok := f.path()
		if !ok {
			f.gone = true
			f.mu.Unlock()
			return nil, linux.ESTALE
		}
		qids, uf, err := root.Walk(names)
		if err == nil && f.known && len(qids) > 0 {
			if q := qids[len(qids)-1]; q.Path != f.qid.Path || q.Version != f.qid.Version || q.Type != f.qid.Type {
				// Another node renamed or created a different file onto
				// the name meanwhile (an editor's atomic save): this fid
				// must not go on in that one.
				uf.Close()
				f.gone = true
				f.mu.Unlock()
				f.r.log.Warn("cfs relay: a file open here was replaced on the server during the failover; its descriptors answer ESTALE", "path", f.pathString(), "inode", f.qid.Path, "now", q.Path)
				return nil, linux.ESTALE
			}
		}
		if err == nil && f.opened {
			// Never truncate again what was written since.
			if _, _, err = uf.Open(f.flags &^ p9.OpenFlags(unix.O_TRUNC)); err != nil {
				uf.Close()
			}
		}
		if err == nil && len(f.locks) > 0 {
			if err = f.relock(uf); err != nil {
				uf.Close()
			}
		}
		if err == nil && len(f.unsynced) > 0 && f.gen != 0 {
			if err = f.rewrite(uf); err != nil && !isTransport(err) {
				uf.Close()
				f.lost = true
				f.r.log.Error("cfs relay: writes the old server acknowledged could not be made again on the new one; the file answers EIO", "path", f.pathString(), "err", err)
				err = linux.EIO
			} else if err != nil {
				uf.Close()
			}
		}
		if err == linux.EIO {
			f.mu.Unlock()
			return nil, err
		}
		if isTransport(err) {
			f.mu.Unlock()
			f.r.broken(gen, err)
			continue
		}
		if err != nil {
			f.mu.Unlock()
			f.r.log.Warn("cfs relay: a file could not be found again on the new server", "path", f.pathString(), "err", err)
			return nil, linux.ESTALE
		}
		if f.gen != 0 {
			f.r.log.Debug("cfs relay: reopened", "path", f.pathString(), "generation", gen)
		}
		f.f, f.gen = uf, gen
		f.mu.Unlock()
		return uf, nil
	}
}

// rewrite sends f's unsynced writes again, in order, to a new server's
// fid uf (f.mu held).
//
// An append lands where the server's end of file is, at or beyond the
// offset the kernel expected (another node may have appended since it
// last looked). The new server's file is what the old one had on disk:
// an append expected at or beyond its end is not in it, and is sent
// again. One expected before its end was written back, or was not and
// reads as NULs (ext4 orders a file's new size before the data of a
// block it already had), or is another node's append: it is read back,
// and written again at its place only if that reads as NULs. So an
// append is never made twice, never written over another node's, and a
// file only this node appends to (a log) comes back whole.
func (f *relayFile) rewrite(uf p9.File) error {
	var (
		end uint64
		at  p9.File // a fid of the file without O_APPEND, to read and repair
	)
	if f.flags&p9.OpenFlags(unix.O_APPEND) != 0 {
		_, _, a, err := uf.GetAttr(p9.AttrMask{Size: true})
		if err != nil {
			return err
		}
		end = a.Size
		defer func() {
			if at != nil {
				at.Close()
			}
		}()
	}
	sent, repaired, bytes := 0, 0, 0
	for _, w := range f.unsynced {
		if uint64(w.off) >= end {
			if _, err := uf.WriteAt(w.data, w.off); err != nil {
				return err
			}
			sent, bytes = sent+1, bytes+len(w.data)
			continue
		}
		if at == nil {
			_, c, err := uf.Walk(nil)
			if err != nil {
				return err
			}
			if _, _, err := c.Open(p9.ReadWrite); err != nil {
				c.Close()
				return err
			}
			at = c
		}
		have := make([]byte, min(uint64(len(w.data)), end-uint64(w.off)))
		n, err := at.ReadAt(have, w.off)
		if err != nil && err != io.EOF {
			return err
		}
		if !allZero(have[:n]) {
			continue // written back, or another node's
		}
		if _, err := at.WriteAt(w.data, w.off); err != nil {
			return err
		}
		repaired, bytes = repaired+1, bytes+len(w.data)
	}
	f.r.log.Info("cfs relay: writes the old server had not synced made again", "path", f.pathString(), "sent", sent, "repaired", repaired, "bytes", bytes, "kept", len(f.unsynced))
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// relock takes f's POSIX locks again on a new server's fid uf (f.mu held).
func (f *relayFile) relock(uf p9.File) error {
	for _, l := range f.locks {
		st, err := uf.Lock(l.pid, l.typ, 0, l.start, l.length, l.client)
		if isTransport(err) {
			return err
		}
		if err != nil || st != p9.LockStatusOK {
			f.lost = true
			f.r.log.Error("cfs relay: a POSIX lock held through a file could not be taken again on the new server; the file answers EIO", "path", f.pathString(), "start", l.start, "length", l.length, "status", st, "err", err)
			return linux.EIO
		}
	}
	return nil
}

func joinPath(names []string) string {
	s := ""
	for i, n := range names {
		if i > 0 {
			s += "/"
		}
		s += n
	}
	return s
}

// do runs op on f's upstream fid, again on the next connection if this
// one breaks under it.
func (f *relayFile) do(op func(uf p9.File) error) error {
	for {
		uf, err := f.current()
		if err != nil {
			return err
		}
		f.mu.Lock()
		gen := f.gen
		f.mu.Unlock()
		err = op(uf)
		if !isTransport(err) {
			return err
		}
		f.r.broken(gen, err)
	}
}

// do2 is do for operations on two files (link, rename): both upstream
// fids must belong to one connection.
func (f *relayFile) do2(o *relayFile, op func(uf, uo p9.File) error) error {
	for {
		uf, err := f.current()
		if err != nil {
			return err
		}
		uo, err := o.current()
		if err != nil {
			return err
		}
		f.mu.Lock()
		gen := f.gen
		f.mu.Unlock()
		o.mu.Lock()
		same := o.gen == gen
		o.mu.Unlock()
		if !same {
			continue // a failover between the two lookups
		}
		err = op(uf, uo)
		if !isTransport(err) {
			return err
		}
		f.r.broken(gen, err)
	}
}

// child makes the relayFile for upstream fid uf, walked from f; qids
// are what the walk answered (none for a clone, which is f's file).
func (f *relayFile) child(name string, uf p9.File, gen uint64, qids []p9.QID) *relayFile {
	f.r.names.RLock()
	parent, own, place := f, name, (func() ([]string, bool))(nil)
	if name == "" { // a clone: same place as f
		parent, own, place = f.parent, f.name, f.place
	}
	f.r.names.RUnlock()
	c := f.r.newFile(parent, own, f.uid)
	if place != nil {
		c.setPlace(place)
	}
	c.f, c.gen = uf, gen
	if len(qids) > 0 {
		c.qid, c.known = qids[len(qids)-1], true
	} else {
		f.mu.Lock()
		c.qid, c.known = f.qid, f.known
		f.mu.Unlock()
	}
	return c
}

// Walk walks to one name (none: a clone of f).
func (f *relayFile) Walk(names []string) ([]p9.QID, *relayFile, error) {
	if len(names) > 1 {
		return nil, nil, linux.EINVAL
	}
	var qids []p9.QID
	var child *relayFile
	err := f.do(func(uf p9.File) error {
		q, nf, err := uf.Walk(names)
		if err != nil {
			return err
		}
		qids, child = q, f.child(first(names), nf, f.genOf(), q)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return qids, child, nil
}

func first(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

func (f *relayFile) genOf() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gen
}

// WalkGetAttr walks to one name and returns its attributes.
func (f *relayFile) WalkGetAttr(names []string) ([]p9.QID, *relayFile, p9.AttrMask, p9.Attr, error) {
	if len(names) > 1 {
		return nil, nil, p9.AttrMask{}, p9.Attr{}, linux.EINVAL
	}
	var (
		qids  []p9.QID
		child *relayFile
		mask  p9.AttrMask
		attr  p9.Attr
	)
	err := f.do(func(uf p9.File) error {
		q, nf, m, a, err := uf.WalkGetAttr(names)
		if err != nil {
			return err
		}
		qids, child, mask, attr = q, f.child(first(names), nf, f.genOf(), q), m, a
		return nil
	})
	if err != nil {
		return nil, nil, p9.AttrMask{}, p9.Attr{}, err
	}
	return qids, child, mask, attr, nil
}

// StatFS forwards StatFS to the server.
func (f *relayFile) StatFS() (st p9.FSStat, err error) {
	err = f.do(func(uf p9.File) (err error) { st, err = uf.StatFS(); return })
	return
}

// GetAttr forwards GetAttr to the server.
func (f *relayFile) GetAttr(req p9.AttrMask) (q p9.QID, m p9.AttrMask, a p9.Attr, err error) {
	err = f.do(func(uf p9.File) (err error) { q, m, a, err = uf.GetAttr(req); return })
	return
}

// SetAttr forwards SetAttr to the server.
func (f *relayFile) SetAttr(valid p9.SetAttrMask, attr p9.SetAttr) error {
	return f.do(func(uf p9.File) error { return uf.SetAttr(valid, attr) })
}

// Close forwards Close to the server: the upstream fid is clunked if its
// connection is still the current one.
func (f *relayFile) Close() error {
	f.mu.Lock()
	uf, gen := f.f, f.gen
	f.f = nil
	f.mu.Unlock()
	if uf == nil {
		return nil
	}
	f.r.mu.Lock()
	live := f.r.client != nil && f.r.gen == gen
	f.r.mu.Unlock()
	if live {
		if err := uf.Close(); isTransport(err) {
			f.r.broken(gen, err)
		}
	}
	return nil
}

// Open forwards Open to the server.
func (f *relayFile) Open(flags p9.OpenFlags) (q p9.QID, iounit uint32, err error) {
	err = f.do(func(uf p9.File) (err error) { q, iounit, err = uf.Open(flags); return })
	if err == nil {
		f.mu.Lock()
		f.opened, f.flags = true, flags
		f.mu.Unlock()
	}
	return
}

// ReadAt forwards ReadAt to the server.
func (f *relayFile) ReadAt(p []byte, offset int64) (n int, err error) {
	err = f.do(func(uf p9.File) (err error) { n, err = uf.ReadAt(p, offset); return })
	if err == io.EOF {
		// End of file is a short read to the kernel, not an error.
		err = nil
	}
	return
}

// WriteAt forwards WriteAt to the server.
func (f *relayFile) WriteAt(p []byte, offset int64) (n int, err error) {
	err = f.do(func(uf p9.File) (err error) { n, err = uf.WriteAt(p, offset); return })
	if n <= 0 {
		return
	}
	f.mu.Lock()
	if f.flags&p9.OpenFlags(unix.O_SYNC|unix.O_DSYNC) != 0 {
		f.mu.Unlock()
		return
	}
	f.synced++
	f.unsynced = append(f.unsynced, unsyncedWrite{seq: f.synced, off: offset, data: append([]byte(nil), p[:n]...)})
	f.unsyncedSize += n
	full := f.unsyncedSize > maxUnsynced
	f.mu.Unlock()
	if full {
		if serr := f.FSync(); serr != nil {
			f.r.log.Warn("cfs relay: sync of a file with much unsynced data failed", "path", f.pathString(), "err", serr)
		}
	}
	return
}

// SetXattr forwards SetXattr to the server.
func (f *relayFile) SetXattr(attr string, data []byte, flags p9.XattrFlags) error {
	return f.do(func(uf p9.File) error { return uf.SetXattr(attr, data, flags) })
}

// GetXattr forwards GetXattr to the server.
func (f *relayFile) GetXattr(attr string) (b []byte, err error) {
	err = f.do(func(uf p9.File) (err error) { b, err = uf.GetXattr(attr); return })
	return
}

// ListXattrs forwards ListXattrs to the server.
func (f *relayFile) ListXattrs() (names []string, err error) {
	err = f.do(func(uf p9.File) (err error) { names, err = uf.ListXattrs(); return })
	return
}

// RemoveXattr forwards RemoveXattr to the server.
func (f *relayFile) RemoveXattr(attr string) error {
	return f.do(func(uf p9.File) error { return uf.RemoveXattr(attr) })
}

// FSync forwards FSync to the server.
func (f *relayFile) FSync() error {
	f.mu.Lock()
	upto := f.synced
	f.mu.Unlock()
	if err := f.do(func(uf p9.File) error { return uf.FSync() }); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Writes made while the sync ran may not be covered: keep those.
	i := 0
	for i < len(f.unsynced) && f.unsynced[i].seq <= upto {
		f.unsyncedSize -= len(f.unsynced[i].data)
		i++
	}
	f.unsynced = append(f.unsynced[:0:0], f.unsynced[i:]...)
	return nil
}

// Lock forwards Lock to the server. What the server grants is kept, to be
// taken again after a failover.
func (f *relayFile) Lock(pid int, t p9.LockType, flags p9.LockFlags, start, length uint64, client string) (st p9.LockStatus, err error) {
	err = f.do(func(uf p9.File) (err error) { st, err = uf.Lock(pid, t, flags, start, length, client); return })
	if err != nil || st != p9.LockStatusOK {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case t == p9.Unlock && start == 0 && length == 0:
		f.locks = nil // nothing is held through f any more
	case len(f.locks) >= maxLockCalls:
		f.lost = true
		f.r.log.Error("cfs relay: too many POSIX lock calls on one file to take them again after a failover; it will answer EIO after one", "path", f.pathString())
	default:
		f.locks = append(f.locks, lockCall{typ: t, start: start, length: length, pid: pid, client: client})
	}
	return
}

// GetLock implements p9.LockGetter.
func (f *relayFile) GetLock(l p9.Lock) (out p9.Lock, err error) {
	err = f.do(func(uf p9.File) error {
		lg, ok := uf.(p9.LockGetter)
		if !ok {
			return linux.ENOSYS
		}
		out, err = lg.GetLock(l)
		return err
	})
	return
}

// Create forwards Create to the server.
func (f *relayFile) Create(name string, flags p9.OpenFlags, perm p9.FileMode, uid p9.UID, gid p9.GID) (*relayFile, p9.QID, uint32, error) {
	var (
		child  *relayFile
		q      p9.QID
		iounit uint32
	)
	err := f.do(func(uf p9.File) error {
		// The client's Create turns its fid into the new file's: walk a
		// fresh one first so f stays the directory.
		_, dir, err := uf.Walk(nil)
		if err != nil {
			return err
		}
		nf, qid, io, err := dir.Create(name, flags, perm, uid, gid)
		if err != nil {
			dir.Close()
			return err
		}
		child, q, iounit = f.child(name, nf, f.genOf(), []p9.QID{qid}), qid, io
		child.opened, child.flags = true, flags
		return nil
	})
	if err != nil {
		return nil, p9.QID{}, 0, err
	}
	return child, q, iounit, nil
}

// Mkdir forwards Mkdir to the server.
func (f *relayFile) Mkdir(name string, perm p9.FileMode, uid p9.UID, gid p9.GID) (q p9.QID, err error) {
	err = f.do(func(uf p9.File) (err error) { q, err = uf.Mkdir(name, perm, uid, gid); return })
	return
}

// Symlink forwards Symlink to the server.
func (f *relayFile) Symlink(oldName, newName string, uid p9.UID, gid p9.GID) (q p9.QID, err error) {
	err = f.do(func(uf p9.File) (err error) { q, err = uf.Symlink(oldName, newName, uid, gid); return })
	return
}

// Link forwards Link to the server.
func (f *relayFile) Link(target *relayFile, newName string) error {
	return f.do2(target, func(uf, ut p9.File) error { return uf.Link(ut, newName) })
}

// Mknod forwards Mknod to the server.
func (f *relayFile) Mknod(name string, mode p9.FileMode, major, minor uint32, uid p9.UID, gid p9.GID) (q p9.QID, err error) {
	err = f.do(func(uf p9.File) (err error) { q, err = uf.Mknod(name, mode, major, minor, uid, gid); return })
	return
}

// RenameAt forwards RenameAt to the server.
func (f *relayFile) RenameAt(oldName string, newDir *relayFile, newName string) error {
	return f.do2(newDir, func(uf, ud p9.File) error { return uf.RenameAt(oldName, ud, newName) })
}

// UnlinkAt forwards UnlinkAt to the server.
func (f *relayFile) UnlinkAt(name string, flags uint32) error {
	return f.do(func(uf p9.File) error { return uf.UnlinkAt(name, flags) })
}

// Readdir forwards Readdir to the server.
func (f *relayFile) Readdir(offset uint64, count uint32) (d p9.Dirents, err error) {
	err = f.do(func(uf p9.File) (err error) { d, err = uf.Readdir(offset, count); return })
	return
}

// Readlink forwards Readlink to the server.
func (f *relayFile) Readlink() (s string, err error) {
	err = f.do(func(uf p9.File) (err error) { s, err = uf.Readlink(); return })
	return
}
