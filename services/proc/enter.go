package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/locus-ssi/locus/services/proc/standin"
)

// EnterRootCommand is the subcommand of the daemon's binary that starts
// a job in the node's root: `locus job-enter ROOT DIR UID GID GROUPS
// PATH -- ARGV...` (GROUPS comma-separated, "-" for none). It runs as
// root in the daemon's own root, chroots into ROOT, becomes the user
// and execs PATH with ARGV in DIR; the job's stdio, session and
// environment are already its.
const EnterRootCommand = "job-enter"

func enterRootArgs(root, dir string, u standin.User, path string, argv []string) []string {
	groups := "-"
	if len(u.Groups) > 0 {
		gs := make([]string, len(u.Groups))
		for i, g := range u.Groups {
			gs[i] = strconv.FormatUint(uint64(g), 10)
		}
		groups = strings.Join(gs, ",")
	}
	return append([]string{EnterRootCommand, root, dir, strconv.FormatUint(uint64(u.UID), 10), strconv.FormatUint(uint64(u.GID), 10), groups, path, "--"}, argv...)
}

// EnterRoot is the helper's part: args are what follows EnterRootCommand.
// It returns only on failure, having written nothing: the caller says
// why on the job's stderr and exits 126.
func EnterRoot(args []string) error {
	if len(args) < 8 || args[6] != "--" {
		return fmt.Errorf("%s: want ROOT DIR UID GID GROUPS PATH -- ARGV..., got %q", EnterRootCommand, args)
	}
	root, dir, path, argv := args[0], args[1], args[5], args[7:]
	uid, err1 := strconv.ParseUint(args[2], 10, 32)
	gid, err2 := strconv.ParseUint(args[3], 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("%s: uid or gid: %w", EnterRootCommand, err)
	}
	var groups []int
	if args[4] != "-" {
		for _, g := range strings.Split(args[4], ",") {
			n, err := strconv.ParseUint(g, 10, 32)
			if err != nil {
				return fmt.Errorf("%s: group %q: %w", EnterRootCommand, g, err)
			}
			groups = append(groups, int(n))
		}
	}
	if err := syscall.Chroot(root); err != nil {
		return fmt.Errorf("enter the node's root %s: %w", root, err)
	}
	if err := syscall.Chdir("/"); err != nil {
		return fmt.Errorf("enter the node's root %s: %w", root, err)
	}
	// syscall's, not x/sys/unix's: these change every thread of the
	// process, so whichever thread execs is the user's.
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("groups %v: %w", groups, err)
	}
	if err := syscall.Setgid(int(gid)); err != nil {
		return fmt.Errorf("gid %d: %w", gid, err)
	}
	if err := syscall.Setuid(int(uid)); err != nil {
		return fmt.Errorf("uid %d: %w", uid, err)
	}
	if err := syscall.Chdir(dir); err != nil {
		syscall.Chdir("/") // as the runner said it would, when dir is not there for the user
	}
	err := syscall.Exec(path, argv, os.Environ())
	return &os.PathError{Op: "exec", Path: path, Err: err}
}

// RootCommand is a command that runs argv as root in the node's root
// (root "": the daemon's own), argv[0] looked up on search there, in
// directory "/": what the HA service starts instances and OCF agents
// with. helper is the daemon's binary ("" : this executable).
func RootCommand(root, helper string, argv []string, search string) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, errors.New("no command")
	}
	rv := openRoot(root)
	defer rv.close()
	path, err := lookPath(rv, argv[0], search, "/")
	if err != nil {
		return nil, fmt.Errorf("%s in the node's root %q: %w", argv[0], root, err)
	}
	if root == "" || root == "/" {
		cmd := exec.Command(path, argv[1:]...)
		cmd.Args[0], cmd.Dir = argv[0], "/"
		return cmd, nil
	}
	if helper == "" {
		if helper, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("no helper to enter the node's root: %w", err)
		}
	}
	args := slices.Clone(argv)
	if fi, err := rv.stat(path, false); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		args[0] = path // a multi-call binary finds what to be by argv[0]
	}
	cmd := exec.Command(helper, enterRootArgs(root, "/", standin.User{}, path, args)...)
	cmd.Dir = "/"
	return cmd, nil
}
