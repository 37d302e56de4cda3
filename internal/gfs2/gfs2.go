// Package gfs2 reads what Locus needs of a GFS2 filesystem's superblock
// (its lock protocol and lock table) to find the cluster's shared root
// disk among a node's block devices and to refuse one made for another
// cluster before mounting it.
package gfs2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The on-disk superblock (linux/gfs2_ondisk.h): at 64 KiB, big-endian.
const (
	sbOffset      = 64 << 10
	sbMagic       = 0x01161970
	sbTypeSB      = 1
	lockProtoAt   = 96
	lockTableAt   = 160
	lockNameLen   = 64
	superblockLen = lockTableAt + lockNameLen
)

// Superblock is what a GFS2 superblock says of its cluster.
type Superblock struct {
	LockProto string // lock_dlm (clustered) or lock_nolock
	LockTable string // "<cluster>:<fs>"
}

// ErrNotGFS2 says a device holds no GFS2 filesystem.
var ErrNotGFS2 = errors.New("no GFS2 superblock")

// ParseSuperblock reads a superblock from the bytes at its offset.
func ParseSuperblock(b []byte) (Superblock, error) {
	if len(b) < superblockLen {
		return Superblock{}, fmt.Errorf("gfs2: superblock of %d bytes, want %d", len(b), superblockLen)
	}
	if binary.BigEndian.Uint32(b) != sbMagic || binary.BigEndian.Uint32(b[4:]) != sbTypeSB {
		return Superblock{}, ErrNotGFS2
	}
	str := func(at int) (string, error) {
		f := b[at : at+lockNameLen]
		if i := bytes.IndexByte(f, 0); i >= 0 {
			f = f[:i]
		}
		for _, c := range f {
			if c < 0x20 || c > 0x7e {
				return "", fmt.Errorf("gfs2: superblock field at %d is not text", at)
			}
		}
		return string(f), nil
	}
	proto, err := str(lockProtoAt)
	if err != nil {
		return Superblock{}, err
	}
	table, err := str(lockTableAt)
	if err != nil {
		return Superblock{}, err
	}
	return Superblock{LockProto: proto, LockTable: table}, nil
}

// Read reads the superblock of the filesystem on r.
func Read(r io.ReaderAt) (Superblock, error) {
	b := make([]byte, superblockLen)
	if _, err := r.ReadAt(b, sbOffset); err != nil {
		if errors.Is(err, io.EOF) {
			return Superblock{}, ErrNotGFS2
		}
		return Superblock{}, fmt.Errorf("gfs2: %w", err)
	}
	return ParseSuperblock(b)
}

// Check says whether sb is a clustered filesystem with lock table want.
func (sb Superblock) Check(want string) error {
	if sb.LockProto != "lock_dlm" {
		return fmt.Errorf("gfs2: lock protocol %q, want lock_dlm (a filesystem for one node only)", sb.LockProto)
	}
	if sb.LockTable != want {
		cluster, _, _ := strings.Cut(sb.LockTable, ":")
		return fmt.Errorf("gfs2: lock table %q is cluster %q's, this cluster wants %q", sb.LockTable, cluster, want)
	}
	return nil
}

// Find looks through the whole disks under sysBlock (/sys/block) for the
// GFS2 filesystem with lock table table, and returns its device under
// devDir (/dev). A GFS2 disk of another cluster is an error naming it.
func Find(sysBlock, devDir, table string) (string, error) {
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return "", fmt.Errorf("gfs2: %w", err)
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "ram") || strings.HasPrefix(n, "zram") {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	var other []string
	for _, n := range names {
		dev := filepath.Join(devDir, n)
		f, err := os.Open(dev)
		if err != nil {
			continue
		}
		sb, err := Read(f)
		f.Close()
		if err != nil {
			continue
		}
		if err := sb.Check(table); err != nil {
			other = append(other, fmt.Sprintf("%s: %v", dev, err))
			continue
		}
		return dev, nil
	}
	if len(other) > 0 {
		return "", fmt.Errorf("gfs2: no disk with lock table %q; found %s", table, strings.Join(other, "; "))
	}
	return "", fmt.Errorf("gfs2: no disk with lock table %q among %s", table, strings.Join(names, ", "))
}
