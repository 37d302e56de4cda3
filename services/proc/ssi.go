package proc

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// The single-system view for one command: a private mount namespace
// in which the clusterwide /proc covers /proc, so that unmodified tools
// (procps ps and top, u-root's ps) see every process of the cluster.
// Never for a whole session: the dynamic loader and most programs read
// /proc/self/exe, fd and maps, which only a process's own node has.

// SSICommand is cmd (argv) run as the single-system view sees it: the
// child is helper (this binary, with helperArgs before the clusterwide
// /proc's directory and argv), started in a new mount namespace; for a
// user other than root also in a user namespace of its own uid, where
// it may mount.
func SSICommand(helper string, helperArgs []string, procDir string, argv []string) *exec.Cmd {
	args := append(append(append([]string{}, helperArgs...), procDir, "--"), argv...)
	cmd := exec.Command(helper, args...)
	attr := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	if uid, gid := os.Getuid(), os.Getgid(); uid != 0 {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
		attr.GidMappingsEnableSetgroups = false
		// The user stays who it is inside; to mount, the helper keeps
		// CAP_SYS_ADMIN (of its own namespace only) across its exec, and
		// drops it before the command's.
		attr.AmbientCaps = []uintptr{unix.CAP_SYS_ADMIN}
	}
	cmd.SysProcAttr = attr
	return cmd
}

// EnterSSI is the helper's part, in its new mount namespace: it covers
// /proc with procDir and becomes argv.
func EnterSSI(procDir string, argv []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("ssi: no command")
	}
	// In a user namespace the mounts are already slaves of the node's:
	// nothing done here reaches back.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil && os.Getuid() == 0 {
		return fmt.Errorf("ssi: make the mount namespace private: %w", err)
	}
	if err := unix.Mount(procDir, "/proc", "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("ssi: bind the clusterwide /proc (%s) over /proc: %w", procDir, err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("ssi: drop the helper's capabilities: %w", err)
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("ssi: %w", err)
	}
	return syscall.Exec(path, argv, os.Environ())
}
