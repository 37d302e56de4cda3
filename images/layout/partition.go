package layout

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// WaitPartition finds the block device whose GPT partition name is name,
// waiting for the disk's driver to probe it.
func WaitPartition(ctx context.Context, name string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		if dev := FindPartition(name); dev != "" {
			return dev, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no partition named %q appeared within %s (booted from the install disk?)", name, wait)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// FindPartition returns the device of the partition whose GPT name is
// name, or "" if no disk has one.
func FindPartition(name string) string {
	uevents, _ := filepath.Glob("/sys/class/block/*/uevent")
	for _, u := range uevents {
		b, err := os.ReadFile(u)
		if err != nil {
			continue
		}
		var dev, part string
		var major, minor uint32
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), "=")
			switch k {
			case "DEVNAME":
				dev = v
			case "PARTNAME":
				part = v
			case "MAJOR":
				fmt.Sscan(v, &major)
			case "MINOR":
				fmt.Sscan(v, &minor)
			}
		}
		if part != name || dev == "" {
			continue
		}
		path := "/dev/" + dev
		if _, err := os.Stat(path); err != nil {
			// devtmpfs has not made the node yet: make it.
			if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(major, minor))); err != nil {
				return ""
			}
		}
		return path
	}
	return ""
}
