package dlm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/locus-ssi/locus/services/dlm/lockdev"
)

// DefaultLockspace is the lockspace every node joins for applications'
// locks (`locus lock`): any user may lock in it, as anyone may flock a
// file in /tmp.
const DefaultLockspace = "locus"

// Daemon is the control daemon on a real node: the kernel's handles and
// the Service.
type Daemon struct {
	*Service
	uevents *ueventSocket
	monitor *os.File
	plocks  *os.File // the kernel's POSIX lock requests (GFS2 without localflocks)
}

// Start brings the control daemon up: configfs and debugfs mounted if
// they are not, the uevent socket open before anything can make a
// lockspace, the monitor device held, the cluster configured. cfg.Kernel
// and cfg.Boot default to the running kernel's.
func Start(cfg Config) (*Daemon, error) {
	if cfg.Kernel == nil {
		cfg.Kernel = Sys{}
	}
	if cfg.Boot == "" {
		b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
		if err != nil {
			return nil, fmt.Errorf("dlm: this boot's id: %w", err)
		}
		cfg.Boot = strings.TrimSpace(string(b))
	}
	if cfg.DevDir == "" {
		cfg.DevDir = lockdev.DevDir
	}
	if err := mountIfMissing("configfs", configRoot, filepath.Join(configRoot, "dlm")); err != nil {
		return nil, err
	}
	if err := mountIfMissing("debugfs", "/sys/kernel/debug", DebugDir); err != nil {
		cfg.Log.Warn("dlm: no debug view (locus lock ls shows nothing)", "err", err)
	}
	uev, err := openUevents()
	if err != nil {
		return nil, err
	}
	mon, err := OpenMonitor()
	if err != nil {
		uev.Close()
		return nil, err
	}
	s, err := New(cfg)
	if err != nil {
		uev.Close()
		mon.Close()
		return nil, err
	}
	s.LinkMiscDevices()
	pl, err := os.OpenFile(PlockDevice, os.O_RDWR, 0)
	if err != nil {
		uev.Close()
		mon.Close()
		return nil, fmt.Errorf("dlm: %w", err)
	}
	return &Daemon{Service: s, uevents: uev, monitor: mon, plocks: pl}, nil
}

// mountIfMissing mounts fstype on dir unless want exists already.
func mountIfMissing(fstype, dir, want string) error {
	if _, err := os.Stat(want); err == nil {
		return nil
	}
	if err := unix.Mount("none", dir, fstype, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("dlm: mount %s on %s: %w", fstype, dir, err)
	}
	if _, err := os.Stat(want); err != nil {
		return fmt.Errorf("dlm: %s: %w (is the dlm module loaded?)", want, err)
	}
	return nil
}

// Run serves until ctx ends, joining the default lockspace once this
// node is a member; then it lets go of the kernel.
func (d *Daemon) Run(ctx context.Context) {
	events := make(chan Uevent, 64)
	go d.readUevents(events) // ends when the socket is closed
	runCtx, stopRun := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); d.Service.Run(runCtx, events) }()
	served := make(chan struct{})
	go func() { defer close(served); d.servePlocks(runCtx, d.plocks) }()
	joined := make(chan struct{})
	go func() { defer close(joined); d.joinDefault(ctx) }()
	<-ctx.Done()
	// The default lockspace is not left through the kernel here: that
	// write blocks, uninterruptibly, until a master runs the leave, and
	// in a whole-cluster shutdown every node leaves at once, the master
	// too. Closing the monitor stops it on this node; the others drop
	// this node once the membership has it Down (a clean shutdown: no
	// fence). A GFS2 root is left before, by its unmount.
	d.beginShutdown()
	select {
	case <-joined:
	case <-time.After(10 * time.Second):
	}
	stopRun()
	<-ran
	d.plocks.Close()
	<-served
	d.uevents.Close()
	d.monitor.Close()
}

// readUevents passes the DLM's, GFS2's and the misc devices' uevents on
// until the socket closes.
func (d *Daemon) readUevents(out chan<- Uevent) {
	buf := make([]byte, 8192)
	for {
		n, err := d.uevents.read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				d.log.Error("dlm: uevents", "err", err)
			}
			return
		}
		u, err := ParseUevent(buf[:n])
		if err != nil {
			continue // udev's own broadcasts, and noise
		}
		switch u.Subsystem {
		case "dlm", "gfs2", "misc":
			out <- u
		}
	}
}

// joinDefault makes the default lockspace once this node is a cluster
// member (the kernel call returns when the cluster has it in), and lets
// every user open it.
func (d *Daemon) joinDefault(ctx context.Context) {
	for {
		if memberOf(d.cfg.Status(), d.cfg.Node) {
			done := make(chan error, 1)
			go func() { done <- lockdev.Create(DefaultLockspace) }() // the kernel call cannot be interrupted
			select {
			case err := <-done:
				if err == nil {
					if err := os.Chmod(lockdev.DevicePath(DefaultLockspace), 0o666); err != nil {
						d.log.Error("dlm: open the default lockspace to users", "err", err)
					}
					d.log.Info("dlm: default lockspace joined", "lockspace", DefaultLockspace)
					return
				}
				d.log.Error("dlm: default lockspace", "err", err)
			case <-ctx.Done():
				return // the call ends as the shutdown answers the join
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
