package dlm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/locus-ssi/locus/services/dlm/lockdev"
)

// DebugDir is where the kernel's DLM shows its locks (debugfs).
const DebugDir = "/sys/kernel/debug/dlm"

// LockInfo is one lock as `locus lock ls` shows it: a holder or a waiter
// of a resource.
type LockInfo struct {
	Lockspace string `json:"lockspace"`
	Resource  string `json:"resource"`
	// Node holds or waits; PID is its process there (0 for a kernel user
	// such as GFS2).
	Node int    `json:"node"`
	PID  int    `json:"pid"`
	ID   string `json:"id"`
	// State is granted, converting or waiting.
	State     string `json:"state"`
	Granted   string `json:"granted,omitempty"`
	Requested string `json:"requested,omitempty"`
	// Master is the node that masters the resource.
	Master int `json:"master"`
	// For is how long the lock has been in its state.
	For time.Duration `json:"for_ns"`
}

// LocalLocks reads this node's own locks in lockspace ls from the
// kernel's debug view (the copies it masters for other nodes are theirs
// to report).
func LocalLocks(node int, ls string) ([]LockInfo, error) {
	if err := lockdev.CheckLockspaceName(ls); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(DebugDir, ls+"_locks"))
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(DebugDir); serr != nil {
			return nil, fmt.Errorf("dlm: no debug view of the DLM (%s; is debugfs mounted?)", DebugDir)
		}
		return nil, nil // this node is not in ls
	}
	if err != nil {
		return nil, fmt.Errorf("dlm: locks of %s: %w", ls, err)
	}
	return ParseLocks(node, ls, b)
}

// ParseLocks reads the kernel's "<ls>_locks" table (fs/dlm/debug_fs.c
// print_format2: "id nodeid remid pid xid exflags flags sts grmode
// rqmode time_us r_nodeid r_len "r_name""), keeping the locks held from
// this node (nodeid 0) and naming nodes by number (node is this one).
func ParseLocks(node int, ls string, b []byte) ([]LockInfo, error) {
	var out []LockInfo
	for i, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "id ") {
			continue
		}
		q := strings.IndexByte(line, '"')
		if q < 0 || !strings.HasSuffix(line, `"`) || q == len(line)-1 {
			return nil, fmt.Errorf("dlm: %s_locks line %d: no quoted resource name", ls, i+1)
		}
		name := line[q+1 : len(line)-1]
		f := strings.Fields(line[:q])
		if len(f) != 13 {
			return nil, fmt.Errorf("dlm: %s_locks line %d: %d fields, want 13 and a name", ls, i+1, len(f))
		}
		num := func(k int) (int64, error) {
			v, err := strconv.ParseInt(f[k], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("dlm: %s_locks line %d, field %d: %w", ls, i+1, k+1, err)
			}
			return v, nil
		}
		var v [13]int64
		for _, k := range []int{1, 3, 7, 8, 9, 10, 11, 12} {
			n, err := num(k)
			if err != nil {
				return nil, err
			}
			v[k] = n
		}
		if v[1] != 0 {
			continue // a master copy of another node's lock
		}
		li := LockInfo{Lockspace: ls, Resource: name, Node: node, PID: int(v[3]), ID: f[0], For: time.Duration(v[10]) * time.Microsecond}
		switch v[7] {
		case 1:
			li.State = "waiting"
		case 2:
			li.State = "granted"
		case 3:
			li.State = "converting"
		default:
			li.State = "status " + f[7]
		}
		if v[8] >= 0 {
			li.Granted = lockdev.Mode(v[8]).String()
		}
		if v[9] >= 0 && li.State != "granted" {
			li.Requested = lockdev.Mode(v[9]).String()
		}
		// 0 is this node; -1 not yet known (a lookup under way).
		li.Master = int(v[11])
		if li.Master == 0 {
			li.Master = node
		}
		out = append(out, li)
	}
	return out, nil
}
