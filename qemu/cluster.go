package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const qemuBinary = "qemu-system-x86_64"

// ClusterConfig describes a QEMU cluster; it is saved as cluster.json in
// the cluster's directory.
type ClusterConfig struct {
	Name string `json:"name"`
	// Dir holds the cluster's state: cluster.json, the supervisor's
	// socket and log, and one directory per node (serial.log, qemu.log,
	// qmp.sock, exec.sock).
	Dir string `json:"dir"`
	// Kernel and Initrd boot the nodes directly (no firmware, no PXE).
	Kernel   string       `json:"kernel"`
	Initrd   string       `json:"initrd"`
	Accel    string       `json:"accel"`
	MemoryMB int          `json:"memory_mb"`
	Segment  Segment      `json:"segment"`
	Nodes    []NodeConfig `json:"nodes"`
	// Netdev replaces the segment with another QEMU -netdev (id n0), e.g.
	// a tap device in a test's network namespace.
	Netdev string `json:"netdev,omitempty"`
	// Wrap prefixes the QEMU command, e.g. ip netns exec NS.
	Wrap []string `json:"wrap,omitempty"`
}

// Segment is the cluster's rootless L2 network: a UDP multicast group on
// the loopback interface that every VM's NIC joins.
type Segment struct {
	Group string `json:"group"`
	Port  int    `json:"port"`
}

// SegmentFor derives a segment from the cluster's directory, so two
// clusters on one host (different directories) never share a segment.
func SegmentFor(dir string) Segment {
	abs, _ := filepath.Abs(dir)
	h := sha256.Sum256([]byte(abs))
	return Segment{
		Group: fmt.Sprintf("230.%d.%d.%d", h[0], h[1], h[2]|1),
		Port:  20000 + int(h[3])<<8%30000 + int(h[4]),
	}
}

// MACFor is node n's MAC when the node table gives none: locally
// administered, derived from the cluster directory and the node number.
func MACFor(dir string, n int) string {
	abs, _ := filepath.Abs(dir)
	h := sha256.Sum256([]byte(abs))
	return fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", h[5], h[6], byte(n>>8), byte(n))
}

// Accel picks the accelerator: "kvm" when /dev/kvm opens and a probe VM
// actually runs under it (some hosts expose a /dev/kvm that cannot run a
// guest), else "tcg". want, if not "" or "auto", is used as is.
func Accel(want string) string {
	if want != "" && want != "auto" {
		return want
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg"
	}
	f.Close()
	if probeKVM() {
		return "kvm"
	}
	return "tcg"
}

// probeKVM says whether guests run under KVM: SeaBIOS prints its
// banner, and OVMF runs for 2 s without a KVM internal error (a nested
// KVM was seen to run SeaBIOS but stop OVMF at its first x87
// instruction with an emulation failure).
func probeKVM() bool {
	return probeKVMSeaBIOS() && probeKVMOVMF()
}

func probeKVMOVMF() bool {
	if _, err := os.Stat(ovmfCode); err != nil {
		return true // no UEFI guests here to fail
	}
	vars, err := os.CreateTemp("", "locus-kvm-probe-*.fd")
	if err != nil {
		return false
	}
	defer os.Remove(vars.Name())
	b, err := os.ReadFile(ovmfVars)
	if err != nil {
		vars.Close()
		return false
	}
	_, err = vars.Write(b)
	vars.Close()
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, qemuBinary, "-machine", "q35,accel=kvm", "-cpu", "host", "-m", "256",
		"-nodefaults", "-display", "none",
		"-drive", "if=pflash,format=raw,readonly=on,file="+ovmfCode, "-drive", "if=pflash,format=raw,file="+vars.Name())
	cmd.Stderr = &stderr
	cmd.Run() // killed at the deadline while it still runs
	if ctx.Err() == nil {
		return false // it ended on its own: it did not run
	}
	return !bytes.Contains(stderr.Bytes(), []byte("KVM internal error")) && !bytes.Contains(stderr.Bytes(), []byte("emulation failure"))
}

// probeKVMSeaBIOS boots SeaBIOS under KVM and waits up to 5 s for its
// banner on the debug console.
func probeKVMSeaBIOS() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemuBinary, "-machine", "q35,accel=kvm", "-cpu", "host", "-m", "64",
		"-nodefaults", "-display", "none", "-debugcon", "stdio", "-global", "isa-debugcon.iobase=0x402")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return false
	}
	if err := cmd.Start(); err != nil {
		return false
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 512)
	for len(buf) < cap(buf) {
		n, err := out.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if bytes.Contains(buf, []byte("SeaBIOS")) {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}

// Cluster is a set of VMs on one segment, run by this process.
type Cluster struct {
	cfg ClusterConfig

	// log receives the supervisor's records (fence requests).
	log *slog.Logger

	mu  sync.Mutex
	vms map[int]*VM

	// cred is the admin credential, to read the init node's registry.
	cred credential
}

// NewCluster checks cfg and prepares its directory.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.Dir == "" {
		return nil, errors.New("qemu: cluster needs a directory")
	}
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 512
	}
	if cfg.Segment.Group == "" {
		cfg.Segment = SegmentFor(cfg.Dir)
	}
	cfg.Accel = Accel(cfg.Accel)
	if cfg.Kernel != "" {
		for _, p := range []string{cfg.Kernel, cfg.Initrd} {
			if _, err := os.Stat(p); err != nil {
				return nil, fmt.Errorf("qemu: %w (run `locus image build` first)", err)
			}
		}
	}
	if len(filepath.Join(cfg.Dir, "node999", "exec.sock")) > 100 {
		return nil, fmt.Errorf("qemu: cluster directory %s is too long for unix sockets (keep it under ~80 characters)", cfg.Dir)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	return &Cluster{cfg: cfg, vms: map[int]*VM{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil
}

// Config returns the cluster's configuration, with defaults filled in.
func (c *Cluster) Config() ClusterConfig { return c.cfg }

// SaveConfig writes cluster.json.
func (c *Cluster) SaveConfig() error {
	b, _ := json.MarshalIndent(c.cfg, "", "  ")
	return os.WriteFile(filepath.Join(c.cfg.Dir, "cluster.json"), b, 0o644)
}

// LoadConfig reads a cluster's cluster.json.
func LoadConfig(dir string) (ClusterConfig, error) {
	var cfg ClusterConfig
	b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
	if err != nil {
		return cfg, fmt.Errorf("qemu: no cluster in %s: %w", dir, err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("qemu: %s/cluster.json: %w", dir, err)
	}
	return cfg, nil
}

func (c *Cluster) nodeConfig(n int) (NodeConfig, bool) {
	for _, nc := range c.cfg.Nodes {
		if nc.Number == n {
			return nc, true
		}
	}
	return NodeConfig{}, false
}

// NodeDir is node n's directory.
func (c *Cluster) NodeDir(n int) string { return filepath.Join(c.cfg.Dir, fmt.Sprintf("node%d", n)) }

// Start powers node n on. It fails if the node is running.
func (c *Cluster) Start(n int) (*VM, error) {
	nc, ok := c.nodeConfig(n)
	if !ok {
		return nil, fmt.Errorf("qemu: cluster %s has no node %d", c.cfg.Name, n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if vm := c.vms[n]; vm != nil {
		select {
		case <-vm.done:
		default:
			return nil, fmt.Errorf("qemu: node %d is already running (pid %d)", n, vm.Status().PID)
		}
	}
	if c.cfg.Netdev == "" {
		if err := checkSegment(c.cfg.Segment); err != nil {
			return nil, err
		}
	}
	vm, err := startVM(&c.cfg, nc, c.NodeDir(n))
	if err != nil {
		return nil, err
	}
	c.vms[n] = vm
	go c.serveFence(vm, c.log)
	return vm, nil
}

// StartAll powers every node on. Nodes that boot from a disk (the init
// node, which serves netboot) start first and the others only once those
// are Up, as a rack is powered on: a PXE ROM that finds no server gives up.
func (c *Cluster) StartAll() error {
	var first, rest []NodeConfig
	for _, nc := range c.cfg.Nodes {
		if nc.Disk != "" {
			first = append(first, nc)
		} else {
			rest = append(rest, nc)
		}
	}
	for _, nc := range first {
		if _, err := c.Start(nc.Number); err != nil {
			c.Stop()
			return err
		}
	}
	if len(first) > 0 && len(rest) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		for _, nc := range first {
			vm := c.VM(nc.Number)
			if _, _, err := vm.WaitEvent(ctx, 0, Reached); err != nil {
				select {
				case <-vm.Done():
					// QEMU itself failed (a busy port, a missing file): say so.
					if d := vm.Status().Detail; d != "" {
						err = errors.New(d)
					}
				default:
				}
				return fmt.Errorf("qemu: node %d (the init node) did not come up, so the others cannot PXE-boot: %w", nc.Number, err)
			}
		}
	}
	for i, nc := range rest {
		if _, err := c.Start(nc.Number); err != nil {
			c.Stop()
			return err
		}
		// Where the init node numbers nodes first come, first served
		// (no node table), start the next PXE node only once this one's
		// first DHCP request is in the registry, so VM N is node N.
		if nc.Boot == "pxe" && i < len(rest)-1 {
			c.waitRegistered(nc.MAC, 30*time.Second)
		}
	}
	return nil
}

// registry reads the init node's netboot registry through its forwarded
// API port; ok is false if there is no such port or it did not answer.
func (c *Cluster) registry(ctx context.Context) (contacts []registryContact, ok bool) {
	client, err := c.apiClient(ctx)
	if err != nil {
		return nil, false
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err = client.Get(rctx, "/v1/netboot/nodes", &contacts)
	if err != nil && strings.Contains(err.Error(), "certificate") {
		c.forgetCredential() // the init node has another CA now
	}
	return contacts, err == nil
}

// registryContact is what the harness reads of a netboot.Contact.
type registryContact struct {
	MAC    string    `json:"mac"`
	Node   int       `json:"node"`
	Client string    `json:"client"`
	Stage  string    `json:"stage"`
	Last   time.Time `json:"last"`
}

// waitRegistered waits until mac is in the registry, or for at most max.
func (c *Cluster) waitRegistered(mac string, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		cs, ok := c.registry(context.Background())
		if !ok {
			return // no registry to follow: start the rest at once
		}
		for _, ct := range cs {
			if strings.EqualFold(ct.MAC, mac) {
				return
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// VM returns node n's VM, or nil.
func (c *Cluster) VM(n int) *VM {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.vms[n]
}

// Kill powers node n off hard.
func (c *Cluster) Kill(n int) error {
	vm := c.VM(n)
	if vm == nil {
		return fmt.Errorf("qemu: node %d was never started", n)
	}
	vm.Kill()
	return nil
}

// SetLink cuts node n off the segment (up false) or joins it again.
func (c *Cluster) SetLink(n int, up bool) error {
	vm := c.VM(n)
	if vm == nil {
		return fmt.Errorf("qemu: node %d is not running", n)
	}
	return vm.SetLink(up)
}

// Status returns every configured node's status, by number.
func (c *Cluster) Status() []NodeStatus {
	var out []NodeStatus
	for _, nc := range c.cfg.Nodes {
		if vm := c.VM(nc.Number); vm != nil {
			out = append(out, vm.Status())
		} else {
			out = append(out, NodeStatus{Number: nc.Number, MAC: nc.MAC, Stage: StageOff})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out
}

// Stop kills every VM and waits for them to exit.
func (c *Cluster) Stop() {
	c.mu.Lock()
	vms := make([]*VM, 0, len(c.vms))
	for _, vm := range c.vms {
		vms = append(vms, vm)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, vm := range vms {
		wg.Add(1)
		go func() { defer wg.Done(); vm.Kill() }()
	}
	wg.Wait()
}

// Exec runs argv on node n through the exec channel.
func (c *Cluster) Exec(ctx context.Context, n int, argv []string) (*ExecResult, error) {
	return Exec(ctx, execPath(c.NodeDir(n)), argv, nil)
}

// checkSegment makes sure the segment's port can be joined: QEMU shares a
// multicast port with anyone (SO_REUSEADDR), so this only catches a port
// held exclusively by something else.
func checkSegment(s Segment) error {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		})
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("0.0.0.0:%d", s.Port))
	if err != nil {
		return fmt.Errorf("qemu: segment port %d is in use by another program: %w (use another cluster directory)", s.Port, err)
	}
	pc.Close()
	return nil
}

// WatchNetboot follows the PXE nodes' firmware stages (dhcp, ipxe, kernel
// download) through the init node's netboot registry, which its daemon
// serves at GET /v1/netboot/nodes on the forwarded API port. It polls
// while a PXE node is still in its firmware, and returns when ctx ends.
func (c *Cluster) WatchNetboot(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		byMAC := map[string]*VM{}
		c.mu.Lock()
		for _, vm := range c.vms {
			if vm.cfg.Boot == "pxe" && vm.Status().Stage.beforeKernel() {
				byMAC[strings.ToLower(vm.cfg.MAC)] = vm
			}
		}
		c.mu.Unlock()
		if len(byMAC) == 0 {
			continue
		}
		contacts, ok := c.registry(ctx)
		if !ok {
			continue // the init node is not up yet, or busy
		}
		for _, ct := range contacts {
			if vm := byMAC[strings.ToLower(ct.MAC)]; vm != nil {
				vm.netbootStage(ct.Stage, ct.Client, ct.Last)
			}
		}
	}
}
