package pid1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/internal/gfs2"
)

// gfs2Filled marks a gfs2 root that holds the cluster's root content.
const gfs2Filled = ".locus-root"

// mountGFS2 mounts the cluster's GFS2 root on dir: the disk with the
// cluster's lock table (a disk made for another cluster is refused),
// mounted by this node itself, the kernel's DLM (this node's daemon,
// driven by the membership) keeping every node's caches coherent. The
// mount returns once the daemon has this node in the filesystem's
// lockspace, which needs the node admitted first. At the cluster's first
// boot the init node fills it from its install disk's root partition;
// the others wait until it is filled.
func (n *Node) mountGFS2(ctx context.Context, dir string) (string, error) {
	table := n.spec.GFS2Table()
	var dev string
	for deadline := time.Now().Add(time.Minute); ; {
		d, err := gfs2.Find("/sys/block", "/dev", table)
		if err == nil {
			dev = d
			break
		}
		if strings.Contains(err.Error(), "found") || time.Now().After(deadline) {
			return "", fmt.Errorf("root: %w", err) // another cluster's disk is never mounted
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
	// Without localflocks: fcntl locks are clusterwide (this node's
	// daemon passes them to the master), flock ones are GFS2's own.
	start := time.Now()
	if err := retryMount(ctx, n, mount{dev, dir, "gfs2", unix.MS_NOATIME, ""}, 5*time.Minute); err != nil {
		return "", err
	}
	what := fmt.Sprintf("gfs2 %s (lock table %s, mounted in %s)", dev, table, time.Since(start).Round(time.Millisecond))
	if _, err := os.Stat(filepath.Join(dir, gfs2Filled)); err == nil {
		return what, nil
	}
	if n.cmdline.Role == "init" {
		start := time.Now()
		files, err := copyTree(diskRootMount, dir, map[string]bool{layout.DiskNetbootDir: true, "lost+found": true})
		if err != nil {
			return "", fmt.Errorf("root: fill the gfs2 root from %s: %w", diskRootMount, err)
		}
		if err := os.WriteFile(filepath.Join(dir, gfs2Filled), []byte(n.spec.Cluster.Name+"\n"), 0o644); err != nil {
			return "", fmt.Errorf("root: %w", err)
		}
		unix.Sync()
		fmt.Fprintf(n.console, "locus-init: first boot: the gfs2 root filled from the install disk (%d files in %s)\n", files, time.Since(start).Round(time.Millisecond))
		return what + ", filled at this first boot", nil
	}
	fmt.Fprintf(n.console, "locus-init: the gfs2 root is empty: waiting for node 1 to fill it (the cluster's first boot)\n")
	for deadline := time.Now().Add(10 * time.Minute); ; {
		if _, err := os.Stat(filepath.Join(dir, gfs2Filled)); err == nil {
			return what, nil
		}
		if time.Now().After(deadline) {
			return "", errors.New("root: the gfs2 root was not filled within 10 minutes (is node 1 up?)")
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// copyTree copies the tree at src into dst (which exists) with owners,
// modes and times, skipping the top-level names in skip; it returns how
// many entries it copied.
func copyTree(src, dst string, skip map[string]bool) (int, error) {
	count := 0
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if rel == "." {
			return nil
		}
		if skip[rel] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		mode := st.Mode & 0o7777
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if err := os.Mkdir(target, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
				return err
			}
		case unix.S_IFREG:
			if err := copyFile(path, target, os.O_TRUNC, 0o600); err != nil {
				return err
			}
		case unix.S_IFLNK:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			os.Remove(target)
			if err := os.Symlink(link, target); err != nil {
				return err
			}
		default: // devices, fifos, sockets
			os.Remove(target)
			if err := unix.Mknod(target, st.Mode, int(st.Rdev)); err != nil {
				return err
			}
		}
		if err := unix.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			if err := unix.Chmod(target, mode); err != nil {
				return err
			}
		}
		ts := []unix.Timespec{st.Atim, st.Mtim}
		unix.UtimesNanoAt(unix.AT_FDCWD, target, ts, unix.AT_SYMLINK_NOFOLLOW)
		count++
		return nil
	})
	return count, err
}

// copyFile copies src's contents to dst, created with perm (flag adds
// O_TRUNC or O_EXCL).
func copyFile(src, dst string, flag int, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|flag, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
