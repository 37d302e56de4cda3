package dlm

import (
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Kernel is the kernel DLM as its control daemon drives it: the
// cluster's configuration in configfs, each lockspace's control files in
// sysfs. The real one is Sys; tests use a fake.
type Kernel interface {
	// Configure writes the cluster's settings (a fresh tree: any old one
	// is cleared first).
	Configure(cluster string, port int) error
	// SetComm makes node's comms entry with its address (local marks this
	// node's own, written last).
	SetComm(node int, addr netip.Addr, local bool) error
	// RemoveComm drops node's comms entry: its connections close, and a
	// failed node's journals become recoverable.
	RemoveComm(node int) error
	// Lockspaces lists the lockspaces the kernel has.
	Lockspaces() ([]string, error)
	// Stop stops lockspace ls (control=0): no lock is granted until the
	// next start.
	Stop(ls string) error
	// Start writes ls's members (renewing those in renew: left and came
	// back since the last start), the global id on its first start, and
	// starts it (control=1).
	Start(ls string, members, renew []int, first bool) error
	// EventDone answers the kernel's join or leave of ls (0 success, or a
	// negative errno).
	EventDone(ls string, result int) error
	// RemoveSpace drops ls's member list after this node left it.
	RemoveSpace(ls string) error
	// AckWithdraw lets a withdrawing GFS2 filesystem (lock table) go on.
	AckWithdraw(table string) error
}

// The kernel's paths.
const (
	configRoot = "/sys/kernel/config"
	sysfsRoot  = "/sys/kernel/dlm"
	gfs2Root   = "/sys/fs/gfs2"
	// MonitorDevice is held open for the daemon's life: when it closes,
	// the kernel stops every lockspace (no daemon, no recovery).
	MonitorDevice = "/dev/dlm-monitor"
)

// Sys is the running kernel's DLM.
type Sys struct {
	// Root prefixes every path ("" on a node; a directory in tests).
	Root string
}

func (k Sys) cluster() string { return filepath.Join(k.Root, configRoot, "dlm", "cluster") }

// LockspaceID is the id every node gives lockspace name in its messages:
// the CRC-32 (IEEE) of "dlm:ls:<name>" and its NUL, as dlm_controld
// computes it, so Locus nodes and the kernel agree without a word.
func LockspaceID(name string) uint32 {
	return crc32.ChecksumIEEE([]byte("dlm:ls:" + name + "\x00"))
}

// write writes value to a configfs or sysfs file, naming the file in the
// error.
func write(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0); err != nil {
		return fmt.Errorf("dlm: write %q to %s: %w", value, path, err)
	}
	return nil
}

// Configure implements Kernel.
func (k Sys) Configure(cluster string, port int) error {
	c := k.cluster()
	if _, err := os.Stat(filepath.Join(k.Root, configRoot, "dlm")); err != nil {
		return fmt.Errorf("dlm: no DLM in configfs (%w): is the dlm module loaded and configfs mounted on %s?", err, configRoot)
	}
	if err := k.clear(); err != nil {
		return err
	}
	if err := os.Mkdir(c, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("dlm: %w", err)
	}
	for _, w := range [][2]string{
		{"protocol", "0"}, // TCP: the DLM and SCTP do not get on
		{"tcp_port", strconv.Itoa(port)},
		// GFS2 needs the recovery callbacks (else its mount waits
		// forever for a journal id).
		{"recover_callbacks", "1"},
		// Verbatim: a newline would become part of the name.
		{"cluster_name", cluster},
	} {
		if err := write(filepath.Join(c, w[0]), w[1]); err != nil {
			return err
		}
	}
	return nil
}

// clear removes an old configuration (member lists, comms, the cluster).
func (k Sys) clear() error {
	c := k.cluster()
	spaces, _ := filepath.Glob(filepath.Join(c, "spaces", "*"))
	for _, s := range spaces {
		nodes, _ := filepath.Glob(filepath.Join(s, "nodes", "*"))
		for _, n := range nodes {
			os.Remove(n)
		}
		os.Remove(s)
	}
	comms, _ := filepath.Glob(filepath.Join(c, "comms", "*"))
	for _, n := range comms {
		os.Remove(n)
	}
	if err := os.Remove(c); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("dlm: clear the old configuration: %w", err)
	}
	return nil
}

// sockaddr is the 128-byte struct sockaddr_storage of a comms address,
// port 0 (the kernel compares ports too, and zeroes an inbound peer's).
func sockaddr(a netip.Addr) []byte {
	b := make([]byte, 128)
	if a.Is4() {
		b[0] = unix.AF_INET // host order: little-endian on the architectures Locus builds
		ip := a.As4()
		copy(b[4:], ip[:])
	} else {
		b[0] = unix.AF_INET6
		ip := a.As16()
		copy(b[8:], ip[:])
	}
	return b
}

// SetComm implements Kernel.
func (k Sys) SetComm(node int, addr netip.Addr, local bool) error {
	d := filepath.Join(k.cluster(), "comms", strconv.Itoa(node))
	if err := os.Mkdir(d, 0o755); err != nil {
		return fmt.Errorf("dlm: comms entry of node %d: %w", node, err)
	}
	if err := write(filepath.Join(d, "nodeid"), strconv.Itoa(node)); err != nil {
		return err
	}
	// One write of exactly 128 bytes, after nodeid.
	f, err := os.OpenFile(filepath.Join(d, "addr"), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("dlm: comms address of node %d: %w", node, err)
	}
	_, err = f.Write(sockaddr(addr.Unmap()))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("dlm: comms address %s of node %d: %w", addr, node, err)
	}
	if local {
		return write(filepath.Join(d, "local"), "1")
	}
	return nil
}

// RemoveComm implements Kernel.
func (k Sys) RemoveComm(node int) error {
	err := os.Remove(filepath.Join(k.cluster(), "comms", strconv.Itoa(node)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("dlm: remove the comms entry of node %d: %w", node, err)
	}
	return nil
}

// Lockspaces implements Kernel.
func (k Sys) Lockspaces() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(k.Root, sysfsRoot))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dlm: %w", err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out, nil
}

func (k Sys) ls(ls, file string) string { return filepath.Join(k.Root, sysfsRoot, ls, file) }

// Stop implements Kernel.
func (k Sys) Stop(ls string) error { return write(k.ls(ls, "control"), "0") }

// Start implements Kernel.
func (k Sys) Start(ls string, members, renew []int, first bool) error {
	nodes := filepath.Join(k.cluster(), "spaces", ls, "nodes")
	if err := os.MkdirAll(nodes, 0o755); err != nil {
		return fmt.Errorf("dlm: member list of %s: %w", ls, err)
	}
	want := map[string]bool{}
	for _, n := range members {
		want[strconv.Itoa(n)] = true
	}
	renewed := map[string]bool{}
	for _, n := range renew {
		renewed[strconv.Itoa(n)] = true
	}
	old, err := os.ReadDir(nodes)
	if err != nil {
		return fmt.Errorf("dlm: member list of %s: %w", ls, err)
	}
	have := map[string]bool{}
	for _, e := range old {
		// A member that left, or left and came back (its new entry
		// tells the kernel to purge its old locks).
		if !want[e.Name()] || renewed[e.Name()] {
			if err := os.Remove(filepath.Join(nodes, e.Name())); err != nil {
				return fmt.Errorf("dlm: drop member %s of %s: %w", e.Name(), ls, err)
			}
			continue
		}
		have[e.Name()] = true
	}
	for _, n := range members {
		id := strconv.Itoa(n)
		if have[id] {
			continue
		}
		if err := os.Mkdir(filepath.Join(nodes, id), 0o755); err != nil {
			return fmt.Errorf("dlm: member %d of %s: %w", n, ls, err)
		}
		if err := write(filepath.Join(nodes, id, "nodeid"), id); err != nil {
			return err
		}
	}
	if first {
		// Before the first start, which begins recovery.
		if err := write(k.ls(ls, "id"), strconv.FormatUint(uint64(LockspaceID(ls)), 10)); err != nil {
			return err
		}
	}
	return write(k.ls(ls, "control"), "1")
}

// EventDone implements Kernel.
func (k Sys) EventDone(ls string, result int) error {
	return write(k.ls(ls, "event_done"), strconv.Itoa(result))
}

// RemoveSpace implements Kernel.
func (k Sys) RemoveSpace(ls string) error {
	s := filepath.Join(k.cluster(), "spaces", ls)
	nodes, _ := filepath.Glob(filepath.Join(s, "nodes", "*"))
	for _, n := range nodes {
		if err := os.Remove(n); err != nil {
			return fmt.Errorf("dlm: %w", err)
		}
	}
	if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("dlm: %w", err)
	}
	return nil
}

// AckWithdraw implements Kernel.
func (k Sys) AckWithdraw(table string) error {
	if strings.ContainsAny(table, "/") || table == "" || table == "." || table == ".." {
		return fmt.Errorf("dlm: withdraw of lock table %q: not a table name", table)
	}
	return write(filepath.Join(k.Root, gfs2Root, table, "lock_module", "withdraw"), "1")
}

// OpenMonitor opens the monitor device the daemon holds for its life.
func OpenMonitor() (*os.File, error) {
	f, err := os.OpenFile(MonitorDevice, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("dlm: monitor device: %w", err)
	}
	return f, nil
}
