// Package unpack writes the entries of archives (tar, newc cpio) into a
// directory, confined to it with os.Root: an entry whose name or link
// leads outside the directory is refused with an error naming it, never
// written. Regular files, directories, symbolic and hard links, device
// nodes and FIFOs are kept with their mode, owner and modification time,
// so a root filesystem unpacked here can be given to mkfs.ext4 -d as is.
//
// Tar layers of OCI images carry deletions as whiteout entries
// (".wh.<name>" and ".wh..wh..opq"); with Options.Whiteouts they are
// applied instead of written.
package unpack

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

// Kind is the type of an archive entry.
type Kind int

// Entry kinds.
const (
	Regular Kind = iota
	Dir
	Symlink
	Hardlink
	CharDev
	BlockDev
	FIFO
)

// Entry is one archive member.
type Entry struct {
	// Name is the member's path inside the archive ("./etc/x", "etc/x"
	// and "/etc/x" all mean etc/x).
	Name string
	Kind Kind
	// Perm holds the permission bits with setuid, setgid and sticky.
	Perm     fs.FileMode
	UID, GID int
	ModTime  time.Time
	// Link is a symlink's target, or a hard link's archive path.
	Link         string
	Major, Minor uint32
	// Body is a regular file's content.
	Body io.Reader
}

// Options change how entries are written.
type Options struct {
	// Whiteouts applies OCI/AUFS whiteout entries as deletions.
	Whiteouts bool
	// NoOwner leaves files owned by the caller (for unprivileged use).
	NoOwner bool
	// MaxBytes, if set, bounds the file data written: a tar's sparse
	// members can expand a few bytes into terabytes of zeros.
	MaxBytes int64
}

// Writer writes entries into a directory.
type Writer struct {
	root    *os.Root
	opt     Options
	written int64
	// dirTimes are applied at the end: writing into a directory changes
	// its modification time.
	dirTimes map[string]time.Time
}

// NewWriter writes into root.
func NewWriter(root *os.Root, opt Options) *Writer {
	return &Writer{root: root, opt: opt, dirTimes: map[string]time.Time{}}
}

// Clean turns an archive member name into a path local to the root, or
// reports why it cannot be one.
func Clean(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty name")
	}
	if strings.ContainsRune(name, 0) {
		return "", errors.New("NUL in name")
	}
	p := path.Clean("/" + name)[1:]
	if p == "" {
		return ".", nil
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", errors.New("name climbs out with ..")
		}
	}
	return p, nil
}

// Write writes one entry.
func (w *Writer) Write(e Entry) error {
	p, err := Clean(e.Name)
	if err != nil {
		return fmt.Errorf("unpack: %q: %w", e.Name, err)
	}
	if err := w.write(p, e); err != nil {
		return fmt.Errorf("unpack: %s: %w", p, err)
	}
	return nil
}

func (w *Writer) write(p string, e Entry) error {
	dir, base := path.Split(p)
	if w.opt.Whiteouts && strings.HasPrefix(base, ".wh.") {
		if base == ".wh..wh..opq" {
			return w.clearDir(path.Clean("/" + dir)[1:])
		}
		return w.root.RemoveAll(dir + strings.TrimPrefix(base, ".wh."))
	}
	if dir != "" {
		if err := w.root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if p == "." {
		if e.Kind != Dir {
			return errors.New("the root must be a directory")
		}
		return w.attrs(p, e)
	}
	// An entry replaces what an earlier one (or an earlier layer) left,
	// except that a directory over a directory keeps its contents.
	if st, err := w.root.Lstat(p); err == nil && !(st.IsDir() && e.Kind == Dir) {
		if err := w.root.RemoveAll(p); err != nil {
			return err
		}
	}
	switch e.Kind {
	case Regular:
		f, err := w.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if e.Body != nil {
			body := e.Body
			if w.opt.MaxBytes > 0 {
				body = io.LimitReader(body, w.opt.MaxBytes-w.written+1)
			}
			n, err := io.Copy(f, body)
			w.written += n
			if err == nil && w.opt.MaxBytes > 0 && w.written > w.opt.MaxBytes {
				err = fmt.Errorf("more than %d bytes of file data", w.opt.MaxBytes)
			}
			if err != nil {
				f.Close()
				return err
			}
		}
		if err := f.Close(); err != nil {
			return err
		}
	case Dir:
		if err := w.root.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	case Symlink:
		if e.Link == "" {
			return errors.New("symlink with an empty target")
		}
		// The target is stored as given: it is resolved when used, in
		// the filesystem this tree becomes, not here.
		return w.lchown(w.root.Symlink(e.Link, p), p, e)
	case Hardlink:
		target, err := Clean(e.Link)
		if err != nil {
			return fmt.Errorf("hard link to %q: %w", e.Link, err)
		}
		return w.root.Link(target, p)
	case CharDev, BlockDev, FIFO:
		if err := w.mknod(p, e); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown entry kind %d", e.Kind)
	}
	return w.attrs(p, e)
}

func (w *Writer) lchown(err error, p string, e Entry) error {
	if err != nil || w.opt.NoOwner {
		return err
	}
	return w.root.Lchown(p, e.UID, e.GID)
}

func (w *Writer) attrs(p string, e Entry) error {
	if !w.opt.NoOwner {
		if err := w.root.Lchown(p, e.UID, e.GID); err != nil {
			return err
		}
	}
	// Chmod after chown: chown clears setuid and setgid.
	if err := w.root.Chmod(p, e.Perm&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return err
	}
	if e.Kind == Dir {
		w.dirTimes[p] = e.ModTime
		return nil
	}
	if !e.ModTime.IsZero() {
		return w.root.Chtimes(p, e.ModTime, e.ModTime)
	}
	return nil
}

// mknod makes a device node or FIFO in its parent directory, opened
// through the root so the parent cannot be outside it.
func (w *Writer) mknod(p string, e Entry) error {
	dir, base := path.Split(p)
	if dir == "" {
		dir = "."
	}
	d, err := w.openDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	mode := uint32(unix.S_IFIFO)
	switch e.Kind {
	case CharDev:
		mode = unix.S_IFCHR
	case BlockDev:
		mode = unix.S_IFBLK
	}
	if err := unix.Mknodat(int(d.Fd()), base, mode|0o600, int(unix.Mkdev(e.Major, e.Minor))); err != nil {
		return fmt.Errorf("mknod: %w", err)
	}
	return nil
}

// openDir opens a directory, failing (rather than blocking, as opening a
// FIFO would) on anything else.
func (w *Writer) openDir(dir string) (*os.File, error) {
	return w.root.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
}

// clearDir empties a directory (an opaque whiteout: the lower layers'
// contents are hidden).
func (w *Writer) clearDir(dir string) error {
	f, err := w.openDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := w.root.RemoveAll(path.Join(dir, n)); err != nil {
			return err
		}
	}
	return nil
}

// Finish sets the directories' modification times, which writing into
// them changed.
func (w *Writer) Finish() error {
	for p, t := range w.dirTimes {
		if t.IsZero() {
			continue
		}
		if err := w.root.Chtimes(p, t, t); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("unpack: %s: %w", p, err)
		}
	}
	return nil
}

// Decompress returns a reader of r's data, decompressed if it starts with
// the magic of gzip, zstd, xz or bzip2, and a name for what it found.
func Decompress(r io.Reader) (io.Reader, string, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	head, err := br.Peek(6)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, "", err
	}
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		z, err := gzip.NewReader(br)
		return z, "gzip", err
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		z, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, "", err
		}
		return z.IOReadCloser(), "zstd", nil
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		z, err := xz.NewReader(br)
		return z, "xz", err
	case bytes.HasPrefix(head, []byte("BZh")):
		return bzip2.NewReader(br), "bzip2", nil
	}
	return br, "none", nil
}
