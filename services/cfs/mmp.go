package cfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// The shared root's ext4 has multi-mount protection (mkfs.ext4 -O mmp):
// a node that mounts it read-write keeps a sequence number in the MMP
// block changing (the kernel's kmmpd, every update interval), and a
// mount elsewhere that sees it change refuses with EBUSY ("Device is
// already active on another node"). So node 1, booting while the
// standby serves the disk after a failover, is kept off it by the disk
// itself, whatever the network does. A clean unmount leaves the block
// "clean", and the next mount goes ahead at once; after a crash the
// next mount waits twice the check interval to see that nobody updates
// it, unless the block was cleared by one who knows the old holder is
// off: the standby, once the master fenced the server (ClearMMP).

// MMP is what an ext4 filesystem's MMP block says.
type MMP struct {
	// Enabled is false for a filesystem without multi-mount protection.
	Enabled bool
	// Clean is a block left by a clean unmount (or cleared).
	Clean bool
	// Fsck says e2fsck has the filesystem.
	Fsck bool
	// Node and Device are the hostname and device of the last mount
	// that updated the block.
	Node, Device string
	// Interval is the update interval in seconds (the superblock's).
	Interval int
	// block is the MMP block's byte offset in the device.
	block int64
	// seed is the metadata checksum seed; 0 without metadata_csum.
	seed uint32
	csum bool
}

const (
	superblockOffset = 1024
	mmpMagic         = 0x004D4D50
	mmpSeqClean      = 0xFF4D4D50
	mmpSeqFsck       = 0xE24D4D50
	mmpSize          = 1024
	incompatMMP      = 0x100
	incompatCsumSeed = 0x2000
	roCompatMetaCsum = 0x400
	ext4Magic        = 0xEF53
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the kernel's crc32c_le: no inversion before or after (Go's
// crc32.Update does both).
func crc32c(crc uint32, p []byte) uint32 { return ^crc32.Update(^crc, castagnoli, p) }

// ReadMMP reads the MMP state of the ext4 filesystem on dev.
func ReadMMP(dev string) (MMP, error) {
	f, err := os.Open(dev)
	if err != nil {
		return MMP{}, fmt.Errorf("cfs: mmp: %w", err)
	}
	defer f.Close()
	m, err := parseMMP(f)
	if err != nil {
		return MMP{}, fmt.Errorf("cfs: mmp of %s: %w", dev, err)
	}
	return m, nil
}

// parseMMP reads the superblock and the MMP block through r.
func parseMMP(r io.ReaderAt) (MMP, error) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, superblockOffset); err != nil {
		return MMP{}, fmt.Errorf("superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != ext4Magic {
		return MMP{}, errors.New("not an ext2/3/4 filesystem (superblock magic)")
	}
	logBlock := le.Uint32(sb[0x18:])
	if logBlock > 6 { // blocks of at most 64 KiB
		return MMP{}, fmt.Errorf("block size 2^%d KiB out of range", logBlock)
	}
	blockSize := int64(1024) << logBlock
	incompat, roCompat := le.Uint32(sb[0x60:]), le.Uint32(sb[0x64:])
	m := MMP{Interval: int(le.Uint16(sb[0x166:]))}
	if incompat&incompatMMP == 0 {
		return m, nil
	}
	m.Enabled = true
	blk := le.Uint64(sb[0x168:])
	if blk == 0 || blk > 1<<40 {
		return MMP{}, fmt.Errorf("MMP block number %d out of range", blk)
	}
	m.block = int64(blk) * blockSize
	if roCompat&roCompatMetaCsum != 0 {
		m.csum = true
		if incompat&incompatCsumSeed != 0 {
			m.seed = le.Uint32(sb[0x270:])
		} else {
			m.seed = crc32c(^uint32(0), sb[0x68:0x78]) // the UUID
		}
	}
	b := make([]byte, mmpSize)
	if _, err := r.ReadAt(b, m.block); err != nil {
		return MMP{}, fmt.Errorf("MMP block: %w", err)
	}
	if le.Uint32(b[0:]) != mmpMagic {
		return MMP{}, fmt.Errorf("MMP block at %d: bad magic %#x", m.block, le.Uint32(b[0:]))
	}
	if m.csum && le.Uint32(b[1020:]) != crc32c(m.seed, b[:1020]) {
		return MMP{}, fmt.Errorf("MMP block at %d: bad checksum", m.block)
	}
	seq := le.Uint32(b[4:])
	m.Clean, m.Fsck = seq == mmpSeqClean, seq == mmpSeqFsck
	m.Node = cString(b[16:80])
	m.Device = cString(b[80:112])
	return m, nil
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// ClearMMP marks dev's MMP block clean, so that the next mount need not
// wait to see whether another node still updates it: what tune2fs -E
// clear_mmp does. Only for one who knows no other node has the
// filesystem mounted: the standby after the master fenced the server.
func ClearMMP(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("cfs: clear mmp: %w", err)
	}
	defer f.Close()
	m, err := parseMMP(f)
	if err != nil {
		return fmt.Errorf("cfs: clear mmp of %s: %w", dev, err)
	}
	if !m.Enabled || m.Clean {
		return nil
	}
	b := make([]byte, mmpSize)
	if _, err := f.ReadAt(b, m.block); err != nil {
		return fmt.Errorf("cfs: clear mmp of %s: %w", dev, err)
	}
	binary.LittleEndian.PutUint32(b[4:], mmpSeqClean)
	if m.csum {
		binary.LittleEndian.PutUint32(b[1020:], crc32c(m.seed, b[:1020]))
	}
	if _, err := f.WriteAt(b, m.block); err != nil {
		return fmt.Errorf("cfs: clear mmp of %s: %w", dev, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cfs: clear mmp of %s: %w", dev, err)
	}
	return nil
}
