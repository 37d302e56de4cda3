package pid1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/locus-ssi/locus/images/layout"
	"golang.org/x/sys/unix"
)

type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// mountPseudoFS mounts what everything else needs: /proc, /sys and /dev.
func mountPseudoFS() error {
	return mountAll([]mount{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=620,ptmxmode=666"},
	})
}

// mountRun gives the node its private /run and /tmp.
func (n *Node) mountRun(context.Context) error {
	return mountAll([]mount{
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	})
}

func mountAll(ms []mount) error {
	for _, m := range ms {
		if mounted(m.target) {
			continue
		}
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s %s on %s: %w", m.fstype, m.source, m.target, err)
		}
	}
	return nil
}

// mounted reports whether target is a mount point, from /proc/self/mounts
// when it is there.
func mounted(target string) bool {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 1 && f[1] == target {
			return true
		}
	}
	return false
}

// loadModules loads /etc/locus/modules in order (dependencies first, as the
// image builder wrote it). Compressed modules are decompressed here.
func (n *Node) loadModules(context.Context) error {
	release, err := os.ReadFile("/" + layout.KernelVerPath)
	if err != nil {
		return fmt.Errorf("kernel release: %w", err)
	}
	dir := filepath.Join("/lib/modules", strings.TrimSpace(string(release)))
	list, err := os.ReadFile("/" + layout.ModuleListPath)
	if err != nil {
		return fmt.Errorf("module list: %w", err)
	}
	loaded := 0
	for _, rel := range strings.Fields(string(list)) {
		path := filepath.Join(dir, rel)
		if err := loadModule(path); err != nil {
			// A module for hardware this machine lacks still loads; a
			// failure here is real (bad file, wrong kernel): say which.
			return fmt.Errorf("load %s: %w", layout.ModuleName(rel), err)
		}
		loaded++
	}
	n.log.Info("modules loaded", "count", loaded)
	return nil
}

func loadModule(path string) error {
	if strings.HasSuffix(path, ".ko") {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		err = unix.FinitModule(int(f.Fd()), "", 0)
		if errors.Is(err, unix.EEXIST) {
			return nil
		}
		return err
	}
	data, err := layout.ReadModule(path)
	if err != nil {
		return err
	}
	err = unix.InitModule(data, "")
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// seedEntropy waits until the kernel's random pool is initialised, so
// later TLS keys and DHCP transaction ids do not block or repeat. The
// virtio-rng module (early phase) and RDRAND feed it.
func (n *Node) seedEntropy(ctx context.Context) error {
	start := time.Now()
	buf := make([]byte, 16)
	for {
		_, err := unix.Getrandom(buf, unix.GRND_NONBLOCK)
		if err == nil {
			n.log.Info("entropy ready", "after", time.Since(start).Round(time.Millisecond))
			return nil
		}
		if !errors.Is(err, unix.EAGAIN) {
			return fmt.Errorf("getrandom: %w", err)
		}
		if time.Since(start) > 60*time.Second {
			return fmt.Errorf("kernel RNG not seeded after 60s (give the VM -device virtio-rng-pci or a CPU with RDRAND)")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
