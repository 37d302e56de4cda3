// Package lockdev is a client of the Linux DLM's user lock device, in Go
// without cgo: what libdlm does for C programs. A lockspace is the
// character device /dev/dlm_<name>; a request is one write(2) of a
// fixed layout (include/uapi/linux/dlm_device.h, device ABI 6.0.x) and
// every completion or blocking callback one read(2). The "pointers" the
// kernel hands back are opaque to it, so this package puts request
// cookies in them: no unsafe memory is shared with the kernel.
//
// The kernel's DLM only works on a node whose control daemon (locusd's
// services/dlm) has configured it; a lockspace is created with Create
// (root) and opened with Open (whoever may open its device). Locks
// belong to the open Lockspace: closing it releases them all.
package lockdev

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// Mode is a lock mode. Compatible modes are granted together: NL with
// all; CR with all but EX; CW with NL, CR, CW; PR with NL, CR, PR; PW
// with NL, CR; EX with NL only.
type Mode int8

// The six modes, as the kernel numbers them.
const (
	NL Mode = 0 // null: a placeholder that holds the value block
	CR Mode = 1 // concurrent read
	CW Mode = 2 // concurrent write
	PR Mode = 3 // protected read (shared)
	PW Mode = 4 // protected write (update)
	EX Mode = 5 // exclusive
)

var modeNames = [...]string{"NL", "CR", "CW", "PR", "PW", "EX"}

func (m Mode) String() string {
	if m >= 0 && int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("mode(%d)", int8(m))
}

// ParseMode reads a mode's name (NL, CR, CW, PR, PW, EX; any case).
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if strings.EqualFold(s, n) {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("lock mode %q: want one of NL, CR, CW, PR, PW, EX", s)
}

// Compatible reports whether a lock held in mode a lets one in mode b be
// granted beside it (the kernel's compatibility matrix).
func Compatible(a, b Mode) bool {
	if a < 0 || b < 0 || a > EX || b > EX {
		return false
	}
	return compat[a][b]
}

var compat = [6][6]bool{
	NL: {true, true, true, true, true, true},
	CR: {true, true, true, true, true, false},
	CW: {true, true, true, false, false, false},
	PR: {true, true, false, true, false, false},
	PW: {true, true, false, false, false, false},
	EX: {true, false, false, false, false, false},
}

// Flags are a request's DLM_LKF_* flags.
type Flags uint32

// The flags a client uses (dlmconstants.h).
const (
	NoQueue     Flags = 0x1     // fail at once (ErrWouldBlock) rather than wait
	Cancel      Flags = 0x2     // (internal) cancel a waiting request
	Convert     Flags = 0x4     // (internal) change a held lock's mode
	ValBlk      Flags = 0x8     // carry the lock value block
	QueCvt      Flags = 0x10    // convert: queue behind waiters, not ahead
	IVValBlk    Flags = 0x20    // invalidate the value block
	ConvDeadlk  Flags = 0x40    // a conversion deadlock demotes to NL instead of failing
	Persistent  Flags = 0x80    // the lock outlives its holder's close (an orphan)
	NoDlckWait  Flags = 0x100   // do not cancel this request to break a deadlock
	Expedite    Flags = 0x400   // new NL requests ahead of the queue
	NoQueueBast Flags = 0x800   // with NoQueue: send blocking callbacks to holders anyway
	HeadQue     Flags = 0x1000  // queue at the head
	NoOrder     Flags = 0x2000  // no ordering of grants
	Orphan      Flags = 0x4000  // adopt an orphaned lock
	AltPR       Flags = 0x8000  // grant PR instead, if that can be
	AltCW       Flags = 0x10000 // grant CW instead, if that can be
	ForceUnlock Flags = 0x20000 // unlock even while a convert waits
)

// The kernel's limits.
const (
	// MaxLockspaceName is the longest lockspace name (DLM_LOCKSPACE_LEN).
	MaxLockspaceName = 64
	// MaxResourceName is the longest resource name (DLM_RESNAME_MAXLEN).
	MaxResourceName = 64
	// LVBLen is the size of a user lockspace's lock value block.
	LVBLen = 32
)

// Request commands (DLM_USER_*).
const (
	cmdLock         = 1
	cmdUnlock       = 2
	cmdCreateLS     = 4
	cmdRemoveLS     = 5
	cmdPurge        = 6
	lsflgForceFree  = 2
	lsflNewExcl     = 8 // DLM_LSFL_NEWEXCL
	requestSize     = 120
	resultSize      = 72
	readBufferSize  = resultSize + LVBLen + 64 // a read of less than a result is refused or overrun
	versionMajor    = 6
	versionMinor    = 0
	versionPatch    = 2
	statusUnlocked  = -0x10002 // -DLM_EUNLOCK
	statusCancelled = -0x10001 // -DLM_ECANCEL
)

// Tags in the astaddr field tell a completion from a blocking callback.
const (
	tagCompletion = 1
	tagBlocking   = 2
)

// Errors a lock request ends with.
var (
	// ErrWouldBlock: a NoQueue request that could not be granted at once.
	ErrWouldBlock = errors.New("dlm: lock is held in an incompatible mode (not queued)")
	// ErrCancelled: the request was cancelled before it was granted.
	ErrCancelled = errors.New("dlm: request cancelled")
	// ErrDeadlock: the request was cancelled to break a conversion deadlock.
	ErrDeadlock = errors.New("dlm: conversion deadlock")
	// ErrClosed: the lockspace was closed.
	ErrClosed = errors.New("dlm: lockspace closed")
)

// CheckLockspaceName says whether name may name a lockspace: 1 to 64
// bytes of letters, digits, '_', '-' and '.', since it becomes a device,
// a sysfs and a configfs name.
func CheckLockspaceName(name string) error {
	if name == "" || len(name) > MaxLockspaceName {
		return fmt.Errorf("lockspace name %q: want 1 to %d bytes", name, MaxLockspaceName)
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("lockspace name %q: only letters, digits, '_', '-' and '.'", name)
		}
	}
	if name == "." || name == ".." {
		return fmt.Errorf("lockspace name %q is not a name", name)
	}
	return nil
}

// CheckResourceName says whether name may name a resource: 1 to 64
// bytes (any bytes: the DLM compares them as given).
func CheckResourceName(name string) error {
	if name == "" || len(name) > MaxResourceName {
		return fmt.Errorf("resource name of %d bytes: want 1 to %d", len(name), MaxResourceName)
	}
	return nil
}

// lockRequest is a DLM_USER_LOCK or DLM_USER_UNLOCK request.
type lockRequest struct {
	cmd    uint8
	mode   Mode
	flags  Flags
	lkid   uint32
	cookie uint64 // in castparam, bastparam and lksb
	bast   bool   // ask for blocking callbacks
	lvb    [LVBLen]byte
	name   string
}

// encode lays r out as the kernel reads it (amd64: is64bit).
func (r lockRequest) encode() []byte {
	b := make([]byte, requestSize+len(r.name))
	putVersion(b)
	b[12] = r.cmd
	b[13] = 1 // is64bit
	p := b[16:]
	p[0] = uint8(r.mode)
	p[1] = uint8(len(r.name))
	le.PutUint32(p[4:], uint32(r.flags))
	le.PutUint32(p[8:], r.lkid)
	le.PutUint64(p[32:], r.cookie) // castparam
	le.PutUint64(p[40:], tagCompletion)
	le.PutUint64(p[48:], r.cookie) // bastparam
	if r.bast {
		le.PutUint64(p[56:], tagBlocking)
	}
	le.PutUint64(p[64:], r.cookie) // lksb: non-zero, never dereferenced
	copy(p[72:], r.lvb[:])
	copy(b[requestSize:], r.name)
	return b
}

// lockspaceRequest is a DLM_USER_CREATE_LOCKSPACE or _REMOVE_ request.
func lockspaceRequest(cmd uint8, flags uint32, minor uint32, name string) []byte {
	b := make([]byte, requestSize+len(name))
	putVersion(b)
	b[12] = cmd
	b[13] = 1
	le.PutUint32(b[16:], flags)
	le.PutUint32(b[20:], minor)
	copy(b[24:], name)
	return b
}

func purgeRequest(nodeid, pid uint32) []byte {
	b := make([]byte, requestSize)
	putVersion(b)
	b[12] = cmdPurge
	b[13] = 1
	le.PutUint32(b[16:], nodeid)
	le.PutUint32(b[20:], pid)
	return b
}

var le = binary.LittleEndian

func putVersion(b []byte) {
	le.PutUint32(b[0:], versionMajor)
	le.PutUint32(b[4:], versionMinor)
	le.PutUint32(b[8:], versionPatch)
}

// result is one struct dlm_lock_result read from the device.
type result struct {
	blocking bool   // a blocking callback (else a completion)
	cookie   uint64 // the request's
	status   int32  // 0 granted, or a negative errno / DLM status
	lkid     uint32
	sbFlags  uint8
	bastMode Mode
	lvb      []byte // nil when the result carries none
	// closed is set on the wake-up of a request whose lockspace's
	// device stopped answering (not a result read from the kernel).
	closed bool
}

// Flags of a completion (sb_flags).
const (
	sbfDemoted     = 0x1
	sbfValNotValid = 0x2
	sbfAltMode     = 0x4
)

// parseResult reads one result. It checks every length and offset: the
// bytes come from the kernel, but a wrong ABI must give an error, not a
// crash.
func parseResult(b []byte) (result, error) {
	if len(b) < resultSize {
		return result{}, fmt.Errorf("dlm: result of %d bytes, want at least %d", len(b), resultSize)
	}
	if v := le.Uint32(b[0:]); v != versionMajor {
		return result{}, fmt.Errorf("dlm: result of device ABI %d.%d.%d, want %d.x", v, le.Uint32(b[4:]), le.Uint32(b[8:]), versionMajor)
	}
	var r result
	switch tag := le.Uint64(b[16:]); tag {
	case tagCompletion:
	case tagBlocking:
		r.blocking = true
	default:
		return result{}, fmt.Errorf("dlm: result with unknown callback tag %#x", tag)
	}
	r.cookie = le.Uint64(b[24:])
	r.status = int32(le.Uint32(b[40:]))
	r.lkid = le.Uint32(b[44:])
	r.sbFlags = b[48]
	r.bastMode = Mode(b[64])
	if off := le.Uint32(b[68:]); off != 0 {
		if uint64(off)+LVBLen > uint64(len(b)) {
			return result{}, fmt.Errorf("dlm: result's value block at %d runs past its %d bytes", off, len(b))
		}
		r.lvb = append([]byte(nil), b[off:off+LVBLen]...)
	}
	return r, nil
}

// statusError is the error a completion's status stands for.
func statusError(status int32) error {
	switch status {
	case 0:
		return nil
	case -int32(syscall.EAGAIN):
		return ErrWouldBlock
	case statusCancelled:
		return ErrCancelled
	case -int32(syscall.EDEADLK):
		return ErrDeadlock
	case statusUnlocked:
		return nil
	}
	if status < 0 && status > -4096 {
		return fmt.Errorf("dlm: %w", syscall.Errno(-status))
	}
	return fmt.Errorf("dlm: status %d", status)
}
