// Package fsconform checks that a directory's filesystem behaves as POSIX
// and Linux say a local one does, for every user: ownership of what each
// user creates, modes (umask, setuid, setgid, sticky), chmod, chown,
// permission checks of open, link, rename, rmdir, unlink, truncate and
// utimensat, symlinks, FIFOs and device nodes. The checks follow the
// layout of pjdfstest (one system call, as one user with given groups,
// and its expected result); they are written here, not copied.
//
// Run must run as root: each check takes its user's credentials on a
// thread of its own (setgroups, setresgid and setresuid are per thread
// in Linux; Go's syscall package applies them to every thread, the raw
// system calls here do not), and gives them back after. The same checks
// run on two filesystems (a CFS client and the server's ext4) show where
// they differ.
package fsconform

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Cred is who a check runs as.
type Cred struct {
	UID, GID int
	Groups   []int
}

func (c Cred) String() string {
	if c.UID == 0 && c.GID == 0 && len(c.Groups) == 0 {
		return "root"
	}
	s := fmt.Sprintf("uid %d gid %d", c.UID, c.GID)
	if len(c.Groups) > 0 {
		g := make([]string, len(c.Groups))
		for i, n := range c.Groups {
			g[i] = strconv.Itoa(n)
		}
		s += " groups " + strings.Join(g, ",")
	}
	return s
}

// Check is the outcome of one check.
type Check struct {
	// Name is the check's group (the system call tested) and number.
	Name string `json:"name"`
	// What is the call, as whom.
	What string `json:"what"`
	Want string `json:"want"`
	Got  string `json:"got"`
	OK   bool   `json:"ok"`
}

// Report is the outcome of a run.
type Report struct {
	Dir      string  `json:"dir"`
	Checks   []Check `json:"checks"`
	Failures int     `json:"failures"`
}

// Failed lists the names of the checks that failed.
func (r Report) Failed() []string {
	var out []string
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c.Name)
		}
	}
	return out
}

// Run runs every check in a new directory under dir and removes it
// after. progress, if not nil, is told each group's name as it starts.
func Run(ctx context.Context, dir string, progress func(group string)) (Report, error) {
	if os.Geteuid() != 0 {
		return Report{}, errors.New("fsconform: must run as root (checks take other users' credentials)")
	}
	work, err := os.MkdirTemp(dir, "fsconform-")
	if err != nil {
		return Report{}, fmt.Errorf("fsconform: %w", err)
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o777); err != nil {
		return Report{}, fmt.Errorf("fsconform: %w", err)
	}
	old := unix.Umask(0)
	defer unix.Umask(old)
	s := &suite{dir: work, report: Report{Dir: dir}}
	for _, g := range groups {
		if err := ctx.Err(); err != nil {
			return s.report, err
		}
		if progress != nil {
			progress(g.name)
		}
		s.group, s.n = g.name, 0
		sub := filepath.Join(work, g.name)
		if err := os.Mkdir(sub, 0o777); err != nil {
			return s.report, fmt.Errorf("fsconform: %w", err)
		}
		os.Chmod(sub, 0o777)
		s.cwd = sub
		g.run(s)
	}
	for _, c := range s.report.Checks {
		if !c.OK {
			s.report.Failures++
		}
	}
	return s.report, nil
}

type suite struct {
	dir, cwd string
	group    string
	n        int
	report   Report
}

// p is name in the current group's directory.
func (s *suite) p(name string) string { return filepath.Join(s.cwd, name) }

// expect runs op as c and records whether its result is want: "0" for
// success, an errno's name, or the value op returns.
func (s *suite) expect(want string, c Cred, what string, op func() (string, error)) {
	s.n++
	var got string
	err := as(c, func() error {
		v, err := op()
		got = v
		return err
	})
	if err != nil {
		got = errName(err)
	} else if got == "" {
		got = "0"
	}
	s.report.Checks = append(s.report.Checks, Check{
		Name: fmt.Sprintf("%s/%d", s.group, s.n), What: what + " as " + c.String(),
		Want: want, Got: got, OK: got == want,
	})
}

// must is setup: as root, and a failure of it is recorded as a failed check.
func (s *suite) must(what string, err error) {
	if err != nil {
		s.n++
		s.report.Checks = append(s.report.Checks, Check{
			Name: fmt.Sprintf("%s/%d", s.group, s.n), What: "setup: " + what, Want: "0", Got: errName(err),
		})
	}
}

func errName(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		if name := unix.ErrnoName(en); name != "" {
			return name
		}
		return strconv.Itoa(int(en))
	}
	return err.Error()
}

// as runs do with c's credentials on a thread of its own.
func as(c Cred, do func() error) error {
	if c.UID == 0 && c.GID == 0 && len(c.Groups) == 0 {
		return do()
	}
	runtime.LockOSThread()
	groups := c.Groups
	if len(groups) == 0 {
		groups = []int{c.GID}
	}
	gids := make([]uint32, len(groups))
	for i, g := range groups {
		gids[i] = uint32(g)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gids)), uintptr(unsafe.Pointer(&gids[0])), 0); e != 0 {
		runtime.UnlockOSThread()
		return fmt.Errorf("fsconform: setgroups: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(c.GID), uintptr(c.GID), 0); e != 0 {
		restore()
		return fmt.Errorf("fsconform: setresgid: %w", e)
	}
	// The saved uid stays 0, so the thread can take root back.
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(c.UID), uintptr(c.UID), 0); e != 0 {
		restore()
		return fmt.Errorf("fsconform: setresuid: %w", e)
	}
	err := do()
	restore()
	return err
}

// restore gives the locked thread root's credentials back and unlocks
// it; if that fails the thread stays locked, and ends with its goroutine.
func restore() {
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 0, 0, 0); e != 0 {
		return
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, 0, 0, 0); e != 0 {
		return
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
		return
	}
	runtime.UnlockOSThread()
}
