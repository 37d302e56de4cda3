package qemu

import (
	"context"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestConsoleWaitLineAndLog(t *testing.T) {
	dir := t.TempDir()
	c, err := NewConsole(filepath.Join(dir, "serial.log"), time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	go c.Pump(pr)
	go func() {
		pw.Write([]byte("[    1.0] Linux version 6.1\r\nlocus-init: phase ea"))
		time.Sleep(20 * time.Millisecond)
		pw.Write([]byte("rly done in 5ms\nlocus-init: node 2 reached run level 3 in 4.2s\n"))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	line, err := c.WaitLine(ctx, ReachedRE())
	if err != nil || !strings.Contains(line, "node 2") {
		t.Fatalf("WaitLine = %q, %v", line, err)
	}
	if _, err := c.WaitLine(ctx, regexp.MustCompile(`phase early done in 5ms`)); err != nil {
		t.Errorf("a line split across writes was not joined: %v", err)
	}
	pw.Close()
	short, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if _, err := c.WaitLine(short, regexp.MustCompile(`never`)); err == nil || !strings.Contains(err.Error(), "ended") {
		t.Errorf("WaitLine after the end = %v, want 'console ended'", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "serial.log"))
	if !regexp.MustCompile(`(?m)^\[\s+\d+\.\d{3}\] locus-init: node 2 reached run level 3`).Match(b) {
		t.Errorf("serial log lines are not timestamped:\n%s", b)
	}
	if strings.Contains(string(b), "\r") {
		t.Errorf("serial log keeps carriage returns")
	}
}

func TestObserveStages(t *testing.T) {
	vm := &VM{status: NodeStatus{Stage: StageFirmware}}
	for _, step := range []struct {
		line  string
		stage Stage
	}{
		{"SeaBIOS (version 1.16)", StageFirmware},
		{"[    0.000000] Linux version 6.1.0-56-amd64", StageKernel},
		{"locus-init: modules loaded count=13", StageInit},
		{"locus-init: phase early done in 258ms", StageInit},
		{"locus-init: node 4 reached run level 3 in 3.4s", StageUp},
	} {
		vm.observe(step.line, time.Second)
		if got := vm.Status().Stage; got != step.stage {
			t.Errorf("after %q: stage %s, want %s", step.line, got, step.stage)
		}
	}
	st := vm.Status()
	if st.RunLevel != 3 || st.GuestUp != 3.4 || st.Phase != "early" {
		t.Errorf("status = %+v", st)
	}
	vm2 := &VM{status: NodeStatus{Stage: StageInit}}
	vm2.observe("locus-init: phase network failed after 10ms: no address", time.Second)
	if st := vm2.Status(); st.Stage != StageFailed || !strings.Contains(st.Detail, "no address") {
		t.Errorf("failure not seen: %+v", st)
	}
}

func TestSegmentsDifferPerCluster(t *testing.T) {
	a, b := SegmentFor("/tmp/cluster-a"), SegmentFor("/tmp/cluster-b")
	if a == b {
		t.Errorf("two cluster directories share segment %+v", a)
	}
	if a != SegmentFor("/tmp/cluster-a") {
		t.Error("segment is not stable for one directory")
	}
	if !strings.HasPrefix(a.Group, "230.") || a.Port < 20000 || a.Port > 65535 {
		t.Errorf("segment %+v out of range", a)
	}
	if MACFor("/tmp/a", 1) == MACFor("/tmp/a", 2) || MACFor("/tmp/a", 1) == MACFor("/tmp/b", 1) {
		t.Error("generated MACs collide")
	}
}

func TestFormatTable(t *testing.T) {
	now := time.Now()
	out := FormatTable([]NodeStatus{
		{Number: 1, Stage: StageUp, Phase: "runlevel", RunLevel: 3, UpAfter: Duration(6600 * time.Millisecond), GuestUp: 3.4, PID: 42, Started: now.Add(-7 * time.Second)},
		{Number: 2, Stage: StageKernel, PID: 43, Started: now.Add(-2 * time.Second)},
	}, now)
	for _, want := range []string{"NODE", "UP AFTER", "6.6s", "3.4s", "kernel"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestNewClusterErrors(t *testing.T) {
	if _, err := NewCluster(ClusterConfig{Dir: t.TempDir(), Kernel: "/nonexistent/vmlinuz", Initrd: "/nonexistent/initrd", Accel: "tcg"}); err == nil || !strings.Contains(err.Error(), "locus image build") {
		t.Errorf("NewCluster with a missing kernel = %v, want a hint to build the image", err)
	}
	long := "/tmp/" + strings.Repeat("x", 120)
	if _, err := NewCluster(ClusterConfig{Dir: long, Accel: "tcg"}); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("NewCluster with a long dir = %v, want 'too long'", err)
	}
}

func TestRemoteWithoutSupervisor(t *testing.T) {
	_, err := RemoteStatus(context.Background(), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("RemoteStatus on an empty dir = %v, want 'not running'", err)
	}
}

func TestNetbootStages(t *testing.T) {
	start := time.Now()
	vm := &VM{status: NodeStatus{Stage: StageFirmware, Started: start}}
	// The registry's record of an earlier boot is ignored.
	vm.netbootStage("initramfs", "ipxe", start.Add(-time.Minute))
	if got := vm.Status().Stage; got != StageFirmware {
		t.Fatalf("a stale registry record moved the node to %s", got)
	}
	for _, step := range []struct {
		registry string
		client   string
		want     Stage
	}{{"dhcp", "bios-pxe", StageDHCP}, {"dhcp", "ipxe", StageIPXE}, {"dhcp", "bios-pxe", StageIPXE}, {"ipxe", "ipxe", StageIPXE}, {"kernel", "ipxe", StageKernel}} {
		vm.netbootStage(step.registry, step.client, start.Add(time.Second))
		if got := vm.Status().Stage; got != step.want {
			t.Errorf("after registry stage %s: %s, want %s", step.registry, got, step.want)
		}
	}
	// The console takes over from the kernel on; the registry cannot
	// move a booted node back.
	vm.observe("locus-init: phase early done in 258ms", time.Second)
	vm.netbootStage("dhcp", "ipxe", start.Add(2*time.Second))
	if got := vm.Status().Stage; got != StageInit {
		t.Errorf("stage %s, want init", got)
	}
}

func TestDiskOverlayFollowsItsImage(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	os.WriteFile(img, make([]byte, 1<<20), 0o644)
	n := NodeConfig{Number: 1, Disk: img}
	ov, err := diskOverlay(dir, n)
	if err != nil {
		t.Fatal(err)
	}
	// What the node wrote survives a power cycle...
	os.WriteFile(ov+".marker", nil, 0o644)
	before, _ := os.Stat(ov)
	if _, err := diskOverlay(dir, n); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(ov); !os.SameFile(before, after) {
		t.Error("the overlay was recreated over the same image")
	}
	// ...but not a rebuilt image.
	os.WriteFile(img, make([]byte, 2<<20), 0o644)
	if _, err := diskOverlay(dir, n); err != nil {
		t.Fatal(err)
	}
	// A qcow2 header holds the virtual size at bytes 24-31.
	if b, _ := os.ReadFile(ov); len(b) < 32 || binary.BigEndian.Uint64(b[24:32]) != 2<<20 {
		t.Error("the overlay of an older image was kept")
	}
	if _, err := diskOverlay(dir, NodeConfig{Number: 1, Disk: filepath.Join(dir, "missing.img")}); err == nil || !strings.Contains(err.Error(), "image build") {
		t.Errorf("missing image: %v", err)
	}
}
