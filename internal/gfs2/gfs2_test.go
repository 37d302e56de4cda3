package gfs2

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func superblock(proto, table string) []byte {
	b := make([]byte, superblockLen)
	binary.BigEndian.PutUint32(b, sbMagic)
	binary.BigEndian.PutUint32(b[4:], sbTypeSB)
	copy(b[lockProtoAt:], proto)
	copy(b[lockTableAt:], table)
	return b
}

func TestParseSuperblock(t *testing.T) {
	sb, err := ParseSuperblock(superblock("lock_dlm", "locus:root"))
	if err != nil || sb.LockTable != "locus:root" || sb.Check("locus:root") != nil {
		t.Fatalf("%+v %v", sb, err)
	}
	if err := sb.Check("other:root"); err == nil || !strings.Contains(err.Error(), `cluster "locus"`) {
		t.Errorf("another cluster's disk: %v", err)
	}
	if sb, _ := ParseSuperblock(superblock("lock_nolock", "locus:root")); sb.Check("locus:root") == nil {
		t.Error("a lock_nolock filesystem passed as clustered")
	}
	if _, err := ParseSuperblock(make([]byte, superblockLen)); err != ErrNotGFS2 {
		t.Errorf("zeros: %v", err)
	}
	bad := superblock("lock_dlm", "x")
	bad[lockTableAt+1] = 0xff
	if _, err := ParseSuperblock(bad); err == nil {
		t.Error("binary lock table accepted")
	}
}

// TestMkfsGFS2: the superblock of a filesystem Debian's mkfs.gfs2 made
// is read as it wrote it, and Find picks it among other disks.
func TestMkfsGFS2(t *testing.T) {
	mkfs, err := exec.LookPath("mkfs.gfs2")
	if err != nil {
		t.Skip("no mkfs.gfs2 (gfs2-utils; make deps installs it)")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "vdb")
	if err := os.WriteFile(filepath.Join(dir, "vda"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 256<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-O", "-p", "lock_dlm", "-t", "test:root", "-j", "2", "-J", "8", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.gfs2: %v\n%s", err, out)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sb, err := Read(f)
	if err != nil || sb.LockProto != "lock_dlm" || sb.LockTable != "test:root" {
		t.Fatalf("%+v %v", sb, err)
	}
	sys := filepath.Join(dir, "sys")
	for _, n := range []string{"vda", "vdb", "loop0"} {
		os.MkdirAll(filepath.Join(sys, n), 0o755)
	}
	if dev, err := Find(sys, dir, "test:root"); err != nil || dev != img {
		t.Errorf("Find: %q %v", dev, err)
	}
	if _, err := Find(sys, dir, "other:root"); err == nil || !strings.Contains(err.Error(), `"test"`) {
		t.Errorf("Find for another cluster: %v", err)
	}
}

// FuzzParseSuperblock: any bytes on a disk give a superblock or an error.
func FuzzParseSuperblock(f *testing.F) {
	f.Add(superblock("lock_dlm", "locus:root"))
	f.Add(make([]byte, superblockLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseSuperblock(b)
	})
}
