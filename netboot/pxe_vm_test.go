//go:build vm

package netboot_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/images/layout"

	"github.com/locus-ssi/locus/internal/testutil"
	"github.com/locus-ssi/locus/netboot"
	"github.com/locus-ssi/locus/qemu"
)

// The PXE VM tests boot a VM with no kernel and no disk: its NIC's iPXE
// ROM (or OVMF's PXE) gets an address and a boot file from `locus netboot
// serve` running on the host side of a tap device in a network namespace
// the test creates, then iPXE fetches the node's script, kernel and
// initramfs over HTTP, and the node must reach its run level.

var env struct {
	locus, out string
}

func TestMain(m *testing.M) {
	os.Exit(func() int {
		tmp, err := os.MkdirTemp("", "locus-pxe-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		if env.locus, err = testutil.LocusBinary(tmp); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		env.out = filepath.Join(tmp, "out")
		spec := []byte(`cluster: {name: pxetest}
interconnect: {subnet: 10.79.0.0/24}
nodes:
  - {number: 1, mac: "52:54:00:79:00:01", hostname: head}
  - {number: 2, mac: "52:54:00:79:00:02", hostname: bios-e1000}
  - {number: 3, mac: "52:54:00:79:00:03", hostname: bios-virtio}
  - {number: 4, mac: "52:54:00:79:00:04", hostname: uefi-virtio}
netboot: {admission: deny}
`)
		if _, err := testutil.BuildImage(context.Background(), env.locus, env.out, spec, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "build image:", err)
			return 1
		}
		return m.Run()
	}())
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func TestVMPXEBoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace and a tap device")
	}
	for _, tc := range []struct {
		name     string
		node     int
		nic      string
		firmware string
	}{
		{"bios-e1000", 2, "e1000", "bios"},
		{"bios-virtio", 3, "virtio-net-pci", "bios"},
		// OVMF with its own virtio driver and PXE (no iPXE option ROM): real
		// UEFI PXE, which fetches ipxe.efi over TFTP first.
		{"uefi-virtio", 4, "virtio-net-pci,romfile=", "uefi"},
	} {
		t.Run(tc.name, func(t *testing.T) { pxeBoot(t, tc.node, tc.nic, tc.firmware) })
	}
}

func pxeBoot(t *testing.T, node int, nic, firmware string) {
	ns := fmt.Sprintf("locus-pxe-%d-%d", os.Getpid(), node)
	ip(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	ip(t, "-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap")
	ip(t, "-n", ns, "addr", "add", "10.79.0.1/24", "dev", "tap0")
	ip(t, "-n", ns, "link", "set", "tap0", "up")
	ip(t, "-n", ns, "link", "set", "lo", "up")

	state := t.TempDir()
	srvLog, _ := os.Create(filepath.Join(state, "netboot.log"))
	defer srvLog.Close()
	srv := exec.Command("ip", "netns", "exec", ns, env.locus, "netboot", "serve", "--interface", "tap0",
		"--root", filepath.Join(env.out, layout.NetbootDir), "--state-dir", filepath.Join(state, "nb"))
	if dir := os.Getenv("LOCUS_CAPTURE_DIR"); dir != "" {
		// Keep the real firmware's DHCP packets (netboot/testdata/packets).
		sub := filepath.Join(dir, strings.TrimSuffix(nic, ",romfile=")+"-"+firmware)
		os.MkdirAll(sub, 0o755)
		srv.Args = append(srv.Args, "--capture", sub)
	}
	srv.Stdout, srv.Stderr = srvLog, srvLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })

	mac := fmt.Sprintf("52:54:00:79:00:%02d", node)
	c, err := qemu.NewCluster(qemu.ClusterConfig{
		Name: "pxetest", Dir: filepath.Join(state, "vm"), MemoryMB: 768,
		Netdev: "tap,id=n0,ifname=tap0,script=no,downscript=no",
		Wrap:   []string{"ip", "netns", "exec", ns},
		Nodes:  []qemu.NodeConfig{{Number: node, MAC: mac, Boot: "pxe", NIC: nic, Firmware: firmware}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() || os.Getenv("LOCUS_VM_LOGS") != "" {
			b, _ := os.ReadFile(filepath.Join(state, "netboot.log"))
			t.Logf("netboot log:\n%s", b)
			s, _ := os.ReadFile(qemu.SerialLog(filepath.Join(state, "vm"), node))
			t.Logf("serial log (tail):\n%s", tail(string(s), 3000))
		}
	})
	start := time.Now()
	vm, err := c.Start(node)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	reached, _, err := vm.WaitEvent(ctx, 0, qemu.Reached)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: PXE boot to run level in %.1fs (%s)", nic+"/"+firmware, time.Since(start).Seconds(), reached)
	if reached.Node != node {
		t.Errorf("run-level event %+v is not node %d's", reached, node)
	}
	// The registry followed the node through its stages.
	out, err := exec.Command("ip", "netns", "exec", ns, env.locus, "node", "list", "--output", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("netboot nodes: %v\n%s", err, out)
	}
	var contacts []netboot.Contact
	if err := json.Unmarshal(out, &contacts); err != nil {
		t.Fatalf("netboot nodes output: %v\n%s", err, out)
	}
	found := false
	for _, c := range contacts {
		if c.MAC == mac {
			found = true
			if c.Node != node || c.Status != "known" || (c.Stage != netboot.StageInitramfs && c.Stage != netboot.StageKernel) {
				t.Errorf("registry: %+v, want node %d known and past the kernel", c, node)
			}
		}
	}
	if !found {
		t.Errorf("registry has no contact for %s: %s", mac, out)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
