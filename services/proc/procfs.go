package proc

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Process is one process of one node, as ps shows it.
type Process struct {
	CPID int64  `json:"cpid"`
	Node int    `json:"node"`
	PID  int    `json:"pid"`
	PPID int    `json:"ppid"`
	PGID int    `json:"pgid"`
	SID  int    `json:"sid"`
	UID  uint32 `json:"uid"`
	User string `json:"user"`
	// State is the kernel's one-letter state (R, S, D, Z, T, ...).
	State string `json:"state"`
	// CPU is the percentage of one CPU used over the process's life,
	// as ps computes %CPU.
	CPU float64 `json:"cpu"`
	// RSS is the resident set in KiB.
	RSS int64 `json:"rss"`
	// Start is when it started, Unix seconds (the node's clock).
	Start   float64 `json:"start"`
	Threads int     `json:"threads"`
	Comm    string  `json:"comm"`
	// Args is the command line; empty for kernel threads.
	Args []string `json:"args,omitempty"`
	// TTY is the controlling terminal's device number (0: none).
	TTY int `json:"tty,omitempty"`
}

// Command is the process's command line, or [comm] for a kernel thread.
func (p Process) Command() string {
	if len(p.Args) == 0 {
		return "[" + p.Comm + "]"
	}
	return strings.Join(p.Args, " ")
}

// clockTicks is USER_HZ: 100 on every Linux architecture Locus runs.
const clockTicks = 100

// Host is what a snapshot needs of the node: its /proc, and when it booted.
type Host struct {
	Node    int
	ProcDir string
	// btime is the boot time (Unix seconds), from /proc/stat.
	btime    int64
	pageSize int64
	users    *userNames
}

// NewHost reads the node's boot time from procDir/stat.
// root is the directory the node's processes run chrooted in ("" or
// nil: this daemon's own root), whose /etc/passwd names their users.
func NewHost(node int, procDir string, root func() string) (*Host, error) {
	b, err := os.ReadFile(filepath.Join(procDir, "stat"))
	if err != nil {
		return nil, fmt.Errorf("proc: %w", err)
	}
	h := &Host{Node: node, ProcDir: procDir, pageSize: int64(os.Getpagesize()), users: newUserNames(root)}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			h.btime, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if h.btime == 0 {
		return nil, fmt.Errorf("proc: %s/stat has no btime", procDir)
	}
	return h, nil
}

// Snapshot lists every process of the node. A process that exits while
// it is read is left out.
func (h *Host) Snapshot() ([]Process, error) {
	ents, err := os.ReadDir(h.ProcDir)
	if err != nil {
		return nil, fmt.Errorf("proc: %w", err)
	}
	now := float64(time.Now().UnixNano()) / 1e9
	out := make([]Process, 0, len(ents))
	users := h.users.snapshot()
	buf := make([]byte, 64<<10)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid < 1 {
			continue
		}
		p, err := h.process(pid, now, users, buf)
		if err != nil {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// Process reads one process.
func (h *Host) Process(pid int, now float64) (Process, error) {
	return h.process(pid, now, h.users.snapshot(), make([]byte, 64<<10))
}

// process reads one process with few system calls: its directory's
// owner is its effective uid (as ps takes it), and stat and cmdline are
// each read whole into buf with one read.
func (h *Host) process(pid int, now float64, users map[uint32]account, buf []byte) (Process, error) {
	dir := h.ProcDir + "/" + strconv.Itoa(pid)
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return Process{}, err
	}
	n, err := readProcFile(dir+"/stat", buf)
	if err != nil {
		return Process{}, err
	}
	p, err := ParseStat(buf[:n])
	if err != nil {
		return Process{}, fmt.Errorf("%s/stat: %w", dir, err)
	}
	p.Node, p.CPID = h.Node, CPID(h.Node, p.PID)
	p.RSS *= h.pageSize / 1024
	start := float64(h.btime) + p.Start/clockTicks
	cpu := p.CPU / clockTicks
	p.Start = start
	p.CPU = 0
	if age := now - start; age > 0 {
		p.CPU = 100 * cpu / age
	}
	p.UID = st.Uid
	if a, ok := users[p.UID]; ok {
		p.User = a.name
	} else {
		p.User = strconv.FormatUint(uint64(p.UID), 10)
	}
	if n, err := readProcFile(dir+"/cmdline", buf); err == nil && n > 0 {
		p.Args = strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
	}
	return p, nil
}

// readProcFile reads a /proc file into buf: the kernel gives a
// process's stat or cmdline whole to one read that has room for it.
func readProcFile(path string, buf []byte) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}

// ParseStat reads /proc/PID/stat. CPU comes back as utime+stime in
// ticks and Start as starttime in ticks since boot; RSS in pages.
func ParseStat(b []byte) (Process, error) {
	// comm may hold spaces and parentheses: it ends at the last ')'.
	open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 1 || close < open {
		return Process{}, fmt.Errorf("no (comm) in %.40q", b)
	}
	var p Process
	var err error
	if p.PID, err = strconv.Atoi(string(bytes.TrimSpace(b[:open]))); err != nil {
		return Process{}, fmt.Errorf("pid %q: %w", bytes.TrimSpace(b[:open]), err)
	}
	p.Comm = string(b[open+1 : close])
	f := strings.Fields(string(b[close+1:]))
	// f[0] is field 3 (state); field k is f[k-3].
	if len(f) < 22 {
		return Process{}, fmt.Errorf("%d fields after comm, want at least 22", len(f))
	}
	num := func(k int) int64 {
		v, e := strconv.ParseInt(f[k-3], 10, 64)
		if e != nil && err == nil {
			err = fmt.Errorf("field %d %q: not a number", k, f[k-3])
		}
		return v
	}
	p.State = f[0]
	p.PPID, p.PGID, p.SID, p.TTY = int(num(4)), int(num(5)), int(num(6)), int(num(7))
	p.CPU = float64(num(14) + num(15))
	p.Threads = int(num(20))
	p.Start = float64(num(22))
	p.RSS = num(24)
	if err != nil {
		return Process{}, err
	}
	return p, nil
}

// userNames maps uids to accounts from the passwd file of the node's
// process root (the shared root once it is mounted: one /etc/passwd for
// the cluster), read again when it changes or the root moves.
type userNames struct {
	mu       sync.Mutex
	root     func() string
	path     string
	mtime    time.Time
	accounts map[uint32]account
}

// account is a passwd entry's name and home directory.
type account struct{ name, home string }

func newUserNames(root func() string) *userNames {
	if root == nil {
		root = func() string { return "" }
	}
	return &userNames{root: root}
}

// snapshot is the uid-to-account map as the passwd file now has it.
func (u *userNames) snapshot() map[uint32]account {
	u.mu.Lock()
	defer u.mu.Unlock()
	path := filepath.Join("/", u.root(), "etc/passwd")
	if fi, err := os.Stat(path); err == nil && (path != u.path || !fi.ModTime().Equal(u.mtime)) {
		u.path, u.mtime, u.accounts = path, fi.ModTime(), readPasswd(path)
	}
	return u.accounts
}

// lookup is uid's account, if the passwd file has one.
func (u *userNames) lookup(uid uint32) (account, bool) {
	a, ok := u.snapshot()[uid]
	return a, ok
}

func readPasswd(path string) map[uint32]account {
	f, err := os.Open(path)
	if err != nil {
		return map[uint32]account{}
	}
	defer f.Close()
	return parsePasswd(f)
}

// parsePasswd reads passwd(5) lines (name:password:uid:gid:gecos:home:shell);
// malformed lines are skipped, and the first entry of a uid wins, as
// getpwuid(3) gives it.
func parsePasswd(r io.Reader) map[uint32]account {
	m := map[uint32]account{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), ":")
		if len(fs) < 3 || fs[0] == "" {
			continue
		}
		uid, err := strconv.ParseUint(fs[2], 10, 32)
		if err != nil {
			continue
		}
		if _, dup := m[uint32(uid)]; dup {
			continue
		}
		a := account{name: fs[0]}
		if len(fs) >= 6 {
			a.home = fs[5]
		}
		m[uint32(uid)] = a
	}
	return m
}
