// Package installer builds the cluster's install disk: a GPT disk image
// (github.com/diskfs/go-diskfs) with an EFI system partition that UEFI
// firmware boots without a menu, a root partition holding the cluster's
// boot tree and spec, and a state partition for the init node's durable
// data. Partitions are found at boot by their GPT names, not by order.
//
// The ESP holds one file, \EFI\BOOT\BOOTX64.EFI: a unified kernel image
// (systemd's EFI stub from Debian's systemd-boot-efi, with the kernel,
// initramfs and command line added as PE sections by objcopy). The
// firmware's default boot path finds it with no boot entry, no menu and
// no keypress, and the kernel, initramfs and command line travel as one
// file. The ext4 partitions are made by e2fsprogs (mkfs.ext4 -d) and
// checked with e2fsck before they are written into the image.
package installer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/locus-ssi/locus/images/layout"
)

// EFIStub is systemd's EFI stub (Debian's systemd-boot-efi).
const EFIStub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

const mib = 1 << 20

// Options say what goes on the disk.
type Options struct {
	Kernel, Initramfs string
	// Cmdline is the kernel command line built into the UKI.
	Cmdline string
	// RootTree is the shared root's content (a scratch directory: Build
	// adds the boot tree and the spec to it). Empty means a root holding
	// only those.
	RootTree string
	// Netboot is the boot tree to put on the root partition.
	Netboot string
	// Spec is the cluster spec, written to /etc/locus/locus.yaml on root.
	Spec []byte
	// StateMiB is the state partition's size (default 64).
	StateMiB int64
	Progress io.Writer
}

// Build writes the install disk to out (raw), through a temporary file.
func Build(ctx context.Context, o Options, out string) error {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.StateMiB == 0 {
		o.StateMiB = 64
	}
	for _, tool := range []string{"objcopy", "mkfs.ext4", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("installer: %s not found (make deps installs binutils and e2fsprogs)", tool)
		}
	}
	if _, err := os.Stat(EFIStub); err != nil {
		return fmt.Errorf("installer: the EFI stub %s is missing (make deps installs systemd-boot-efi)", EFIStub)
	}
	work, err := os.MkdirTemp(filepath.Dir(out), ".disk-")
	if err != nil {
		return fmt.Errorf("installer: %w", err)
	}
	defer os.RemoveAll(work)

	uki := filepath.Join(work, "BOOTX64.EFI")
	if err := MakeUKI(ctx, o.Kernel, o.Initramfs, o.Cmdline, uki); err != nil {
		return err
	}
	fmt.Fprintf(o.Progress, "disk: unified kernel image made\n")

	// The root partition: the root's content, the boot tree and the spec.
	tree := o.RootTree
	if tree == "" {
		tree = filepath.Join(work, "root")
	}
	if err := copyTree(o.Netboot, filepath.Join(tree, layout.DiskNetbootDir)); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(tree, "etc/locus"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tree, "etc/locus/locus.yaml"), o.Spec, 0o644); err != nil {
		return err
	}
	treeSize, files, err := dirSize(tree)
	if err != nil {
		return err
	}
	// Room to grow: a third more than the content, and inodes for twice
	// its files.
	rootMiB := max(128, treeSize*4/3/mib+64)
	rootImg := filepath.Join(work, "root.ext4")
	fmt.Fprintf(o.Progress, "disk: root filesystem: %d files, %d MiB\n", files, treeSize/mib)
	// The root partition may be the shared root, on a disk that the
	// HA-CFS standby sees too: multi-mount protection keeps a second
	// node from mounting it read-write while one has it (services/cfs).
	if err := mkfsExt4(ctx, rootImg, layout.RootName, tree, rootMiB, max(16384, 2*files), "-O", "mmp", "-E", "mmp_update_interval=5"); err != nil {
		return err
	}
	stateImg := filepath.Join(work, "state.ext4")
	if err := mkfsExt4(ctx, stateImg, layout.StateName, "", o.StateMiB, 0); err != nil {
		return err
	}
	ukiSt, err := os.Stat(uki)
	if err != nil {
		return err
	}
	espMiB := max(64, ukiSt.Size()/mib+16)

	// Layout: 1 MiB for the protective MBR and GPT, then the three
	// partitions, then 1 MiB for the backup GPT.
	total := (1 + espMiB + rootMiB + o.StateMiB + 1) * mib
	tmp := filepath.Join(work, "disk.img")
	d, err := diskfs.Create(tmp, total, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("installer: create disk image: %w", err)
	}
	closed := false
	defer func() {
		if !closed {
			d.Close()
		}
	}()
	const sector = 512
	start := uint64(mib / sector)
	var parts []*gpt.Partition
	for i, p := range []struct {
		name string
		typ  gpt.Type
		mib  int64
	}{{layout.ESPName, gpt.EFISystemPartition, espMiB}, {layout.RootName, gpt.LinuxFilesystem, rootMiB}, {layout.StateName, gpt.LinuxFilesystem, o.StateMiB}} {
		size := uint64(p.mib * mib)
		parts = append(parts, &gpt.Partition{Index: i + 1, Start: start, End: start + size/sector - 1, Size: size, Type: p.typ, Name: p.name})
		start += size / sector
	}
	if err := d.Partition(&gpt.Table{LogicalSectorSize: sector, PhysicalSectorSize: sector, ProtectiveMBR: true, Partitions: parts}); err != nil {
		return fmt.Errorf("installer: partition: %w", err)
	}
	esp, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: "LOCUS-ESP"})
	if err != nil {
		return fmt.Errorf("installer: ESP: %w", err)
	}
	if err := esp.Mkdir("/EFI/BOOT"); err != nil {
		return fmt.Errorf("installer: ESP: %w", err)
	}
	if err := copyIntoFS(esp, uki, layout.BootPath); err != nil {
		return err
	}
	for i, img := range []string{rootImg, stateImg} {
		f, err := os.Open(img)
		if err != nil {
			return err
		}
		_, err = d.WritePartitionContents(i+2, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("installer: write partition %d: %w", i+2, err)
		}
	}
	closed = true
	if err := d.Close(); err != nil {
		return fmt.Errorf("installer: close disk image: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("installer: %w", err)
	}
	fmt.Fprintf(o.Progress, "disk: %s, %d MiB (ESP %d, root %d, state %d)\n", filepath.Base(out), total/mib, espMiB, rootMiB, o.StateMiB)
	return nil
}

// MakeUKI makes a unified kernel image from systemd's EFI stub.
func MakeUKI(ctx context.Context, kernel, initrd, cmdline, out string) error {
	dir := filepath.Dir(out)
	osrel := filepath.Join(dir, "os-release")
	cmd := filepath.Join(dir, "cmdline")
	if err := os.WriteFile(osrel, []byte("NAME=Locus\nID=locus\nPRETTY_NAME=\"Locus cluster node\"\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(cmd, []byte(cmdline+"\x00"), 0o644); err != nil {
		return err
	}
	// Section addresses as systemd's ukify of this era placed them; the
	// kernel and initramfs get room enough not to overlap.
	args := []string{
		"--add-section", ".osrel=" + osrel, "--change-section-vma", ".osrel=0x20000",
		"--add-section", ".cmdline=" + cmd, "--change-section-vma", ".cmdline=0x30000",
		"--add-section", ".linux=" + kernel, "--change-section-vma", ".linux=0x2000000",
		"--add-section", ".initrd=" + initrd, "--change-section-vma", ".initrd=0x4000000",
		EFIStub, out,
	}
	if b, err := exec.CommandContext(ctx, "objcopy", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("installer: objcopy (unified kernel image): %v: %s", err, bytes.TrimSpace(b))
	}
	return nil
}

// mkfsExt4 makes an ext4 image of sizeMiB labelled label, filled from dir
// (if any), with more mkfs.ext4 options, and checks it.
func mkfsExt4(ctx context.Context, img, label, dir string, sizeMiB, inodes int64, more ...string) error {
	args := append([]string{"-q", "-F", "-t", "ext4", "-L", label, "-E", "root_owner=0:0"}, more...)
	if inodes > 0 {
		args = append(args, "-N", fmt.Sprint(inodes))
	}
	if dir != "" {
		args = append(args, "-d", dir)
	}
	args = append(args, img, fmt.Sprintf("%dM", sizeMiB))
	if b, err := exec.CommandContext(ctx, "mkfs.ext4", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("installer: mkfs.ext4 %s: %v: %s", label, err, bytes.TrimSpace(b))
	}
	if b, err := exec.CommandContext(ctx, "e2fsck", "-fn", img).CombinedOutput(); err != nil {
		return fmt.Errorf("installer: e2fsck %s: %v: %s", label, err, bytes.TrimSpace(b))
	}
	return nil
}

func copyIntoFS(fs filesystem.FileSystem, src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := fs.OpenFile(dst, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("installer: ESP %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("installer: ESP %s: %w", dst, err)
	}
	return out.Close()
}

func copyTree(src, dst string) error {
	return filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return fmt.Errorf("installer: %w", err)
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if strings.HasPrefix(filepath.Base(p), ".") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

// dirSize is the bytes of the files under dir (counting each block
// used, so small files are not undercounted) and how many entries it has.
func dirSize(dir string) (bytes, files int64, err error) {
	err = filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		files++
		if st, ok := info.Sys().(*syscall.Stat_t); ok && info.Mode().IsRegular() {
			bytes += st.Blocks * 512
		}
		return nil
	})
	return bytes, files, err
}
