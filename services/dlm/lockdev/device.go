package lockdev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DevDir is where devtmpfs puts the DLM's misc devices.
const DevDir = "/dev"

// ControlDevice is the device lockspaces are created and removed on.
const ControlDevice = DevDir + "/dlm-control"

// DevicePath is lockspace name's device.
func DevicePath(name string) string { return filepath.Join(DevDir, "dlm_"+name) }

// Create makes lockspace name on this node (CAP_SYS_ADMIN), joining it
// clusterwide: the call returns once the cluster's control daemons have
// added this node to the lockspace, which may take as long as the
// membership needs. A lockspace that exists already is not an error.
// The device is left as the kernel makes it (root's, 0600).
func Create(name string) error {
	if err := CheckLockspaceName(name); err != nil {
		return err
	}
	if _, err := os.Stat(DevicePath(name)); err == nil {
		return nil
	}
	ctl, err := os.OpenFile(ControlDevice, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("dlm: create lockspace %s: %w (is the DLM's module loaded and its control daemon running?)", name, err)
	}
	defer ctl.Close()
	if _, err := rawWrite(ctl, lockspaceRequest(cmdCreateLS, 0, 0, name)); err != nil {
		return fmt.Errorf("dlm: create lockspace %s: %w", name, err)
	}
	return nil
}

// Remove drops this node's reference to lockspace name (CAP_SYS_ADMIN):
// the node leaves it once nobody has it open. With force, locks still
// held on it are dropped too; without, a lockspace with locks is kept
// (EBUSY).
func Remove(name string, force bool) error {
	if err := CheckLockspaceName(name); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(DevicePath(name), &st); err != nil {
		return fmt.Errorf("dlm: remove lockspace %s: %w", name, err)
	}
	ctl, err := os.OpenFile(ControlDevice, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("dlm: remove lockspace %s: %w", name, err)
	}
	defer ctl.Close()
	var flags uint32
	if force {
		flags = lsflgForceFree
	}
	if _, err := rawWrite(ctl, lockspaceRequest(cmdRemoveLS, flags, unix.Minor(st.Rdev), name)); err != nil {
		return fmt.Errorf("dlm: remove lockspace %s: %w", name, err)
	}
	return nil
}

// rawWrite is one write(2) whose return value is the kernel's answer (a
// lock id, a minor), not a count of bytes: os.File.Write would take it
// for a short write and write again.
func rawWrite(f *os.File, b []byte) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var werr error
	if err := rc.Write(func(fd uintptr) bool {
		n, werr = unix.Write(int(fd), b)
		return werr != unix.EAGAIN
	}); err != nil {
		return 0, err
	}
	return n, werr
}

// Lockspace is an open lockspace: the locks taken through it are its,
// and Close releases every one.
type Lockspace struct {
	name string
	f    *os.File

	mu      sync.Mutex
	next    uint64
	pending map[uint64]*Lock
	err     error // set once the reader has stopped
	done    chan struct{}
}

// Open opens lockspace name's device.
func Open(name string) (*Lockspace, error) {
	if err := CheckLockspaceName(name); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(DevicePath(name), os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("dlm: lockspace %s: %w on this node (%s)", name, os.ErrNotExist, DevicePath(name))
		}
		return nil, fmt.Errorf("dlm: lockspace %s: %w", name, err)
	}
	ls := &Lockspace{name: name, f: f, pending: map[uint64]*Lock{}, done: make(chan struct{})}
	go ls.read() // ends when f is closed
	return ls, nil
}

// Name is the lockspace's name.
func (ls *Lockspace) Name() string { return ls.name }

// Close releases every lock taken through ls and ends its callbacks.
func (ls *Lockspace) Close() error {
	err := ls.f.Close()
	<-ls.done
	return err
}

// read dispatches the kernel's callbacks to their locks until the device
// is closed.
func (ls *Lockspace) read() {
	defer close(ls.done)
	buf := make([]byte, readBufferSize)
	for {
		n, err := ls.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF) {
				err = ErrClosed
			}
			ls.fail(err)
			return
		}
		r, err := parseResult(buf[:n])
		if err != nil {
			ls.fail(err)
			return
		}
		ls.mu.Lock()
		l := ls.pending[r.cookie]
		ls.mu.Unlock()
		if l != nil {
			l.deliver(r)
		}
	}
}

// fail ends every waiting request with err.
func (ls *Lockspace) fail(err error) {
	ls.mu.Lock()
	ls.err = err
	locks := ls.pending
	ls.pending = map[uint64]*Lock{}
	ls.mu.Unlock()
	for _, l := range locks {
		l.deliver(result{closed: true}) // wakes the waiter, who then returns ls.err
	}
}

// Options are a lock request's.
type Options struct {
	Flags Flags
	// LVB is the value block to send (with ValBlk in Flags); nil sends
	// the lock's last one.
	LVB []byte
	// Blocking, if set, receives the mode another request waits for
	// while this lock is held (a blocking callback): the holder should
	// release or demote it. It must not block.
	Blocking func(wanted Mode)
}

// Lock is a lock of one resource, held or being requested.
type Lock struct {
	ls     *Lockspace
	name   string
	cookie uint64
	bast   func(Mode)

	mu       sync.Mutex
	lkid     uint32
	mode     Mode // granted mode, -1 while never granted
	lvb      [LVBLen]byte
	lvbValid bool
	waiting  chan result // the pending request's completion
}

// Lock requests resource name in mode and waits until it is granted,
// refused (ErrWouldBlock with NoQueue), or ctx ends (the request is then
// cancelled). With ValBlk the resource's value block comes back in LVB.
func (ls *Lockspace) Lock(ctx context.Context, name string, mode Mode, o Options) (*Lock, error) {
	if err := CheckResourceName(name); err != nil {
		return nil, err
	}
	if mode < NL || mode > EX {
		return nil, fmt.Errorf("dlm: lock %q: mode %d does not exist", name, mode)
	}
	ls.mu.Lock()
	if ls.err != nil {
		ls.mu.Unlock()
		return nil, ls.err
	}
	ls.next++
	l := &Lock{ls: ls, name: name, cookie: ls.next, bast: o.Blocking, mode: -1}
	ls.pending[l.cookie] = l
	ls.mu.Unlock()
	req := lockRequest{cmd: cmdLock, mode: mode, flags: o.Flags &^ (Convert | Cancel), cookie: l.cookie, bast: o.Blocking != nil, name: name}
	copy(req.lvb[:], o.LVB)
	if err := l.request(ctx, req, mode); err != nil {
		ls.forget(l)
		return nil, err
	}
	return l, nil
}

// Convert changes a held lock's mode: up (waits, like Lock; with QueCvt
// behind the waiters) or down (at once). A failed convert leaves the
// lock in its old mode.
func (l *Lock) Convert(ctx context.Context, mode Mode, o Options) error {
	if mode < NL || mode > EX {
		return fmt.Errorf("dlm: convert %q: mode %d does not exist", l.name, mode)
	}
	l.mu.Lock()
	req := lockRequest{cmd: cmdLock, mode: mode, flags: o.Flags&^Cancel | Convert, lkid: l.lkid, cookie: l.cookie, bast: l.bast != nil, name: l.name}
	req.lvb = l.lvb
	l.mu.Unlock()
	if o.LVB != nil {
		req.lvb = [LVBLen]byte{}
		copy(req.lvb[:], o.LVB)
		l.mu.Lock()
		l.lvb = req.lvb // the kernel keeps it as the lock's value block
		l.mu.Unlock()
	}
	return l.request(ctx, req, mode)
}

// Unlock releases the lock. With ValBlk in flags and the lock held in
// PW or EX, lvb (or, if nil, the lock's last value block) becomes the
// resource's value block.
func (l *Lock) Unlock(flags Flags, lvb []byte) error {
	l.mu.Lock()
	req := lockRequest{cmd: cmdUnlock, flags: flags & (ValBlk | IVValBlk | ForceUnlock), lkid: l.lkid, cookie: l.cookie, name: l.name}
	// The kernel copies the request's value block into the lock's on
	// every unlock: send the one meant, never zeros by accident.
	req.lvb = l.lvb
	l.mu.Unlock()
	if lvb != nil {
		req.lvb = [LVBLen]byte{}
		copy(req.lvb[:], lvb)
	}
	err := l.request(context.Background(), req, -1)
	l.ls.forget(l)
	return err
}

// cancelWait bounds the wait for a request's completion after the
// kernel refused to cancel it.
const cancelWait = 5 * time.Second

// request sends req and waits for its completion; mode is what a grant
// means (-1: an unlock).
func (l *Lock) request(ctx context.Context, req lockRequest, mode Mode) error {
	ch := make(chan result, 1)
	l.mu.Lock()
	l.waiting = ch
	l.mu.Unlock()
	n, err := rawWrite(l.ls.f, req.encode())
	if err != nil {
		return fmt.Errorf("dlm: %s %q in lockspace %s: %w", map[bool]string{true: "unlock", false: "lock"}[req.cmd == cmdUnlock], l.name, l.ls.name, err)
	}
	if req.cmd == cmdLock && req.flags&Convert == 0 {
		l.mu.Lock()
		l.lkid = uint32(n)
		l.mu.Unlock()
	}
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		// Cancel; the completion says which came first, the grant or
		// the cancel.
		l.mu.Lock()
		cancel := lockRequest{cmd: cmdUnlock, flags: Cancel, lkid: l.lkid, cookie: l.cookie, name: l.name, lvb: l.lvb}
		l.mu.Unlock()
		if _, err := rawWrite(l.ls.f, cancel.encode()); err != nil && !errors.Is(err, unix.EBUSY) {
			// The kernel refused the cancel for another reason than
			// "too late" (EBUSY: the completion is on its way): a
			// completion may never come.
			select {
			case r = <-ch:
			case <-time.After(cancelWait):
				return fmt.Errorf("dlm: lock %q in lockspace %s: %w, and the kernel refused its cancel (%v): the request may still be granted, until the lockspace is closed", l.name, l.ls.name, ctx.Err(), err)
			}
		} else {
			r = <-ch
		}
		if r.status == 0 {
			if req.flags&Convert == 0 {
				// Granted before the cancel took: let it go again.
				l.apply(r, mode)
				l.Unlock(0, nil)
				return ctx.Err()
			}
		}
		if r.status == statusCancelled {
			return ctx.Err()
		}
	}
	l.ls.mu.Lock()
	lsErr := l.ls.err
	l.ls.mu.Unlock()
	if r.closed {
		return lsErr
	}
	if err := statusError(r.status); err != nil {
		return fmt.Errorf("lock %q in lockspace %s: %w", l.name, l.ls.name, err)
	}
	l.apply(r, mode)
	return nil
}

func (l *Lock) apply(r result, mode Mode) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if mode >= 0 {
		l.mode = mode
		if r.sbFlags&sbfAltMode != 0 {
			// Granted in the alternate mode the request allowed.
			if mode == PR {
				l.mode = CW
			} else {
				l.mode = PR
			}
		}
		if r.sbFlags&sbfDemoted != 0 {
			l.mode = NL
		}
	}
	if r.lvb != nil {
		copy(l.lvb[:], r.lvb)
		l.lvbValid = r.sbFlags&sbfValNotValid == 0
	}
}

// deliver hands a callback to the lock: blocking callbacks to its
// handler, completions to its waiting request.
func (l *Lock) deliver(r result) {
	if r.blocking {
		if l.bast != nil {
			l.bast(r.bastMode)
		}
		return
	}
	l.mu.Lock()
	ch := l.waiting
	l.waiting = nil
	l.mu.Unlock()
	if ch != nil {
		ch <- r
	}
}

func (ls *Lockspace) forget(l *Lock) {
	ls.mu.Lock()
	delete(ls.pending, l.cookie)
	ls.mu.Unlock()
}

// Mode is the mode the lock is held in.
func (l *Lock) Mode() Mode {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mode
}

// ID is the kernel's id of the lock on this node.
func (l *Lock) ID() uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lkid
}

// LVB returns the lock's value block as last received or set, and
// whether it is valid (false when a holder in PW or EX died without
// writing it, or it was never written).
func (l *Lock) LVB() ([]byte, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.lvb[:]...), l.lvbValid
}

// SetLVB sets the value block the next down-convert or unlock with ValBlk
// publishes.
func (l *Lock) SetLVB(b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lvb = [LVBLen]byte{}
	copy(l.lvb[:], b)
}

// Purge drops the orphaned locks process pid of node nodeid left in ls
// (CAP_SYS_ADMIN).
func (ls *Lockspace) Purge(nodeid, pid uint32) error {
	if _, err := rawWrite(ls.f, purgeRequest(nodeid, pid)); err != nil {
		return fmt.Errorf("dlm: purge in lockspace %s: %w", ls.name, err)
	}
	return nil
}

// IsNotSupported reports whether err says this kernel has no DLM.
func IsNotSupported(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.EUNATCH)
}
