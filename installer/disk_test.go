package installer_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/installer"
)

// TestDiskStructure builds a disk from a real Debian kernel image stand-in
// (any file works for objcopy's .linux section) and reads it back with
// go-diskfs: the GPT names and types, the UKI on the ESP, and e2fsck on
// both ext4 partitions.
func TestDiskStructure(t *testing.T) {
	for _, tool := range []string{"objcopy", "mkfs.ext4", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (make deps)", tool)
		}
	}
	dir := t.TempDir()
	tree := filepath.Join(dir, "netboot")
	os.MkdirAll(tree, 0o755)
	os.WriteFile(filepath.Join(tree, "vmlinuz"), bytes.Repeat([]byte("k"), 1<<20), 0o644)
	os.WriteFile(filepath.Join(tree, "initramfs.cpio.zst"), bytes.Repeat([]byte("i"), 2<<20), 0o644)
	out := filepath.Join(dir, "disk.img")
	err := installer.Build(context.Background(), installer.Options{
		Kernel: filepath.Join(tree, "vmlinuz"), Initramfs: filepath.Join(tree, "initramfs.cpio.zst"),
		Cmdline: "console=ttyS0 locus.role=init", Netboot: tree, Spec: []byte("cluster: {name: t}\n"),
	}, out)
	if err != nil {
		t.Fatal(err)
	}
	d, err := diskfs.Open(out, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	table, ok := pt.(*gpt.Table)
	if !ok {
		t.Fatalf("partition table is %T, want GPT", pt)
	}
	want := []struct {
		name string
		typ  gpt.Type
	}{{layout.ESPName, gpt.EFISystemPartition}, {layout.RootName, gpt.LinuxFilesystem}, {layout.StateName, gpt.LinuxFilesystem}}
	if len(table.Partitions) < len(want) {
		t.Fatalf("%d partitions, want %d", len(table.Partitions), len(want))
	}
	for i, w := range want {
		p := table.Partitions[i]
		if p.Name != w.name || p.Type != w.typ {
			t.Errorf("partition %d = %q %s, want %q %s", i+1, p.Name, p.Type, w.name, w.typ)
		}
	}
	esp, err := d.GetFilesystem(1)
	if err != nil {
		t.Fatal(err)
	}
	f, err := esp.OpenFile(layout.BootPath, os.O_RDONLY)
	if err != nil {
		t.Fatalf("ESP lacks %s: %v", layout.BootPath, err)
	}
	uki, _ := io.ReadAll(f)
	if len(uki) < 3<<20 || string(uki[:2]) != "MZ" || !bytes.Contains(uki, []byte(".linux")) || !bytes.Contains(uki, []byte("locus.role=init")) {
		t.Errorf("BOOTX64.EFI (%d bytes) is not a UKI with our kernel and command line", len(uki))
	}
	for _, part := range []int{2, 3} {
		img := filepath.Join(dir, "part.img")
		w, _ := os.Create(img)
		if _, err := d.ReadPartitionContents(part, w); err != nil {
			t.Fatal(err)
		}
		w.Close()
		if b, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
			t.Errorf("e2fsck partition %d: %v\n%s", part, err, b)
		}
		if part == 2 {
			b, _ := exec.Command("debugfs", "-R", "ls -l /boot/netboot", img).CombinedOutput()
			if !bytes.Contains(b, []byte("initramfs.cpio.zst")) || !bytes.Contains(b, []byte("vmlinuz")) {
				t.Errorf("root partition lacks the boot tree:\n%s", b)
			}
		}
	}
}

func TestDiskNeedsStub(t *testing.T) {
	// A missing kernel is an error, and nothing is left at out.
	dir := t.TempDir()
	out := filepath.Join(dir, "disk.img")
	err := installer.Build(context.Background(), installer.Options{Kernel: filepath.Join(dir, "none"), Initramfs: filepath.Join(dir, "none"), Netboot: dir}, out)
	if err == nil {
		t.Fatal("Build with a missing kernel succeeded")
	}
	if _, serr := os.Stat(out); serr == nil {
		t.Errorf("a failed build left %s", out)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "none" {
			t.Errorf("a failed build left %s behind", e.Name())
		}
	}
}

func TestInstallOntoDiskImageFile(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	data := bytes.Repeat([]byte("locus"), 1<<20)
	os.WriteFile(img, data, 0o644)
	mounts := filepath.Join(dir, "mounts")
	os.WriteFile(mounts, []byte("/dev/vda1 / ext4 rw 0 0\n"), 0o644)

	target := filepath.Join(dir, "target.img")
	os.WriteFile(target, make([]byte, 8<<20), 0o644)
	if err := installer.Install(installer.InstallOptions{Image: img, Target: target, MountsFile: mounts}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(target)
	if !bytes.Equal(got[:len(data)], data) || len(got) != 8<<20 {
		t.Errorf("target holds %d bytes, not the image followed by the rest of the disk", len(got))
	}

	small := filepath.Join(dir, "small.img")
	os.WriteFile(small, make([]byte, 1<<20), 0o644)
	if err := installer.Install(installer.InstallOptions{Image: img, Target: small, MountsFile: mounts}); err == nil || !bytes.Contains([]byte(err.Error()), []byte("needs")) {
		t.Errorf("install onto a too-small disk = %v, want refused", err)
	}
	os.WriteFile(mounts, []byte("/dev/vda1 / ext4 rw 0 0\n"+target+"3 /mnt ext4 rw 0 0\n"), 0o644)
	// A target with a mounted partition (here: its name + "3") is refused.
	err := installer.Install(installer.InstallOptions{Image: img, Target: target, MountsFile: mounts})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("mounted")) {
		t.Errorf("install onto a mounted disk = %v, want refused", err)
	}
}
