package pid1

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/internal/fusefd"
	"github.com/locus-ssi/locus/services/cfs"
	"github.com/locus-ssi/locus/services/proc"
)

// sysroot is where a client node mounts the shared root before init
// moves into it.
const sysroot = "/sysroot"

// mountRoot sets up the node's root. With the initramfs root, every node
// runs from its own copy of the image; /cluster/node<N> is this node's
// private directory. With a shared root, init mounts it, gives it the
// node-private mounts and switches into it: from then on all that PID 1
// starts (services, the console shell, the exec channel's commands) runs
// chrooted in the shared root. PID 1 itself and the daemons of the join
// phase (locusd, netboot) keep the initramfs as their root, so they are
// restarted from it and never wait on the shared root's server.
func (n *Node) mountRoot(ctx context.Context) error {
	if !n.spec.Root.Shared() {
		dir := filepath.Join("/cluster", fmt.Sprintf("node%d", n.Number()))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := mountAll([]mount{{"tmpfs", dir, "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"}}); err != nil {
			return err
		}
		go n.mountClusterProc(context.WithoutCancel(ctx), "/") // outlives the phase; ends once mounted, or given up
		return nil
	}
	start := time.Now()
	dir, what, err := n.mountShared(ctx)
	if err != nil {
		return err
	}
	mounted := time.Now()
	if err := n.nodePrivate(dir); err != nil {
		return fmt.Errorf("root: node-private mounts on %s: %w", dir, err)
	}
	n.mu.Lock()
	n.root = dir
	n.mu.Unlock()
	n.writeNodeFile() // locusd starts the node's jobs there from now on
	n.log.Info("shared root", "source", n.spec.Root.Source, "from", what, "took", time.Since(start).Round(time.Millisecond),
		"mount", mounted.Sub(start).Round(time.Millisecond), "private", time.Since(mounted).Round(time.Millisecond))
	go n.mountClusterProc(context.WithoutCancel(ctx), dir) // outlives the phase; ends once mounted, or given up
	return nil
}

// mountClusterProc mounts the clusterwide /proc on root's /cluster/proc
// and hands it to locusd's process service, once the service listens
// (waiting a minute at most). Without it (no fuse module, no daemon) the
// node runs all the same, with a warning: the process verbs do not need
// it, only tools that read /proc do.
func (n *Node) mountClusterProc(ctx context.Context, root string) {
	dir := filepath.Join(root, proc.ProcMount)
	for wait := time.Minute; ; wait -= 500 * time.Millisecond {
		if _, err := os.Stat(proc.ProcSocket); err == nil || wait <= 0 {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
	err := func() error {
		if _, err := os.Stat(proc.ProcSocket); err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o555); err != nil {
			return err
		}
		dev, err := fusefd.Mount("locus", dir, "fuse.locus-proc", proc.ProcMountOptions)
		if err != nil {
			return err
		}
		defer dev.Close() // locusd has its own copy
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := fusefd.HandOff(hctx, proc.ProcSocket, dev); err != nil {
			unix.Unmount(dir, unix.MNT_DETACH)
			return err
		}
		return nil
	}()
	if err != nil {
		n.log.Warn("root: no clusterwide /proc on "+proc.ProcMount, "err", err)
		return
	}
	n.log.Info("root: the clusterwide /proc is on " + proc.ProcMount)
}

// mountShared mounts the shared root and returns where, and what it is.
func (n *Node) mountShared(ctx context.Context) (string, string, error) {
	r := n.spec.Root
	switch r.Source {
	case clusterspec.RootCFS:
		if n.cmdline.Role == "init" {
			// The CFS server's node uses the filesystem it serves
			// directly: the same page cache the server reads and writes.
			return diskRootMount, "local " + n.rootDevice(), nil
		}
		server, moves, err := n.spec.CFSService()
		if err != nil {
			return "", "", err
		}
		// The kernel mounts the shared root over FUSE, served by this
		// node's relay (locusd), which forwards to the CFS server over
		// 9P2000.L and, when the service moves to the standby, dials its
		// address again (the kernel's own 9P client never reconnects,
		// and keeps times to the second only).
		what := fmt.Sprintf("cfs %s:%d through the relay (FUSE)", server.Addr(), cfs.DefaultPort)
		if moves {
			what += ", failing over to node " + strconv.Itoa(r.CFS.Standby)
		}
		return sysroot, what, mountFUSE(ctx, n, sysroot, 3*time.Minute)
	case clusterspec.RootGFS2:
		what, err := n.mountGFS2(ctx, sysroot)
		return sysroot, what, err
	case clusterspec.RootNFS:
		src := r.NFS.Server + ":" + r.NFS.Export
		opts := "addr=" + r.NFS.Server
		if r.NFS.Options != "" {
			opts += "," + r.NFS.Options
		}
		return sysroot, "nfs " + src, retryMount(ctx, n, mount{src, sysroot, "nfs", 0, opts}, 2*time.Minute)
	case clusterspec.RootMount:
		return sysroot, r.FSType + " " + r.Device, retryMount(ctx, n, mount{r.Device, sysroot, r.FSType, 0, r.Options}, 2*time.Minute)
	}
	return "", "", fmt.Errorf("root source %q is not supported by this init", r.Source)
}

func (n *Node) rootDevice() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rootDev
}

// mountFUSE mounts the shared root over FUSE on dir and hands the
// connection to the relay in locusd, trying again while the relay is not
// there yet, until wait has passed. The relay answers once it serves:
// the CFS server admits this node once the master has committed its
// join.
func mountFUSE(ctx context.Context, n *Node, dir string, wait time.Duration) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	said := time.Time{}
	for attempt := 1; ; attempt++ {
		err := handOff(ctx, dir)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("root: %w (tried %d times in %s)", err, attempt, wait)
		}
		if time.Since(said) >= 10*time.Second {
			n.log.Info("root: waiting for the relay to serve the shared root", "err", err)
			said = time.Now()
		}
		// While locusd starts, its socket is looked for every 50 ms
		// (it comes within a second of the join, and the boot waits
		// on it); a relay that is there but failed the hand-off is
		// tried again after a second.
		again := time.Second
		if errors.Is(err, fs.ErrNotExist) {
			again = 50 * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(again):
		}
	}
}

// handOff makes one FUSE mount on dir and gives it to the relay; if the
// relay does not take it, the mount goes again.
func handOff(ctx context.Context, dir string) error {
	// Only once the relay listens: until it serves, any access to dir
	// would wait.
	if _, err := os.Stat(cfs.FUSESocket); err != nil {
		return err
	}
	dev, err := cfs.MountFUSE(dir)
	if err != nil {
		return err
	}
	defer dev.Close() // the relay has its own copy
	if err := cfs.HandOff(ctx, cfs.FUSESocket, dev); err != nil {
		if uerr := unix.Unmount(dir, unix.MNT_DETACH); uerr != nil {
			return fmt.Errorf("%w; and unmount %s: %v", err, dir, uerr)
		}
		return err
	}
	return nil
}

// retryMount mounts m, trying again while the server is not there yet or
// not admitting this node, until wait has passed.
func retryMount(ctx context.Context, n *Node, m mount, wait time.Duration) error {
	if err := os.MkdirAll(m.target, 0o755); err != nil {
		return err
	}
	deadline := time.Now().Add(wait)
	for attempt := 1; ; attempt++ {
		err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("root: mount %s %s on %s: %w (tried %d times in %s)", m.fstype, m.source, m.target, err, attempt, wait)
		}
		if attempt == 1 || attempt%10 == 0 {
			n.log.Info("root: waiting for the shared root", "fstype", m.fstype, "source", m.source, "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// nodePrivate gives the shared root at dir this node's own mounts: /proc,
// /sys, /dev and /run (the same ones init has; /run holds what init tells
// locusd), a fresh /tmp, and the spec's private paths, each bound from
// /cluster/node<N>/<path> on the shared root.
func (n *Node) nodePrivate(dir string) error {
	for _, p := range []string{"/proc", "/sys", "/dev", "/run"} {
		if err := bindMount(p, filepath.Join(dir, p), true); err != nil {
			return err
		}
	}
	if err := mountAll([]mount{{"tmpfs", filepath.Join(dir, "tmp"), "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"}}); err != nil {
		return err
	}
	own := filepath.Join(dir, "cluster", fmt.Sprintf("node%d", n.Number()))
	if err := os.MkdirAll(own, 0o755); err != nil {
		return err
	}
	for _, p := range n.spec.Root.Private {
		src, dst := filepath.Join(own, p), filepath.Join(dir, p)
		if err := n.privateCopy(p, src, dst); err != nil {
			return fmt.Errorf("private %s: %w", p, err)
		}
		if err := bindMount(src, dst, false); err != nil {
			return err
		}
	}
	return nil
}

// privateCopy makes this node's copy of a private path if it has none:
// the shared original's contents (a directory is made empty), or for
// /etc/hostname the node's hostname, written every boot.
func (n *Node) privateCopy(path, src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
		return err
	}
	if path == "/etc/hostname" {
		n.mu.Lock()
		host := n.hostname
		n.mu.Unlock()
		if err := os.WriteFile(src, []byte(host+"\n"), 0o644); err != nil {
			return err
		}
	}
	fi, err := os.Lstat(dst)
	if errors.Is(err, os.ErrNotExist) {
		// The shared root has no such path yet: make an empty file for
		// the bind mount to cover.
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, nil, 0o644); err != nil {
			return err
		}
		fi, err = os.Lstat(dst)
	}
	if err != nil {
		return err
	}
	if _, err := os.Lstat(src); err == nil {
		return nil
	}
	if fi.IsDir() {
		return os.Mkdir(src, fi.Mode().Perm())
	}
	return copyFile(dst, src, os.O_EXCL, fi.Mode().Perm())
}

// bindMount binds src on dst (recursively for a tree of mounts), making
// dst as a directory if it is missing.
func bindMount(src, dst string, recursive bool) error {
	if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
	}
	flags := uintptr(unix.MS_BIND)
	if recursive {
		flags |= unix.MS_REC
	}
	if err := unix.Mount(src, dst, "", flags, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, dst, err)
	}
	return nil
}

// cfsExportArgs are the daemon's flags that make the init node serve its
// root partition as the cluster's shared root.
func (n *Node) cfsExportArgs() []string {
	if n.spec.Root.Source != clusterspec.RootCFS || n.cmdline.Role != "init" {
		return nil
	}
	return []string{"--cfs-export", diskRootMount, "--cfs-listen", net.JoinHostPort("0.0.0.0", strconv.Itoa(cfs.DefaultPort))}
}

// sharedRootFlags are the init node's mount flags for its root partition:
// read-write when it is the cluster's shared root, else read-only (only
// the boot tree and spec are read from it).
func (n *Node) sharedRootFlags() uintptr {
	if n.spec.Root.Source == clusterspec.RootCFS {
		return 0
	}
	return unix.MS_RDONLY | unix.MS_NODEV | unix.MS_NOSUID
}

// Root is the directory the node's processes run chrooted in: the shared
// root once the root phase mounted it, else "" (the initramfs).
func (n *Node) Root() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.root
}
