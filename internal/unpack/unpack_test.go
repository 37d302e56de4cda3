package unpack

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
)

type member struct {
	name, body, link string
	typ              byte
	mode             int64
}

func tarball(t testing.TB, ms ...member) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, m := range ms {
		h := &tar.Header{Name: m.name, Typeflag: m.typ, Mode: m.mode, Linkname: m.link, ModTime: time.Unix(1700000000, 0)}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if m.typ == tar.TypeReg {
			h.Size = int64(len(m.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if m.typ == tar.TypeReg {
			tw.Write([]byte(m.body))
		}
	}
	tw.Close()
	return b.Bytes()
}

// sandbox is a directory holding the unpack root, so a test can see that
// nothing was written beside it.
func sandbox(t *testing.T) (*os.Root, string) {
	t.Helper()
	outer := t.TempDir()
	dir := filepath.Join(outer, "root")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, outer
}

func onlyRoot(t testing.TB, outer string) {
	t.Helper()
	ents, _ := os.ReadDir(outer)
	if len(ents) != 1 || ents[0].Name() != "root" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("something was written beside the root: %v", names)
	}
}

func TestTarTree(t *testing.T) {
	r, outer := sandbox(t)
	data := tarball(t,
		member{name: "./", typ: tar.TypeDir, mode: 0o755},
		member{name: "./etc/", typ: tar.TypeDir, mode: 0o755},
		member{name: "./etc/hostname", typ: tar.TypeReg, body: "node\n"},
		member{name: "/usr/bin/su", typ: tar.TypeReg, body: "x", mode: 0o4755},
		member{name: "bin", typ: tar.TypeSymlink, link: "usr/bin"},
		member{name: "etc/hosts.link", typ: tar.TypeLink, link: "./etc/hostname"},
		member{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		member{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600},
	)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(data)
	zw.Close()
	if err := Tar(&gz, r, Options{}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(outer, "root")
	if b, _ := os.ReadFile(filepath.Join(dir, "bin/su")); string(b) != "x" {
		t.Errorf("bin/su through the symlink: %q", b)
	}
	st, err := os.Stat(filepath.Join(dir, "usr/bin/su"))
	if err != nil || st.Mode()&fs.ModeSetuid == 0 || st.Mode().Perm() != 0o755 {
		t.Errorf("usr/bin/su mode: %v %v", st.Mode(), err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "tmp")); st.Mode()&fs.ModeSticky == 0 {
		t.Errorf("tmp lost its sticky bit: %v", st.Mode())
	}
	a, _ := os.Stat(filepath.Join(dir, "etc/hostname"))
	b, _ := os.Stat(filepath.Join(dir, "etc/hosts.link"))
	if !os.SameFile(a, b) {
		t.Error("hard link is not the same file")
	}
	if !a.ModTime().Equal(time.Unix(1700000000, 0)) {
		t.Errorf("mtime %v", a.ModTime())
	}
	if st, _ := os.Stat(filepath.Join(dir, "etc")); !st.ModTime().Equal(time.Unix(1700000000, 0)) {
		t.Errorf("directory mtime %v", st.ModTime())
	}
	if st, _ := os.Lstat(filepath.Join(dir, "run/fifo")); st.Mode()&fs.ModeNamedPipe == 0 {
		t.Errorf("fifo: %v", st.Mode())
	}
	onlyRoot(t, outer)
}

func TestTarRefusesEscapes(t *testing.T) {
	for name, ms := range map[string][]member{
		"dotdot":          {{name: "../evil", typ: tar.TypeReg, body: "x"}},
		"nested dotdot":   {{name: "a/../../evil", typ: tar.TypeReg, body: "x"}},
		"through symlink": {{name: "out", typ: tar.TypeSymlink, link: "../"}, {name: "out/evil", typ: tar.TypeReg, body: "x"}},
		"absolute link":   {{name: "out", typ: tar.TypeSymlink, link: "/tmp"}, {name: "out/evil", typ: tar.TypeReg, body: "x"}},
		"hard link out":   {{name: "evil", typ: tar.TypeLink, link: "../x"}},
	} {
		t.Run(name, func(t *testing.T) {
			r, outer := sandbox(t)
			err := Tar(bytes.NewReader(tarball(t, ms...)), r, Options{})
			if err == nil {
				t.Fatal("unpacked an escaping archive")
			}
			if !strings.Contains(err.Error(), "tar member") {
				t.Errorf("error does not say which member: %v", err)
			}
			onlyRoot(t, outer)
		})
	}
}

func TestWhiteouts(t *testing.T) {
	r, outer := sandbox(t)
	lower := tarball(t,
		member{name: "a/keep", typ: tar.TypeReg, body: "1"},
		member{name: "a/gone", typ: tar.TypeReg, body: "2"},
		member{name: "b/x", typ: tar.TypeReg, body: "3"},
		member{name: "b/y", typ: tar.TypeReg, body: "4"},
	)
	upper := tarball(t,
		member{name: "a/.wh.gone", typ: tar.TypeReg},
		member{name: "b/.wh..wh..opq", typ: tar.TypeReg},
		member{name: "b/z", typ: tar.TypeReg, body: "5"},
	)
	for _, l := range [][]byte{lower, upper} {
		if err := Tar(bytes.NewReader(l), r, Options{Whiteouts: true}); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(outer, "root")
	for p, want := range map[string]bool{"a/keep": true, "a/gone": false, "a/.wh.gone": false, "b/x": false, "b/y": false, "b/z": true} {
		_, err := os.Lstat(filepath.Join(dir, p))
		if (err == nil) != want {
			t.Errorf("%s exists=%v, want %v", p, err == nil, want)
		}
	}
}

func cpioArchive(t testing.TB, recs ...cpio.Record) []byte {
	t.Helper()
	var b bytes.Buffer
	w := cpio.Newc.Writer(&b)
	for _, r := range recs {
		if err := w.WriteRecord(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestCPIOConcatenated(t *testing.T) {
	r, outer := sandbox(t)
	first := cpioArchive(t, cpio.Directory("bin", 0o755), cpio.StaticFile("bin/sh", "base", 0o755), cpio.Symlink("init", "bin/sh"))
	second := cpioArchive(t, cpio.StaticFile("bin/sh", "overlay", 0o755), cpio.CharDev("dev/console", 0o600, 5, 1))
	// The kernel accepts NUL padding between archives; so must we.
	data := append(append(first, make([]byte, 512)...), second...)
	var z bytes.Buffer
	zw, _ := zstd.NewWriter(&z)
	zw.Write(data)
	zw.Close()
	if err := CPIO(&z, r, Options{}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(outer, "root")
	if b, _ := os.ReadFile(filepath.Join(dir, "init")); string(b) != "overlay" {
		t.Errorf("init -> bin/sh = %q, want the overlay's", b)
	}
	st, err := os.Lstat(filepath.Join(dir, "dev/console"))
	if err != nil || st.Mode()&fs.ModeCharDevice == 0 {
		t.Errorf("dev/console: %v %v", st, err)
	}
	onlyRoot(t, outer)
}

func TestCPIOBad(t *testing.T) {
	good := cpioArchive(t, cpio.StaticFile("a", strings.Repeat("x", 100), 0o644))
	for name, data := range map[string][]byte{
		"empty":     nil,
		"not cpio":  []byte("hello world, this is not an archive at all........................................................................................"),
		"truncated": good[:len(good)/2],
		"escape":    cpioArchive(t, cpio.StaticFile("../../evil", "x", 0o644)),
	} {
		t.Run(name, func(t *testing.T) {
			r, outer := sandbox(t)
			if err := CPIO(bytes.NewReader(data), r, Options{}); err == nil {
				t.Fatal("no error")
			} else {
				t.Log(err)
			}
			onlyRoot(t, outer)
		})
	}
}

func FuzzTar(f *testing.F) {
	f.Add(tarball(f, member{name: "a/b", typ: tar.TypeReg, body: "x"}, member{name: "l", typ: tar.TypeSymlink, link: "a"}))
	f.Add(tarball(f, member{name: "../x", typ: tar.TypeReg}))
	f.Add(tarball(f, member{name: "a/.wh..wh..opq", typ: tar.TypeReg}, member{name: "h", typ: tar.TypeLink, link: "a/b"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, outer := sandbox(t)
		Tar(bytes.NewReader(data), r, Options{Whiteouts: true, NoOwner: true, MaxBytes: 1 << 20})
		onlyRoot(t, outer)
	})
}

func FuzzCPIO(f *testing.F) {
	f.Add(cpioArchive(f, cpio.Directory("d", 0o755), cpio.StaticFile("d/f", "x", 0o644), cpio.Symlink("s", "d/f")))
	f.Add(cpioArchive(f, cpio.StaticFile("../x", "x", 0o644)))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, outer := sandbox(t)
		CPIO(bytes.NewReader(data), r, Options{NoOwner: true, MaxBytes: 1 << 20})
		onlyRoot(t, outer)
	})
}
