package qemu

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/services/events"
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
	line, err := c.WaitLine(ctx, regexp.MustCompile(`reached run level`))
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
		event *events.Event
		stage Stage
	}{
		{line: "SeaBIOS (version 1.16)", stage: StageFirmware},
		{line: "[    0.000000] Linux version 6.1.0-56-amd64", stage: StageKernel},
		// Init's console lines say nothing to the harness: its events do.
		{line: "locus-init: node 4 reached run level 3 in 3.4s", stage: StageKernel},
		{event: &events.Event{Seq: 1, Kind: events.PhaseStarted, Name: "early"}, stage: StageInit},
		{event: &events.Event{Seq: 2, Kind: events.PhaseDone, Name: "early"}, stage: StageInit},
		{event: &events.Event{Seq: 3, Kind: events.RunLevelReached, Level: 3, Millis: 3400}, stage: StageUp},
	} {
		if step.event != nil {
			vm.observeEvent(*step.event, time.Second)
		} else {
			vm.observe(step.line, time.Second)
		}
		if got := vm.Status().Stage; got != step.stage {
			t.Errorf("after %q %+v: stage %s, want %s", step.line, step.event, got, step.stage)
		}
	}
	st := vm.Status()
	if st.RunLevel != 3 || st.GuestUp != 3.4 || st.Phase != "early" || time.Duration(st.UpAfter) != time.Second {
		t.Errorf("status = %+v", st)
	}
	// The same VM boots again (a PXE node's reboot): it climbs anew.
	vm.observeEvent(events.Event{Seq: 1, Kind: events.PhaseStarted, Name: "early"}, 2*time.Second)
	if st := vm.Status(); st.Stage != StageInit || st.RunLevel != 0 {
		t.Errorf("after a new boot's first event: %+v, want init stage, no run level", st)
	}
	vm2 := &VM{status: NodeStatus{Stage: StageInit}}
	vm2.observeEvent(events.Event{Seq: 4, Kind: events.PhaseFailed, Name: "network", Error: "no address"}, time.Second)
	if st := vm2.Status(); st.Stage != StageFailed || !strings.Contains(st.Detail, "no address") {
		t.Errorf("failure not seen: %+v", st)
	}
	vm3 := &VM{status: NodeStatus{Stage: StageKernel}}
	vm3.observe("[    2.1] Kernel panic - not syncing: VFS", time.Second)
	if st := vm3.Status(); st.Stage != StageFailed {
		t.Errorf("kernel panic not seen: %+v", st)
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
	// The events take over from the kernel on; the registry cannot move
	// a booted node back.
	vm.observeEvent(events.Event{Seq: 2, Kind: events.PhaseDone, Name: "early"}, time.Second)
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

// TestEventChannel plays QEMU's end of a VM's event port: the harness
// reads init's events off it, skips a line that is not one, keeps them in
// the VM's event log and moves the node's stage by them.
func TestEventChannel(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("unix", eventsPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	vm := &VM{cfg: NodeConfig{Number: 3}, dir: dir, started: time.Now(), events: newEventLog(), status: NodeStatus{Stage: StageKernel}}
	done := make(chan struct{})
	read := make(chan struct{})
	go func() { vm.readEvents(done, vm.observeEvent); close(read) }()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, `{"seq":1,"node":3,"source":"init","kind":"phase.done","name":"early","ms":9}`+"\n")
	io.WriteString(conn, "garbage from a confused guest\n")
	io.WriteString(conn, `{"seq":2,"node":3,"source":"init","kind":"runlevel.reached","level":3,"ms":4100}`+"\n")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, i, err := vm.WaitEvent(ctx, 0, Reached)
	if err != nil || i != 1 || e.Level != 3 {
		t.Fatalf("WaitEvent = %+v at %d, %v; want the run level at index 1", e, i, err)
	}
	if st := vm.Status(); st.Stage != StageUp || st.GuestUp != 4.1 || st.Phase != "early" {
		t.Errorf("status = %+v, want Up at 4.1 s after phase early", st)
	}
	close(done)
	<-read
	logged, err := ReadEventLog(filepath.Join(dir, "events.jsonl"))
	if err != nil || len(logged) != 2 || logged[1].Kind != events.RunLevelReached {
		t.Errorf("event log = %+v, %v; want the two events", logged, err)
	}
	if _, _, err := vm.WaitEvent(ctx, 2, Reached); err == nil {
		t.Error("WaitEvent after the VM stopped succeeded, want an error")
	}
}
