package dlm

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// POSIX locks (fcntl F_SETLK, F_SETLKW, F_GETLK) on a GFS2 filesystem
// mounted without localflocks go to user space: the kernel queues each
// on /dev/dlm_plock and waits for the answer. Here every node's daemon
// passes them to the master, which keeps the cluster's one table of
// byte-range locks, so they exclude across nodes and are granted in one
// order; a waiting F_SETLKW is answered when it is granted. Each node
// also keeps the locks its own processes hold, so a new master learns
// the table from the nodes; a Down node's locks are dropped (after its
// fence).

// PlockDevice is the kernel's POSIX-lock device.
const PlockDevice = "/dev/dlm_plock"

// Plock operations (linux/dlm_plock.h).
const (
	PlockLock   = 1
	PlockUnlock = 2
	PlockGet    = 3
	// plockClose: an unlock the kernel makes for a closed file; it
	// wants no answer.
	plockClose = 1
	plockSize  = 64
)

// PlockOp is one POSIX lock operation, as the kernel queues it.
type PlockOp struct {
	Op     uint8  `json:"op"`
	Ex     bool   `json:"ex"`
	Wait   bool   `json:"wait"`
	Flags  uint8  `json:"flags"`
	PID    uint32 `json:"pid"`
	Node   int    `json:"node"`
	RV     int32  `json:"rv"`
	FSID   uint32 `json:"fsid"`
	Number uint64 `json:"number"` // the inode
	Start  uint64 `json:"start"`
	End    uint64 `json:"end"`
	Owner  uint64 `json:"owner"` // the kernel's lock owner, unique on its node
}

// ParsePlock reads one request from the device (64 bytes, version 1.x).
func ParsePlock(b []byte) (PlockOp, error) {
	if len(b) != plockSize {
		return PlockOp{}, fmt.Errorf("dlm: plock request of %d bytes, want %d", len(b), plockSize)
	}
	le := binary.LittleEndian
	if v := le.Uint32(b); v != 1 {
		return PlockOp{}, fmt.Errorf("dlm: plock request of version %d.%d, want 1.x", v, le.Uint32(b[4:]))
	}
	op := PlockOp{Op: b[12], Ex: b[13] != 0, Wait: b[14] != 0, Flags: b[15], PID: le.Uint32(b[16:]), Node: int(int32(le.Uint32(b[20:]))),
		RV: int32(le.Uint32(b[24:])), FSID: le.Uint32(b[28:]), Number: le.Uint64(b[32:]), Start: le.Uint64(b[40:]), End: le.Uint64(b[48:]), Owner: le.Uint64(b[56:])}
	if op.Op < PlockLock || op.Op > PlockGet {
		return PlockOp{}, fmt.Errorf("dlm: plock operation %d: want 1 (lock), 2 (unlock) or 3 (get)", op.Op)
	}
	if op.Start > op.End {
		return PlockOp{}, fmt.Errorf("dlm: plock range %d-%d ends before it starts", op.Start, op.End)
	}
	return op, nil
}

// bytes is the answer the kernel reads back.
func (op PlockOp) bytes() []byte {
	b := make([]byte, plockSize)
	le := binary.LittleEndian
	le.PutUint32(b, 1)
	le.PutUint32(b[4:], 2)
	b[12] = op.Op
	if op.Ex {
		b[13] = 1
	}
	if op.Wait {
		b[14] = 1
	}
	b[15] = op.Flags
	le.PutUint32(b[16:], op.PID)
	le.PutUint32(b[20:], uint32(int32(op.Node)))
	le.PutUint32(b[24:], uint32(op.RV))
	le.PutUint32(b[28:], op.FSID)
	le.PutUint64(b[32:], op.Number)
	le.PutUint64(b[40:], op.Start)
	le.PutUint64(b[48:], op.End)
	le.PutUint64(b[56:], op.Owner)
	return b
}

// PlockRange is a held byte-range lock.
type PlockRange struct {
	FSID   uint32 `json:"fsid"`
	Number uint64 `json:"number"`
	Node   int    `json:"node"`
	Owner  uint64 `json:"owner"`
	PID    uint32 `json:"pid"`
	Ex     bool   `json:"ex"`
	Start  uint64 `json:"start"`
	End    uint64 `json:"end"`
}

func (r PlockRange) sameOwner(node int, owner uint64) bool { return r.Node == node && r.Owner == owner }

// plockFile is one file's locks: held ranges, and waiters in order.
type plockFile struct {
	held    []PlockRange
	waiting []*plockWaiter
}

type plockWaiter struct {
	op   PlockOp
	done chan int32
}

type fileKey struct {
	FSID   uint32
	Number uint64
}

// plockTable is a set of files' POSIX locks: the master's for the whole
// cluster, a node's for its own processes.
type plockTable struct {
	mu    sync.Mutex
	files map[fileKey]*plockFile
}

func newPlockTable() *plockTable { return &plockTable{files: map[fileKey]*plockFile{}} }

func (t *plockTable) file(k fileKey) *plockFile {
	f := t.files[k]
	if f == nil {
		f = &plockFile{}
		t.files[k] = f
	}
	return f
}

// conflict is a lock of another owner that op's range overlaps, where
// either is exclusive.
func conflict(held []PlockRange, op PlockOp) (PlockRange, bool) {
	for _, r := range held {
		if r.sameOwner(op.Node, op.Owner) || r.End < op.Start || r.Start > op.End {
			continue
		}
		if r.Ex || op.Ex {
			return r, true
		}
	}
	return PlockRange{}, false
}

// unlockRange removes the owner's locks on [start, end], splitting those
// that reach past it.
func unlockRange(held []PlockRange, node int, owner uint64, start, end uint64) []PlockRange {
	var out []PlockRange
	for _, r := range held {
		if !r.sameOwner(node, owner) || r.End < start || r.Start > end {
			out = append(out, r)
			continue
		}
		if r.Start < start {
			left := r
			left.End = start - 1
			out = append(out, left)
		}
		if r.End > end {
			right := r
			right.Start = end + 1
			out = append(out, right)
		}
	}
	return out
}

// lockRange gives the owner op's range in op's mode: what it held there
// is replaced (POSIX: a lock converts the owner's own overlapping ones).
func lockRange(held []PlockRange, op PlockOp) []PlockRange {
	out := unlockRange(held, op.Node, op.Owner, op.Start, op.End)
	out = append(out, PlockRange{FSID: op.FSID, Number: op.Number, Node: op.Node, Owner: op.Owner, PID: op.PID, Ex: op.Ex, Start: op.Start, End: op.End})
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out
}

// do carries out op on the table: its answer (rv), and for a waiting
// lock that cannot be granted now, a waiter to wait on.
func (t *plockTable) do(op PlockOp) (PlockOp, *plockWaiter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := fileKey{op.FSID, op.Number}
	f := t.file(k)
	switch op.Op {
	case PlockGet:
		if r, ok := conflict(f.held, op); ok {
			op.RV, op.Ex, op.PID, op.Node, op.Start, op.End = 1, r.Ex, r.PID, r.Node, r.Start, r.End
		} else {
			op.RV = 0
		}
	case PlockUnlock:
		f.held = unlockRange(f.held, op.Node, op.Owner, op.Start, op.End)
		if op.Flags&plockClose != 0 {
			// The file is closed: the owner's waiters on it go too.
			f.waiting = slices.DeleteFunc(f.waiting, func(w *plockWaiter) bool {
				if w.op.Node == op.Node && w.op.Owner == op.Owner {
					w.done <- -int32(unix.EINTR)
					return true
				}
				return false
			})
		}
		op.RV = 0
		t.grantLocked(f)
	case PlockLock:
		if _, ok := conflict(f.held, op); !ok {
			f.held = lockRange(f.held, op)
			op.RV = 0
			break
		}
		if !op.Wait {
			op.RV = -int32(unix.EAGAIN)
			break
		}
		w := &plockWaiter{op: op, done: make(chan int32, 1)}
		f.waiting = append(f.waiting, w)
		return op, w
	}
	if len(f.held) == 0 && len(f.waiting) == 0 {
		delete(t.files, k)
	}
	return op, nil
}

// grantLocked grants the waiters that no longer conflict, in order.
func (t *plockTable) grantLocked(f *plockFile) {
	for i := 0; i < len(f.waiting); {
		w := f.waiting[i]
		if _, ok := conflict(f.held, w.op); ok {
			i++
			continue
		}
		f.held = lockRange(f.held, w.op)
		f.waiting = slices.Delete(f.waiting, i, i+1)
		w.done <- 0
	}
}

// cancel drops waiter w (its caller gave up); a grant that came first
// is let go again.
func (t *plockTable) cancel(w *plockWaiter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := fileKey{w.op.FSID, w.op.Number}
	f := t.files[k]
	if f == nil {
		return
	}
	f.waiting = slices.DeleteFunc(f.waiting, func(o *plockWaiter) bool { return o == w })
	select {
	case rv := <-w.done:
		if rv == 0 {
			f.held = unlockRange(f.held, w.op.Node, w.op.Owner, w.op.Start, w.op.End)
			t.grantLocked(f)
		}
	default:
	}
}

// record notes a lock the master granted to one of this node's
// processes (the node's own table; no conflict is checked there).
func (t *plockTable) record(op PlockOp) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.file(fileKey{op.FSID, op.Number})
	f.held = lockRange(f.held, op)
}

// rvAgain, as a waiter's answer, sends its caller to ask again (the
// table it waited in was replaced by a new master's).
const rvAgain = 1 << 30

// dropNode drops every lock and waiter of node (it is Down).
func (t *plockTable) dropNode(node int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, f := range t.files {
		f.held = slices.DeleteFunc(f.held, func(r PlockRange) bool { return r.Node == node })
		f.waiting = slices.DeleteFunc(f.waiting, func(w *plockWaiter) bool {
			if w.op.Node == node {
				w.done <- -int32(unix.EINTR)
				return true
			}
			return false
		})
		t.grantLocked(f)
		if len(f.held) == 0 && len(f.waiting) == 0 {
			delete(t.files, k)
		}
	}
}

// ranges lists the table's held locks.
func (t *plockTable) ranges() []PlockRange {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []PlockRange
	for _, f := range t.files {
		out = append(out, f.held...)
	}
	return out
}

// load replaces the table's held locks (a new master's, from the nodes).
func (t *plockTable) load(rs []PlockRange) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range t.files {
		for _, w := range f.waiting {
			w.done <- rvAgain
		}
	}
	t.files = map[fileKey]*plockFile{}
	for _, r := range rs {
		f := t.file(fileKey{r.FSID, r.Number})
		f.held = append(f.held, r)
	}
}

// handlePlock is the master's side of a POSIX lock operation.
func (s *Service) handlePlock(ctx context.Context, from int, b []byte) ([]byte, error) {
	var op PlockOp
	if err := json.Unmarshal(b, &op); err != nil {
		return nil, fmt.Errorf("dlm: plock from node %d: %w", from, err)
	}
	if op.Node != from {
		return nil, fmt.Errorf("dlm: node %d sent a plock of node %d", from, op.Node)
	}
	st := s.cfg.Status()
	if st.Master != s.cfg.Node || !st.Quorum {
		return nil, errors.New("dlm: this node is not the master")
	}
	if err := s.coord.learn(ctx, st); err != nil {
		return nil, err
	}
	ans, w := s.coord.plocks.do(op)
	if w != nil {
		select {
		case rv := <-w.done:
			if rv == rvAgain {
				return nil, errors.New("dlm: the lock table was replaced: ask again")
			}
			ans.RV = rv
		case <-ctx.Done():
			s.coord.plocks.cancel(w)
			return nil, ctx.Err()
		}
	}
	return json.Marshal(ans)
}

// servePlocks answers the kernel's POSIX lock requests until ctx ends:
// each is passed to the master (again, to a new one, until answered) and
// its answer written back; this node's own locks are kept in s.ownPlocks.
func (s *Service) servePlocks(ctx context.Context, dev *os.File) {
	var wg sync.WaitGroup
	defer wg.Wait()
	buf := make([]byte, plockSize)
	for {
		n, err := dev.Read(buf)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, os.ErrClosed) {
				s.log.Error("dlm: plock device", "err", err)
			}
			return
		}
		op, err := ParsePlock(buf[:n])
		if err != nil {
			s.log.Error("dlm: plock request", "err", err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ans := s.plock(ctx, op)
			if op.Flags&plockClose != 0 {
				return // the kernel wants no answer
			}
			if _, err := dev.Write(ans.bytes()); err != nil && ctx.Err() == nil {
				s.log.Error("dlm: answer a plock", "err", err)
			}
		}()
	}
}

// plock carries out one of this node's POSIX lock operations on the
// master and keeps this node's own table.
func (s *Service) plock(ctx context.Context, op PlockOp) PlockOp {
	op.Node = s.cfg.Node
	ans, ok := s.plockOnMaster(ctx, op)
	if !ok {
		ans = op
		ans.RV = -int32(unix.EINTR)
	}
	switch {
	case ans.Op == PlockLock && ans.RV == 0:
		s.ownPlocks.record(ans)
	case ans.Op == PlockUnlock:
		s.ownPlocks.do(ans)
	}
	return ans
}

// plockOnMaster sends op to the master until one answers it.
func (s *Service) plockOnMaster(ctx context.Context, op PlockOp) (PlockOp, bool) {
	req, _ := json.Marshal(op)
	for attempt := 1; ; attempt++ {
		// A waiting lock may wait long: not the calls' default deadline
		// (which would requeue it at the back).
		b, err := s.onMaster(ctx, s.cfg.Status(), methodPlock, req, 10*time.Minute)
		if err == nil {
			var ans PlockOp
			if err := json.Unmarshal(b, &ans); err == nil {
				return ans, true
			}
		}
		if attempt == 1 || attempt%20 == 0 {
			s.log.Info("dlm: plock waits for the master", "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return op, false
		case <-time.After(500 * time.Millisecond):
		}
	}
}
