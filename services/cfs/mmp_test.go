package cfs

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mmpImage makes an ext4 image with multi-mount protection, as the
// installer makes the shared root.
func mmpImage(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("no mkfs.ext4")
	}
	img := filepath.Join(t.TempDir(), "root.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-O", "mmp", "-E", "mmp_update_interval=5", img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return img
}

// debugfsMMP is e2fsprogs' own reading of the MMP block.
func debugfsMMP(t *testing.T, img string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "dump_mmp", img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs dump_mmp: %v: %s", err, out)
	}
	return string(out)
}

// TestMMP: the MMP block read as e2fsprogs writes it; one left by a
// crashed mount (sequence changed, node named) read as not clean;
// ClearMMP makes it clean with a checksum e2fsprogs accepts.
func TestMMP(t *testing.T) {
	img := mmpImage(t)
	m, err := ReadMMP(img)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Enabled || !m.Clean || m.Interval != 5 || !m.csum {
		t.Fatalf("fresh filesystem: %+v; want enabled, clean, interval 5, checksummed", m)
	}
	// What a crash leaves: kmmpd's last sequence number and node name.
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, mmpSize)
	f.ReadAt(b, m.block)
	binary.LittleEndian.PutUint32(b[4:], 0x12345678)
	copy(b[16:80], append([]byte("node2"), make([]byte, 59)...))
	binary.LittleEndian.PutUint32(b[1020:], crc32c(m.seed, b[:1020]))
	f.WriteAt(b, m.block)
	f.Close()
	if out := debugfsMMP(t, img); !strings.Contains(out, "sequence: 12345678") || strings.Contains(strings.ToLower(out), "checksum error") {
		t.Fatalf("e2fsprogs does not read the block as written:\n%s", out)
	}
	if m, err = ReadMMP(img); err != nil || m.Clean || m.Node != "node2" {
		t.Fatalf("after a crash: %+v, %v; want not clean, held by node2", m, err)
	}
	if err := ClearMMP(img); err != nil {
		t.Fatal(err)
	}
	if m, err = ReadMMP(img); err != nil || !m.Clean {
		t.Fatalf("after ClearMMP: %+v, %v", m, err)
	}
	out := debugfsMMP(t, img)
	if !strings.Contains(out, "sequence: ff4d4d50") {
		t.Errorf("e2fsprogs does not see a clean block:\n%s", out)
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck after ClearMMP: %v\n%s", err, out)
	}
	// A corrupt block is refused, not taken for clean.
	f, _ = os.OpenFile(img, os.O_RDWR, 0)
	f.WriteAt([]byte{0xff}, m.block+200)
	f.Close()
	if _, err := ReadMMP(img); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("a block with a bad checksum: %v", err)
	}
	// No MMP: nothing to do.
	plain := filepath.Join(t.TempDir(), "plain.img")
	exec.Command("mkfs.ext4", "-q", "-F", plain, "8M").Run()
	if m, err := ReadMMP(plain); err != nil || m.Enabled {
		t.Errorf("a filesystem without MMP: %+v, %v", m, err)
	}
	if err := ClearMMP(plain); err != nil {
		t.Errorf("ClearMMP without MMP: %v", err)
	}
}

// mmpSeed is a small filesystem head as mkfs.ext4 -O mmp lays it out
// with 1 KiB blocks, its MMP block at block 2 (checksummed).
func mmpSeed() []byte {
	b := make([]byte, 3*1024)
	sb := b[1024:2048]
	le := binary.LittleEndian
	le.PutUint16(sb[0x38:], ext4Magic)
	le.PutUint32(sb[0x60:], incompatMMP)
	le.PutUint32(sb[0x64:], roCompatMetaCsum)
	copy(sb[0x68:0x78], "0123456789abcdef")
	le.PutUint16(sb[0x166:], 5)
	le.PutUint64(sb[0x168:], 2)
	mmp := b[2048:]
	le.PutUint32(mmp[0:], mmpMagic)
	le.PutUint32(mmp[4:], mmpSeqClean)
	copy(mmp[16:], "node1")
	le.PutUint32(mmp[1020:], crc32c(crc32c(^uint32(0), sb[0x68:0x78]), mmp[:1020]))
	return b
}

// FuzzParseMMP: a disk's superblock and MMP block are outside input
// (any disk attached to the node): parsing never panics, and what it
// accepts lies inside what was read.
func FuzzParseMMP(f *testing.F) {
	f.Add(mmpSeed())
	f.Fuzz(func(t *testing.T, disk []byte) {
		m, err := parseMMP(bytes.NewReader(disk))
		if err != nil || !m.Enabled {
			return
		}
		if m.block < 0 || m.block+mmpSize > int64(len(disk)) {
			t.Fatalf("accepted an MMP block at %d of a %d-byte disk", m.block, len(disk))
		}
	})
}

// TestMMPSeed: the fuzz seed is a valid, clean MMP filesystem head.
func TestMMPSeed(t *testing.T) {
	m, err := parseMMP(bytes.NewReader(mmpSeed()))
	if err != nil || !m.Enabled || !m.Clean || m.Node != "node1" {
		t.Fatalf("%+v, %v", m, err)
	}
}
