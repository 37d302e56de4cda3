package installer

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// InstallOptions say where to write the install image.
type InstallOptions struct {
	// Image is the raw install disk (out/disk.img).
	Image string
	// Target is a block device (/dev/sdX) or a disk image file.
	Target string
	// MountsFile is /proc/self/mounts (a test may point elsewhere).
	MountsFile string
	Progress   io.Writer
}

// Install writes the install image onto a disk, for putting node 1 on
// real hardware (from a USB stick, say). It refuses a target that is
// mounted (or has a mounted partition) or is smaller than the image.
func Install(o InstallOptions) error {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.MountsFile == "" {
		o.MountsFile = "/proc/self/mounts"
	}
	src, err := os.Open(o.Image)
	if err != nil {
		return fmt.Errorf("installer: install image: %w (run `locus image build`)", err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	if err := notMounted(o.Target, o.MountsFile); err != nil {
		return err
	}
	dst, err := os.OpenFile(o.Target, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("installer: open %s: %w", o.Target, err)
	}
	defer dst.Close()
	size, err := dst.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("installer: size of %s: %w", o.Target, err)
	}
	if size < st.Size() {
		return fmt.Errorf("installer: %s holds %d MiB, the image needs %d MiB", o.Target, size>>20, st.Size()>>20)
	}
	if _, err := dst.Seek(0, io.SeekStart); err != nil {
		return err
	}
	fmt.Fprintf(o.Progress, "install: writing %s (%d MiB) to %s\n", filepath.Base(o.Image), st.Size()>>20, o.Target)
	buf := make([]byte, 4<<20)
	var done int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return fmt.Errorf("installer: write %s at %d MiB: %w", o.Target, done>>20, err)
			}
			done += int64(n)
			if done%(64<<20) == 0 {
				fmt.Fprintf(o.Progress, "install: %d/%d MiB\n", done>>20, st.Size()>>20)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("installer: read image: %w", rerr)
		}
	}
	if err := dst.Sync(); err != nil {
		return fmt.Errorf("installer: sync %s: %w", o.Target, err)
	}
	fmt.Fprintf(o.Progress, "install: %d MiB written; the GPT backup header is at the image's end, so grow partitions with a partition tool if the disk is larger\n", done>>20)
	return nil
}

// notMounted refuses a target that is, or has a partition that is,
// mounted.
func notMounted(target, mountsFile string) error {
	real, err := filepath.EvalSymlinks(target)
	if err != nil {
		return fmt.Errorf("installer: %s: %w", target, err)
	}
	f, err := os.Open(mountsFile)
	if err != nil {
		return fmt.Errorf("installer: read mounts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || !strings.HasPrefix(fields[0], "/") {
			continue
		}
		dev := fields[0]
		if r, err := filepath.EvalSymlinks(dev); err == nil {
			dev = r
		}
		// /dev/sda1 and /dev/nvme0n1p1 are partitions of /dev/sda and /dev/nvme0n1.
		if dev == real || (strings.HasPrefix(dev, real) && strings.TrimLeft(strings.TrimPrefix(strings.TrimPrefix(dev, real), "p"), "0123456789") == "") {
			return fmt.Errorf("installer: %s is mounted (%s on %s): unmount it first", target, fields[0], fields[1])
		}
	}
	return sc.Err()
}
