package unpack

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"time"
)

// Tar writes every member of the tar stream r (compressed or not) into
// root.
func Tar(r io.Reader, root *os.Root, opt Options) error {
	dr, _, err := Decompress(r)
	if err != nil {
		return fmt.Errorf("unpack: tar: %w", err)
	}
	w := NewWriter(root, opt)
	tr := tar.NewReader(dr)
	for n := 0; ; n++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if n == 0 {
				return errors.New("unpack: tar: no members (not a tar archive?)")
			}
			break
		}
		if err != nil {
			return fmt.Errorf("unpack: tar: member %d: %w", n+1, err)
		}
		e := Entry{
			Name: h.Name, Perm: unixPerm(uint64(h.Mode)), UID: h.Uid, GID: h.Gid, ModTime: h.ModTime,
			Link: h.Linkname, Major: uint32(h.Devmajor), Minor: uint32(h.Devminor),
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			e.Kind, e.Body = Regular, tr
		case tar.TypeDir:
			e.Kind = Dir
		case tar.TypeSymlink:
			e.Kind = Symlink
		case tar.TypeLink:
			e.Kind = Hardlink
		case tar.TypeChar:
			e.Kind = CharDev
		case tar.TypeBlock:
			e.Kind = BlockDev
		case tar.TypeFifo:
			e.Kind = FIFO
		default:
			// Extended headers are consumed by archive/tar; anything else
			// (sockets, GNU sparse files, volume labels) has no place in
			// a root filesystem image.
			continue
		}
		if err := w.Write(e); err != nil {
			return fmt.Errorf("%w (tar member %d)", err, n+1)
		}
	}
	return w.Finish()
}

// CPIO writes every member of the newc cpio stream r (compressed or not;
// several archives one after another, as in a Linux initramfs) into root.
func CPIO(r io.Reader, root *os.Root, opt Options) error {
	dr, _, err := Decompress(r)
	if err != nil {
		return fmt.Errorf("unpack: cpio: %w", err)
	}
	w := NewWriter(root, opt)
	br := bufio.NewReaderSize(dr, 1<<16)
	var off int64
	// Hard links in newc share an inode number; the first name wins.
	inodes := map[[2]uint64]string{}
	members := 0
	for {
		// Between archives the kernel skips NUL padding; so do we.
		for {
			b, err := br.Peek(1)
			if errors.Is(err, io.EOF) {
				if members == 0 {
					return errors.New("unpack: cpio: no members (not a newc cpio archive?)")
				}
				return w.Finish()
			}
			if err != nil {
				return fmt.Errorf("unpack: cpio: offset %d: %w", off, err)
			}
			if b[0] != 0 {
				break
			}
			br.Discard(1)
			off++
		}
		var hdr [110]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return fmt.Errorf("unpack: cpio: offset %d: truncated header: %w", off, err)
		}
		h, err := parseNewc(hdr[:])
		if err != nil {
			return fmt.Errorf("unpack: cpio: offset %d: %w", off, err)
		}
		if h.namesize == 0 || h.namesize > 4096 {
			return fmt.Errorf("unpack: cpio: offset %d: name size %d", off, h.namesize)
		}
		name := make([]byte, h.namesize)
		if _, err := io.ReadFull(br, name); err != nil {
			return fmt.Errorf("unpack: cpio: offset %d: truncated name: %w", off, err)
		}
		off += 110 + int64(h.namesize)
		if pad := pad4(off); pad > 0 {
			if _, err := br.Discard(pad); err != nil {
				return fmt.Errorf("unpack: cpio: offset %d: %w", off, err)
			}
			off += int64(pad)
		}
		n := string(bytes.TrimRight(name, "\x00"))
		body := &io.LimitedReader{R: br, N: int64(h.filesize)}
		if n != "TRAILER!!!" {
			members++
			if err := w.Write(h.entry(n, body, inodes)); err != nil {
				return fmt.Errorf("%w (cpio offset %d)", err, off)
			}
		}
		// Whatever the writer did not read is skipped.
		if _, err := io.Copy(io.Discard, body); err != nil {
			return fmt.Errorf("unpack: cpio: offset %d: %w", off, err)
		}
		if body.N > 0 {
			return fmt.Errorf("unpack: cpio: offset %d: %s: data truncated (%d bytes missing)", off, n, body.N)
		}
		off += int64(h.filesize)
		if pad := pad4(off); pad > 0 {
			if _, err := br.Discard(pad); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("unpack: cpio: offset %d: %w", off, err)
			}
			off += int64(pad)
		}
	}
}

// unixPerm turns Unix mode bits (permissions, setuid, setgid, sticky)
// into Go's.
func unixPerm(mode uint64) fs.FileMode {
	p := fs.FileMode(mode & 0o777)
	if mode&0o4000 != 0 {
		p |= fs.ModeSetuid
	}
	if mode&0o2000 != 0 {
		p |= fs.ModeSetgid
	}
	if mode&0o1000 != 0 {
		p |= fs.ModeSticky
	}
	return p
}

func pad4(off int64) int { return int((4 - off%4) % 4) }

type newcHeader struct {
	ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize uint64
}

func parseNewc(b []byte) (newcHeader, error) {
	var h newcHeader
	magic := string(b[:6])
	if magic != "070701" && magic != "070702" {
		return h, fmt.Errorf("bad magic %q (want newc 070701)", magic)
	}
	fields := []*uint64{&h.ino, &h.mode, &h.uid, &h.gid, &h.nlink, &h.mtime, &h.filesize, &h.devmajor, &h.devminor, &h.rdevmajor, &h.rdevminor, &h.namesize}
	for i, f := range fields {
		v, err := strconv.ParseUint(string(b[6+8*i:14+8*i]), 16, 32)
		if err != nil {
			return h, fmt.Errorf("header field %d: %q is not hex", i+1, b[6+8*i:14+8*i])
		}
		*f = v
	}
	return h, nil
}

func (h newcHeader) entry(name string, body io.Reader, inodes map[[2]uint64]string) Entry {
	e := Entry{
		Name: name, Perm: unixPerm(h.mode), UID: int(h.uid), GID: int(h.gid),
		ModTime: time.Unix(int64(h.mtime), 0), Major: uint32(h.rdevmajor), Minor: uint32(h.rdevminor),
	}
	switch h.mode & 0o170000 {
	case 0o040000:
		e.Kind = Dir
	case 0o120000:
		e.Kind = Symlink
		b, _ := io.ReadAll(io.LimitReader(body, 4096))
		e.Link = string(b)
	case 0o020000:
		e.Kind = CharDev
	case 0o060000:
		e.Kind = BlockDev
	case 0o010000:
		e.Kind = FIFO
	default:
		e.Kind, e.Body = Regular, body
		if h.nlink > 1 {
			key := [2]uint64{h.devmajor<<32 | h.devminor, h.ino}
			if first, ok := inodes[key]; ok {
				e.Kind, e.Body, e.Link = Hardlink, nil, first
			} else {
				inodes[key] = name
			}
		}
	}
	return e
}
