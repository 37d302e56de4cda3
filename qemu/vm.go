package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/locus-ssi/locus/services/events"
)

// NodeConfig describes one VM of a cluster.
type NodeConfig struct {
	Number int    `json:"number"`
	MAC    string `json:"mac"`
	// Append is the kernel command line for direct boot.
	Append string `json:"append"`
	// Boot is "direct" (the cluster's kernel and initramfs; default) or
	// "pxe" (no kernel: the NIC's iPXE ROM boots from the network).
	Boot string `json:"boot,omitempty"`
	// NIC is the QEMU NIC model: virtio-net-pci (default) or e1000.
	NIC string `json:"nic,omitempty"`
	// Firmware is "bios" (SeaBIOS; default) or "uefi" (OVMF).
	Firmware string `json:"firmware,omitempty"`
	// Disk is a raw disk image the node boots from ("disk" boot). The VM
	// writes to a qcow2 overlay in its directory; the image stays as built.
	Disk string `json:"disk,omitempty"`
	// SharedDisk is a raw disk image every node of the cluster has (a
	// GFS2 root's).
	SharedDisk string `json:"shared_disk,omitempty"`
	// DiskShared makes the node's disk a raw copy of the image in its
	// directory rather than an overlay, without QEMU's image lock, so that
	// another node can attach it too: shared storage, as a SAN LUN or a
	// dual-ported SAS disk is to two servers.
	DiskShared bool `json:"disk_shared,omitempty"`
	// AttachDisk, if set, is the node whose (shared) disk this node sees
	// too, as a second path to the same storage (HA-CFS's standby).
	AttachDisk int `json:"attach_disk,omitempty"`
	// APIPort, if set, adds a user-mode NIC that forwards 127.0.0.1:APIPort
	// on the host to the node daemon's port.
	APIPort int `json:"api_port,omitempty"`
	// Identity, if set, is the node's credential file (a locusd
	// IdentityFile), handed to the guest through fw_cfg, which only root
	// in the guest can read: a node that is not netbooted has no
	// admission to get one from.
	Identity string `json:"identity,omitempty"`
}

// IdentityFwCfg is the fw_cfg name under which a node finds its identity.
const IdentityFwCfg = "opt/org.locus/identity"

// Stage is how far a node's boot got, read from its console.
type Stage string

// Stages in boot order.
const (
	StageOff      Stage = "off"
	StageFirmware Stage = "firmware"
	// StageDHCP and StageIPXE are a PXE node's firmware stages, as the
	// init node's netboot registry saw them: asking for an address, then
	// loading iPXE and its script.
	StageDHCP    Stage = "dhcp"
	StageIPXE    Stage = "ipxe"
	StageKernel  Stage = "kernel"
	StageInit    Stage = "init"
	StageUp      Stage = "up"
	StageFailed  Stage = "failed"
	StageStopped Stage = "stopped"
)

// NodeStatus is a node's state as the harness sees it.
type NodeStatus struct {
	Number int    `json:"number"`
	MAC    string `json:"mac"`
	PID    int    `json:"pid,omitempty"`
	Stage  Stage  `json:"stage"`
	// Phase is the last init phase completed.
	Phase string `json:"phase,omitempty"`
	// RunLevel is the level reached, once Up.
	RunLevel int `json:"runlevel,omitempty"`
	// UpAfter is the host's wall time from VM start to the run-level line.
	UpAfter Duration `json:"up_after,omitempty"`
	// GuestUp is the node's own count, in seconds since kernel start.
	GuestUp float64 `json:"guest_up,omitempty"`
	// Detail explains a failure.
	Detail  string    `json:"detail,omitempty"`
	Started time.Time `json:"started"`
}

// Duration marshals as seconds.
type Duration time.Duration

// MarshalJSON writes seconds with millisecond precision.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatFloat(time.Duration(d).Seconds(), 'f', 3, 64)), nil
}

// UnmarshalJSON reads seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return err
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// VM is one running QEMU process.
type VM struct {
	cfg     NodeConfig
	dir     string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	Console *Console
	done    chan struct{}
	waitErr error

	mu      sync.Mutex
	status  NodeStatus
	execMu  sync.Mutex
	started time.Time
	// events is what the VM's init published on its event channel.
	events *eventLog
}

// The kernel's own console lines that tell a boot stage: they are the
// kernel's, not Locus's, so they are read from the console; everything
// init and locusd do comes on the event channel.
var (
	kernelPanicRE = regexp.MustCompile(`Kernel panic`)
	linuxRE       = regexp.MustCompile(`Linux version `)
)

// Paths of a VM's files in its directory.
func qmpPath(dir string) string    { return filepath.Join(dir, "qmp.sock") }
func execPath(dir string) string   { return filepath.Join(dir, "exec.sock") }
func serialPath(dir string) string { return filepath.Join(dir, "serial.log") }

// startVM starts QEMU for one node. The VM's files live in dir.
func startVM(c *ClusterConfig, n NodeConfig, dir string) (*VM, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("qemu: node %d: %w", n.Number, err)
	}
	for _, p := range []string{qmpPath(dir), execPath(dir), eventsPath(dir)} {
		os.Remove(p)
	}
	bin, err := exec.LookPath(qemuBinary)
	if err != nil {
		return nil, fmt.Errorf("qemu: %s not found: install it (make deps, or apt-get install qemu-system-x86): %w", qemuBinary, err)
	}
	args, err := vmArgs(c, n, dir)
	if err != nil {
		return nil, err
	}
	if len(c.Wrap) > 0 {
		args = append(append(append([]string{}, c.Wrap[1:]...), bin), args...)
		bin = c.Wrap[0]
	}
	cmd := exec.Command(bin, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	// The serial console's pipe is ours, not exec's: once QEMU has exited
	// its read end is closed after a moment even if something else still
	// holds the write end, so the VM's end is always noticed.
	stdout, serialOut, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = serialOut
	errLog, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stderr = errLog
	// The VM dies with whoever started it; it is never left running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	start := time.Now()
	vm := &VM{cfg: n, dir: dir, cmd: cmd, stdin: stdin, done: make(chan struct{}), started: start, events: newEventLog()}
	vm.status = NodeStatus{Number: n.Number, MAC: n.MAC, Stage: StageFirmware, Started: start}
	vm.Console, err = NewConsole(serialPath(dir), start, vm.observe)
	if err != nil {
		errLog.Close()
		return nil, err
	}
	err = cmd.Start()
	serialOut.Close()
	if err != nil {
		errLog.Close()
		stdout.Close()
		return nil, fmt.Errorf("qemu: node %d: start %s: %w", n.Number, bin, err)
	}
	vm.status.PID = cmd.Process.Pid
	pumped, eventsRead := make(chan struct{}), make(chan struct{})
	go func() { vm.Console.Pump(stdout); close(pumped) }()
	go func() { vm.readEvents(pumped, vm.observeEvent); close(eventsRead) }()
	go func() {
		vm.waitErr = cmd.Wait()
		select {
		case <-pumped:
		case <-time.After(2 * time.Second):
			stdout.Close() // ends the pump
			<-pumped
		}
		stdout.Close()
		<-eventsRead // ends with the pump
		errLog.Close()
		vm.mu.Lock()
		if vm.status.Stage != StageFailed {
			vm.status.Stage = StageStopped
		}
		if vm.waitErr != nil && vm.status.Detail == "" {
			vm.status.Detail = qemuError(dir, vm.waitErr)
		}
		vm.status.PID = 0
		vm.mu.Unlock()
		close(vm.done)
	}()
	return vm, nil
}

// qemuError is the first line QEMU wrote to stderr, or the wait error.
func qemuError(dir string, err error) string {
	b, _ := os.ReadFile(filepath.Join(dir, "qemu.log"))
	for _, l := range regexp.MustCompile(`\r?\n`).Split(string(b), -1) {
		if l != "" {
			return "qemu: " + l
		}
	}
	return err.Error()
}

// OVMF firmware from Debian's ovmf package.
const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// vmArgs is QEMU's command line for one node.
func vmArgs(c *ClusterConfig, n NodeConfig, dir string) ([]string, error) {
	cpu := "max"
	if c.Accel == "kvm" {
		cpu = "host"
	}
	netdev := fmt.Sprintf("socket,id=n0,mcast=%s:%d,localaddr=127.0.0.1", c.Segment.Group, c.Segment.Port)
	if c.Netdev != "" {
		netdev = c.Netdev
	}
	nic := n.NIC
	if nic == "" {
		nic = "virtio-net-pci"
	}
	args := []string{
		"-name", fmt.Sprintf("locus-%s-node%d", c.Name, n.Number),
		"-machine", "q35,accel=" + c.Accel,
		"-cpu", cpu,
		"-smp", "1",
		"-m", strconv.Itoa(c.MemoryMB),
		"-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
		"-chardev", "stdio,id=ser0,signal=off",
		"-serial", "chardev:ser0",
		"-qmp", "unix:" + qmpPath(dir) + ",server=on,wait=off",
		"-device", "virtio-rng-pci",
		"-netdev", netdev,
		"-device", nic + ",netdev=n0,mac=" + n.MAC + map[bool]string{true: ",bootindex=1"}[n.Boot == "pxe"],
		"-device", "virtio-serial-pci",
		"-chardev", "socket,id=exec,path=" + execPath(dir) + ",server=on,wait=off",
		"-device", "virtserialport,chardev=exec,name=org.locus.exec",
		"-chardev", "socket,id=fence,path=" + fencePath(dir) + ",server=on,wait=off",
		"-device", "virtserialport,chardev=fence,name=" + FencePortName,
		"-chardev", "socket,id=events,path=" + eventsPath(dir) + ",server=on,wait=off",
		"-device", "virtserialport,chardev=events,name=" + events.PortName,
	}
	if n.Boot != "pxe" {
		// A panic ends QEMU (panic=-1 reboots); a PXE node instead keeps
		// rebooting into its boot ROM until a server answers, as a real
		// machine does.
		args = append(args, "-no-reboot")
	}
	if n.Firmware == "uefi" {
		vars := filepath.Join(dir, "OVMF_VARS.fd")
		b, err := os.ReadFile(ovmfVars)
		if err != nil {
			return nil, fmt.Errorf("qemu: UEFI needs OVMF (make deps, or apt-get install ovmf): %w", err)
		}
		if err := os.WriteFile(vars, b, 0o644); err != nil {
			return nil, err
		}
		args = append(args, "-drive", "if=pflash,format=raw,readonly=on,file="+ovmfCode, "-drive", "if=pflash,format=raw,file="+vars)
	}
	if n.APIPort != 0 {
		args = append(args, "-netdev", fmt.Sprintf("user,id=n1,net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:%d-:7470", n.APIPort),
			"-device", "virtio-net-pci,netdev=n1")
	}
	if n.Identity != "" {
		args = append(args, "-fw_cfg", "name="+IdentityFwCfg+",file="+n.Identity)
	}
	if n.SharedDisk != "" {
		// Every node's: a cluster filesystem's disk (GFS2), unlocked so
		// all the VMs open it, all writing through the host's page cache.
		args = append(args, "-drive", "file="+n.SharedDisk+",if=virtio,format=raw,file.locking=off")
	}
	if n.AttachDisk != 0 {
		// The other node's raw disk, unlocked: both VMs write through
		// the host's page cache, so each reads what the other wrote.
		shared := filepath.Join(filepath.Dir(dir), fmt.Sprintf("node%d", n.AttachDisk), sharedDiskName)
		args = append(args, "-drive", "file="+shared+",if=virtio,format=raw,file.locking=off")
	}
	switch {
	case n.Disk != "" && n.DiskShared:
		disk, err := diskCopy(dir, n)
		if err != nil {
			return nil, err
		}
		args = append(args, "-drive", "file="+disk+",if=virtio,format=raw,file.locking=off")
	case n.Disk != "":
		overlay, err := diskOverlay(dir, n)
		if err != nil {
			return nil, err
		}
		args = append(args, "-drive", "file="+overlay+",if=virtio,format=qcow2")
	case n.Boot == "pxe" && n.AttachDisk != 0:
		// Only the network: never the attached disk, whose boot loader
		// would mount the other node's root.
		args = append(args, "-boot", "order=n,strict=on")
	case n.Boot == "pxe":
		args = append(args, "-boot", "n")
	case c.Kernel != "":
		args = append(args, "-kernel", c.Kernel, "-initrd", c.Initrd, "-append", n.Append)
	}
	return args, nil
}

// sharedDiskName is a shared disk's file in its node's directory.
const sharedDiskName = "disk.raw"

// diskCopy returns the node's own raw copy of its disk image (sparse),
// made anew when the image changed, as diskOverlay does for an overlay.
func diskCopy(dir string, n NodeConfig) (string, error) {
	return nodeDisk(dir, n, sharedDiskName, "disk.raw.base", func(image, disk string) ([]byte, error) {
		return exec.Command("cp", "--sparse=always", image, disk).CombinedOutput()
	})
}

// diskOverlay returns the node's copy-on-write overlay of its disk image.
// The overlay keeps what the node wrote across power cycles (kill/start,
// down/up) as long as the image underneath is the one it was made on; a
// rebuilt image (another size or time) gets a fresh overlay, since old
// writes on top of new contents would be garbage.
func diskOverlay(dir string, n NodeConfig) (string, error) {
	return nodeDisk(dir, n, "disk.qcow2", "disk.base", func(image, disk string) ([]byte, error) {
		out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", image, "-F", "raw", disk).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("qemu-img create overlay: %w (make deps installs qemu-utils)", err)
		}
		return out, err
	})
}

// nodeDisk returns the node's disk file name in dir, made from its image
// by make, again only when the image changed since (its path, size and
// time are kept in the stamp file).
func nodeDisk(dir string, n NodeConfig, name, stampName string, make func(image, disk string) ([]byte, error)) (string, error) {
	abs, err := filepath.Abs(n.Disk)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("qemu: node %d: disk image: %w (run `locus image build`)", n.Number, err)
	}
	disk := filepath.Join(dir, name)
	stampFile := filepath.Join(dir, stampName)
	stamp := fmt.Sprintf("%s %d %d\n", abs, st.Size(), st.ModTime().UnixNano())
	if old, err := os.ReadFile(stampFile); err == nil && string(old) == stamp {
		if _, err := os.Stat(disk); err == nil {
			return disk, nil
		}
	}
	os.Remove(disk)
	if b, err := make(abs, disk); err != nil {
		return "", fmt.Errorf("qemu: node %d: %s: %v: %s", n.Number, name, err, b)
	}
	if err := os.WriteFile(stampFile, []byte(stamp), 0o644); err != nil {
		return "", err
	}
	return disk, nil
}

// observe updates the node's stage from a console line of the kernel's.
func (vm *VM) observe(line string, at time.Duration) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	s := &vm.status
	switch {
	case linuxRE.MatchString(line) && s.Stage.beforeKernel():
		s.Stage = StageKernel
	case kernelPanicRE.MatchString(line):
		s.Stage = StageFailed
		s.Detail = line
	}
}

// observeEvent updates the node's stage from an event of its init's,
// received at (since the VM started).
func (vm *VM) observeEvent(e events.Event, at time.Duration) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	s := &vm.status
	if e.Seq == 1 && s.Stage == StageUp {
		// A new boot of the same VM (a PXE node rebooting): it climbs again.
		s.Stage, s.Phase, s.RunLevel = StageInit, "", 0
	}
	switch e.Kind {
	case events.RunLevelReached:
		s.Stage = StageUp
		s.RunLevel = e.Level
		s.GuestUp = float64(e.Millis) / 1000
		s.UpAfter = Duration(at)
	case events.PhaseDone:
		s.Phase = e.Name
		if s.Stage != StageUp {
			s.Stage = StageInit
		}
	case events.PhaseFailed:
		s.Stage = StageFailed
		s.Detail = fmt.Sprintf("phase %s failed: %s", e.Name, e.Error)
	default:
		if s.Stage == StageKernel || s.Stage.beforeKernel() {
			s.Stage = StageInit
		}
	}
}

func (st Stage) beforeKernel() bool {
	return st == StageFirmware || st == StageDHCP || st == StageIPXE
}

// netbootStage notes a registry stage (netboot.Stage*) of a client kind
// (netboot's Classify), seen at time at;
// it only moves a node forward, and only within its current boot.
func (vm *VM) netbootStage(stage, client string, at time.Time) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	s := &vm.status
	// The registry remembers earlier boots; a guest clock may lag the
	// host's by a little.
	if !s.Stage.beforeKernel() || at.Before(s.Started.Add(-2*time.Second)) {
		return
	}
	order := map[Stage]int{StageFirmware: 0, StageDHCP: 1, StageIPXE: 2, StageKernel: 3}
	var next Stage
	switch {
	case stage == "dhcp" && client == "ipxe":
		next = StageIPXE // iPXE asking for its address and script
	case stage == "dhcp":
		next = StageDHCP
	case stage == "tftp" || stage == "ipxe":
		next = StageIPXE
	case stage == "kernel" || stage == "initramfs":
		next = StageKernel
	default:
		return
	}
	if order[next] > order[s.Stage] {
		s.Stage = next
	}
}

// Status returns the node's current status.
func (vm *VM) Status() NodeStatus {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.status
}

// Done is closed when the QEMU process has exited.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// Input writes to the VM's serial console.
func (vm *VM) Input(p []byte) error {
	_, err := vm.stdin.Write(p)
	return err
}

// QMP runs one command on the VM's monitor and returns its reply. Every
// step has a deadline: a QEMU that does not answer (still starting, or
// stuck) gives an error, never a caller blocked for good.
func (vm *VM) QMP(command string) ([]byte, error) {
	fail := func(err error) ([]byte, error) {
		return nil, fmt.Errorf("qemu: node %d: qmp %s: %w", vm.cfg.Number, command, err)
	}
	conn, err := net.DialTimeout("unix", qmpPath(vm.dir), 2*time.Second)
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(qmpTimeout))
	dec := json.NewDecoder(conn)
	// The greeting, the capabilities handshake, then the command; replies
	// are told from asynchronous events by having no "event" key.
	reply := func() (json.RawMessage, error) {
		for {
			var m map[string]json.RawMessage
			if err := dec.Decode(&m); err != nil {
				return nil, err
			}
			if _, ev := m["event"]; ev {
				continue
			}
			if e, ok := m["error"]; ok {
				return nil, fmt.Errorf("%s", e)
			}
			if r, ok := m["return"]; ok {
				return r, nil
			}
			if _, ok := m["QMP"]; ok {
				return nil, nil
			}
		}
	}
	if _, err := reply(); err != nil {
		return fail(fmt.Errorf("greeting: %w", err))
	}
	if _, err := io.WriteString(conn, `{"execute":"qmp_capabilities"}`); err != nil {
		return fail(err)
	}
	if _, err := reply(); err != nil {
		return fail(fmt.Errorf("capabilities: %w", err))
	}
	if _, err := io.WriteString(conn, command); err != nil {
		return fail(err)
	}
	r, err := reply()
	if err != nil {
		return fail(err)
	}
	return r, nil
}

// qmpTimeout bounds one QMP exchange.
const qmpTimeout = 5 * time.Second

// Kill powers the VM off hard, as pulling the plug would: QMP quit, then
// SIGKILL if QEMU is still there after a moment. It returns once QEMU is
// gone (or, should its process linger unkillable, after 10 s).
func (vm *VM) Kill() {
	select {
	case <-vm.done:
		return
	default:
	}
	if _, err := vm.QMP(`{"execute":"quit"}`); err != nil {
		vm.cmd.Process.Kill()
	}
	select {
	case <-vm.done:
		return
	case <-time.After(3 * time.Second):
	}
	vm.cmd.Process.Kill()
	select {
	case <-vm.done:
	case <-time.After(10 * time.Second):
	}
}

// SetLink sets the link of the VM's interconnect NIC up or down (QMP
// set_link): down, the node neither sends nor receives on the segment
// while it runs on, a network partition of that one node. Its
// management NIC (the API's port forward) stays up, so the host still
// sees it. A new QEMU (a power cycle) starts with the link up.
func (vm *VM) SetLink(up bool) error {
	if _, err := vm.QMP(fmt.Sprintf(`{"execute":"set_link","arguments":{"name":"n0","up":%t}}`, up)); err != nil {
		return fmt.Errorf("qemu: node %d: set its link %s: %w", vm.cfg.Number, map[bool]string{true: "up", false: "down"}[up], err)
	}
	return nil
}

// Wait waits for QEMU to exit or ctx to end.
func (vm *VM) Wait(ctx context.Context) error {
	select {
	case <-vm.done:
		var ee *exec.ExitError
		if errors.As(vm.waitErr, &ee) {
			return fmt.Errorf("qemu: node %d exited: %s", vm.cfg.Number, qemuError(vm.dir, vm.waitErr))
		}
		return vm.waitErr
	case <-ctx.Done():
		return ctx.Err()
	}
}
