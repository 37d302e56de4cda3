package fsconform

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The users of the checks, as pjdfstest's: none is in /etc/passwd's
// groups with the others, so only the credentials given count.
var (
	root  = Cred{}
	user  = Cred{UID: 65534, GID: 65534}                              // the owner in most checks
	userG = Cred{UID: 65534, GID: 65533, Groups: []int{65533, 65534}} // the same user, member of 65533 too
	other = Cred{UID: 65533, GID: 65533}                              // another user
)

type group struct {
	name string
	run  func(s *suite)
}

// groups are the checks, one group a system call, in the order run.
var groups = []group{
	{"ownership", checkOwnership},
	{"umask", checkUmask},
	{"setgid-dir", checkSetgidDir},
	{"chmod", checkChmod},
	{"chown", checkChown},
	{"open", checkOpen},
	{"mkdir", checkMkdir},
	{"mkfifo", checkMkfifo},
	{"mknod", checkMknod},
	{"link", checkLink},
	{"rename", checkRename},
	{"rmdir", checkRmdir},
	{"unlink", checkUnlink},
	{"symlink", checkSymlink},
	{"truncate", checkTruncate},
	{"write", checkWrite},
	{"utimensat", checkUtimensat},
}

// The calls, each answering "" (success), a value, or an error.

func create(path string, mode uint32) func() (string, error) {
	return func() (string, error) {
		fd, err := unix.Open(path, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, mode)
		if err != nil {
			return "", err
		}
		return "", unix.Close(fd)
	}
}

func open(path string, flags int) func() (string, error) {
	return func() (string, error) {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC|unix.O_NONBLOCK, 0o644)
		if err != nil {
			return "", err
		}
		return "", unix.Close(fd)
	}
}

func call(err func() error) func() (string, error) {
	return func() (string, error) { return "", err() }
}

func mkdir(path string, mode uint32) func() (string, error) {
	return call(func() error { return unix.Mkdir(path, mode) })
}
func chmod(path string, mode uint32) func() (string, error) {
	return call(func() error { return unix.Chmod(path, mode) })
}
func chown(path string, uid, gid int) func() (string, error) {
	return call(func() error { return unix.Chown(path, uid, gid) })
}
func lchown(path string, uid, gid int) func() (string, error) {
	return call(func() error { return unix.Lchown(path, uid, gid) })
}
func unlink(path string) func() (string, error) {
	return call(func() error { return unix.Unlink(path) })
}
func rmdir(path string) func() (string, error) { return call(func() error { return unix.Rmdir(path) }) }
func link(from, to string) func() (string, error) {
	return call(func() error { return unix.Link(from, to) })
}
func rename(from, to string) func() (string, error) {
	return call(func() error { return unix.Rename(from, to) })
}
func symlink(target, path string) func() (string, error) {
	return call(func() error { return unix.Symlink(target, path) })
}
func mkfifo(path string, mode uint32) func() (string, error) {
	return call(func() error { return unix.Mkfifo(path, mode) })
}
func mknod(path string, mode uint32, major, minor uint32) func() (string, error) {
	return call(func() error { return unix.Mknod(path, mode, int(unix.Mkdev(major, minor))) })
}
func truncate(path string, size int64) func() (string, error) {
	return call(func() error { return unix.Truncate(path, size) })
}
func readlink(path string) func() (string, error) {
	return func() (string, error) { return os.Readlink(path) }
}
func write(path string, data string) func() (string, error) {
	return func() (string, error) {
		fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		_, err = unix.Write(fd, []byte(data))
		return "", err
	}
}
func utimens(path string, atime, mtime unix.Timespec, flags int) func() (string, error) {
	return call(func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, path, []unix.Timespec{atime, mtime}, flags) })
}

// stat answers the comma-separated fields of path's lstat: mode (octal,
// permission bits), type, uid, gid, nlink, size, atime, mtime
// (seconds.nanoseconds).
func stat(path, fields string) func() (string, error) {
	return func() (string, error) {
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return "", err
		}
		var out []string
		for _, f := range strings.Split(fields, ",") {
			switch f {
			case "mode":
				out = append(out, fmt.Sprintf("0%o", st.Mode&0o7777))
			case "type":
				out = append(out, typeName(st.Mode))
			case "uid":
				out = append(out, strconv.Itoa(int(st.Uid)))
			case "gid":
				out = append(out, strconv.Itoa(int(st.Gid)))
			case "nlink":
				out = append(out, strconv.Itoa(int(st.Nlink)))
			case "size":
				out = append(out, strconv.FormatInt(st.Size, 10))
			case "atime":
				out = append(out, fmt.Sprintf("%d.%09d", st.Atim.Sec, st.Atim.Nsec))
			case "mtime":
				out = append(out, fmt.Sprintf("%d.%09d", st.Mtim.Sec, st.Mtim.Nsec))
			case "rdev":
				out = append(out, fmt.Sprintf("%d,%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)))
			}
		}
		return strings.Join(out, ","), nil
	}
}

func typeName(m uint32) string {
	switch m & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "char"
	case unix.S_IFBLK:
		return "block"
	case unix.S_IFSOCK:
		return "socket"
	}
	return "unknown"
}

// setup runs op as root; a failure is a failed check.
func (s *suite) setup(what string, op func() (string, error)) {
	_, err := op()
	s.must(what, err)
}

func checkOwnership(s *suite) {
	f, d, l, p := s.p("f"), s.p("d"), s.p("l"), s.p("p")
	s.expect("0", user, "create f 0642", create(f, 0o642))
	s.expect("0642,65534,65534", root, "stat f", stat(f, "mode,uid,gid"))
	s.expect("0", userG, "create g 0600", create(s.p("g"), 0o600))
	s.expect("0600,65534,65533", root, "stat g", stat(s.p("g"), "mode,uid,gid"))
	s.expect("0", user, "mkdir d 0751", mkdir(d, 0o751))
	s.expect("dir,0751,65534,65534", root, "stat d", stat(d, "type,mode,uid,gid"))
	s.expect("0", user, "symlink l", symlink("f", l))
	s.expect("symlink,65534,65534", root, "lstat l", stat(l, "type,uid,gid"))
	s.expect("0", user, "mkfifo p 0620", mkfifo(p, 0o620))
	s.expect("fifo,0620,65534,65534", root, "stat p", stat(p, "type,mode,uid,gid"))
	// The owner may write and chmod what it made; another user may not.
	s.expect("0", user, "write own new file", write(f, "x"))
	s.expect("0", user, "chmod own new file 0600", chmod(f, 0o600))
	s.expect("0600", root, "stat f", stat(f, "mode"))
	s.expect("EPERM", other, "chmod another's file", chmod(f, 0o777))
	s.expect("EACCES", other, "open another's 0600 file for reading", open(f, unix.O_RDONLY))
	s.expect("0", user, "create in own directory", create(s.p("d/in"), 0o644))
	s.expect("EACCES", other, "create in another's 0751 directory", create(s.p("d/x"), 0o644))
	s.expect("0644", other, "stat through another's 0751 directory", stat(s.p("d/in"), "mode"))
	s.expect("EACCES", other, "list-less lookup: open another's 0751 directory", open(d, unix.O_RDONLY))
}

func checkUmask(s *suite) {
	for _, m := range []struct {
		umask, mode, want uint32
	}{{0, 0o777, 0o777}, {0o022, 0o777, 0o755}, {0o077, 0o666, 0o600}, {0o027, 0o770, 0o750}} {
		for _, c := range []Cred{root, user} {
			name := s.p(fmt.Sprintf("f%o-%d", m.umask, c.UID))
			old := unix.Umask(int(m.umask))
			s.expect("0", c, fmt.Sprintf("create 0%o with umask 0%o", m.mode, m.umask), create(name, m.mode))
			dir := name + ".d"
			s.expect("0", c, fmt.Sprintf("mkdir 0%o with umask 0%o", m.mode, m.umask), mkdir(dir, m.mode))
			fifo := name + ".p"
			s.expect("0", c, fmt.Sprintf("mkfifo 0%o with umask 0%o", m.mode, m.umask), mkfifo(fifo, m.mode))
			unix.Umask(old)
			want := fmt.Sprintf("0%o", m.want)
			s.expect(want, root, "stat the file", stat(name, "mode"))
			s.expect(want, root, "stat the directory", stat(dir, "mode"))
			s.expect(want, root, "stat the fifo", stat(fifo, "mode"))
		}
	}
}

func checkSetgidDir(s *suite) {
	d := s.p("sg")
	s.setup("mkdir sg", mkdir(d, 0o777))
	s.setup("chown sg 0:65532", chown(d, 0, 65532))
	s.setup("chmod sg 02777", chmod(d, 0o2777))
	s.expect("02777,65532", root, "stat sg", stat(d, "mode,gid"))
	s.expect("0", user, "create in a setgid directory", create(d+"/f", 0o644))
	s.expect("0644,65534,65532", root, "the file has the directory's group", stat(d+"/f", "mode,uid,gid"))
	s.expect("0", user, "mkdir in a setgid directory", mkdir(d+"/sub", 0o755))
	s.expect("02755,65534,65532", root, "the directory has the group and the setgid bit", stat(d+"/sub", "mode,uid,gid"))
	s.expect("0", user, "mkdir below that", mkdir(d+"/sub/sub2", 0o700))
	s.expect("02700,65534,65532", root, "passed on again", stat(d+"/sub/sub2", "mode,uid,gid"))
	s.expect("0", user, "mkfifo in a setgid directory", mkfifo(d+"/p", 0o600))
	s.expect("65532", root, "the fifo has the directory's group", stat(d+"/p", "gid"))
	s.expect("0", user, "symlink in a setgid directory", symlink("x", d+"/l"))
	s.expect("65532", root, "the symlink has the directory's group", stat(d+"/l", "gid"))
	// A file created setgid in it by a non-member loses the bit.
	s.expect("0", user, "create 02755 as a non-member", create(d+"/g", 0o2755))
	s.expect("0755", root, "no setgid bit for a non-member", stat(d+"/g", "mode"))
	s.expect("0", Cred{UID: 65534, GID: 65534, Groups: []int{65532, 65534}}, "create 02755 as a member", create(d+"/h", 0o2755))
	s.expect("02755", root, "a member's setgid bit stays", stat(d+"/h", "mode"))
}

func checkChmod(s *suite) {
	f := s.p("f")
	s.setup("create f", create(f, 0o644))
	for _, m := range []uint32{0o4755, 0o2755, 0o6755, 0o1777, 0o7777, 0o0} {
		s.expect("0", root, fmt.Sprintf("chmod 0%o", m), chmod(f, m))
		s.expect(fmt.Sprintf("0%o", m), root, "stat", stat(f, "mode"))
	}
	d := s.p("d")
	s.setup("mkdir d", mkdir(d, 0o755))
	s.expect("0", root, "chmod a directory 03777", chmod(d, 0o3777))
	s.expect("03777", root, "stat", stat(d, "mode"))
	u := s.p("u")
	s.setup("create u", create(u, 0o644))
	s.setup("chown u 65534:65534", chown(u, 65534, 65534))
	s.expect("0", user, "owner chmod 04755", chmod(u, 0o4755))
	s.expect("04755", root, "stat", stat(u, "mode"))
	s.expect("0", user, "owner chmod 02755 (member of the file's group)", chmod(u, 0o2755))
	s.expect("02755", root, "stat", stat(u, "mode"))
	s.setup("chgrp u 65532", chown(u, -1, 65532))
	s.expect("0", user, "owner chmod 02755, not in the file's group", chmod(u, 0o2755))
	s.expect("0755", root, "the setgid bit is dropped", stat(u, "mode"))
	s.expect("EPERM", other, "non-owner chmod", chmod(u, 0o777))
	s.expect("0", root, "root chmod another's file", chmod(u, 0o600))
	s.expect("0600", root, "stat", stat(u, "mode"))
	s.expect("ENOENT", root, "chmod of a missing file", chmod(s.p("missing"), 0o644))
	s.expect("0", user, "owner chmod 01644 on a file", chmod(u, 0o1644))
	s.expect("01644", root, "sticky bit on a file kept", stat(u, "mode"))
}

func checkChown(s *suite) {
	f := s.p("f")
	s.setup("create f", create(f, 0o644))
	s.expect("0", root, "root chown 65534:65533", chown(f, 65534, 65533))
	s.expect("65534,65533", root, "stat", stat(f, "uid,gid"))
	s.expect("EPERM", user, "owner gives the file away", chown(f, 65533, -1))
	s.expect("0", userG, "owner chgrp to a group it is in", chown(f, -1, 65534))
	s.expect("65534,65534", root, "stat", stat(f, "uid,gid"))
	s.expect("EPERM", user, "owner chgrp to a group it is not in", chown(f, -1, 65532))
	s.expect("EPERM", other, "non-owner chgrp", chown(f, -1, 65533))
	s.expect("0", user, "owner chown to itself, no change", chown(f, 65534, 65534))
	// chown clears setuid and setgid (a non-root caller's, and root's).
	s.setup("chmod 06555", chmod(f, 0o6555))
	s.expect("0", userG, "owner chgrp of a setuid file", chown(f, -1, 65533))
	s.expect("0555,65533", root, "setuid and setgid cleared", stat(f, "mode,gid"))
	s.setup("chmod 06555", chmod(f, 0o6555))
	s.expect("0", root, "root chown of a setuid file", chown(f, 65533, 65533))
	s.expect("0555,65533,65533", root, "cleared by root's chown too", stat(f, "mode,uid,gid"))
	d := s.p("d")
	s.setup("mkdir d", mkdir(d, 0o755))
	s.setup("chmod d 02755", chmod(d, 0o2755))
	s.expect("0", root, "root chown a setgid directory", chown(d, 65534, 65534))
	s.expect("02755,65534,65534", root, "a directory keeps its setgid bit", stat(d, "mode,uid,gid"))
	l := s.p("l")
	s.setup("symlink l", symlink("f", l))
	s.expect("0", root, "lchown a symlink", lchown(l, 65532, 65532))
	s.expect("65532,65532", root, "the symlink itself changed", stat(l, "uid,gid"))
	s.expect("65533,65533", root, "its target did not", stat(f, "uid,gid"))
	s.expect("0", root, "chown through the symlink", chown(l, 65531, 65531))
	s.expect("65531,65531", root, "the target changed", stat(f, "uid,gid"))
}

func checkOpen(s *suite) {
	f := s.p("f")
	s.setup("create f", create(f, 0o600))
	s.expect("0", root, "root opens a 0600 file of root's for writing", open(f, unix.O_WRONLY))
	s.expect("EACCES", user, "another user opens a 0600 file for reading", open(f, unix.O_RDONLY))
	s.setup("chmod 0644", chmod(f, 0o644))
	s.expect("0", user, "read a 0644 file", open(f, unix.O_RDONLY))
	s.expect("EACCES", user, "write a 0644 file of root's", open(f, unix.O_WRONLY))
	s.expect("EACCES", user, "O_TRUNC without write permission", open(f, unix.O_RDONLY|unix.O_TRUNC))
	s.setup("chmod 0604", chmod(f, 0o604))
	s.setup("chgrp 65534", chown(f, -1, 65534))
	s.expect("EACCES", user, "group bits apply before other bits", open(f, unix.O_RDONLY))
	s.expect("0", other, "other bits for another group", open(f, unix.O_RDONLY))
	s.setup("chmod 0460; chown 65534", chown(f, 65534, -1))
	s.setup("chmod 0460", chmod(f, 0o460))
	s.expect("EACCES", user, "owner bits apply before group bits", open(f, unix.O_WRONLY))
	s.expect("0", user, "the owner's read bit", open(f, unix.O_RDONLY))
	d := s.p("d")
	s.setup("mkdir d 0700", mkdir(d, 0o700))
	s.setup("create d/f", create(d+"/f", 0o666))
	s.expect("EACCES", user, "search a 0700 directory of root's", open(d+"/f", unix.O_RDONLY))
	s.setup("chmod d 0711", chmod(d, 0o711))
	s.expect("0", user, "search a 0711 directory", open(d+"/f", unix.O_RDWR))
	s.expect("EACCES", user, "create in a 0711 directory", open(d+"/new", unix.O_CREAT|unix.O_WRONLY))
	s.expect("EEXIST", root, "O_CREAT|O_EXCL of an existing file", open(f, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY))
	s.expect("EISDIR", root, "open a directory for writing", open(d, unix.O_WRONLY))
	s.expect("ENOTDIR", root, "a file as a directory", open(f+"/x", unix.O_RDONLY))
	s.expect("ENOENT", root, "a missing file", open(s.p("missing"), unix.O_RDONLY))
	s.setup("symlink", symlink("f", s.p("l")))
	s.expect("ELOOP", root, "O_NOFOLLOW of a symlink", open(s.p("l"), unix.O_RDONLY|unix.O_NOFOLLOW))
	s.expect("0", root, "O_TRUNC by root", open(f, unix.O_WRONLY|unix.O_TRUNC))
	s.setup("chmod 0644", chmod(f, 0o644))
	s.expect("EPERM", other, "O_NOATIME on another's file", open(f, unix.O_RDONLY|unix.O_NOATIME))
	s.expect("0", user, "O_NOATIME on one's own file", open(f, unix.O_RDONLY|unix.O_NOATIME))
}

func checkMkdir(s *suite) {
	d := s.p("d")
	s.expect("0", root, "mkdir 0755", mkdir(d, 0o755))
	s.expect("dir,0755,0,0", root, "stat", stat(d, "type,mode,uid,gid"))
	s.expect("EEXIST", root, "mkdir over an existing directory", mkdir(d, 0o755))
	s.expect("0", root, "mkdir 01777", mkdir(s.p("t"), 0o1777))
	s.expect("01777", root, "the sticky bit", stat(s.p("t"), "mode"))
	s.expect("EACCES", user, "mkdir in root's 0755 directory", mkdir(d+"/x", 0o755))
	s.expect("ENOENT", root, "mkdir below a missing directory", mkdir(s.p("missing/x"), 0o755))
	s.expect("3", root, "a new subdirectory links its parent", func() (string, error) {
		if err := unix.Mkdir(d+"/sub", 0o755); err != nil {
			return "", err
		}
		return stat(d, "nlink")()
	})
}

func checkMkfifo(s *suite) {
	p := s.p("p")
	s.expect("0", root, "mkfifo 0666", mkfifo(p, 0o666))
	s.expect("fifo,0666,0,0", root, "stat", stat(p, "type,mode,uid,gid"))
	s.expect("EEXIST", root, "mkfifo over an existing fifo", mkfifo(p, 0o666))
	s.expect("0", user, "a user's mkfifo in a 0777 directory", mkfifo(s.p("q"), 0o640))
	s.expect("0640,65534,65534", root, "stat", stat(s.p("q"), "mode,uid,gid"))
	s.setup("chmod p 0600", chmod(p, 0o600))
	s.expect("EACCES", user, "open root's 0600 fifo", open(p, unix.O_RDONLY))
}

func checkMknod(s *suite) {
	s.expect("0", root, "mknod a character device", mknod(s.p("c"), unix.S_IFCHR|0o640, 1, 3))
	s.expect("char,0640,1,3", root, "stat", stat(s.p("c"), "type,mode,rdev"))
	s.expect("0", root, "mknod a block device", mknod(s.p("b"), unix.S_IFBLK|0o600, 7, 0))
	s.expect("block,0600,7,0", root, "stat", stat(s.p("b"), "type,mode,rdev"))
	s.expect("EPERM", user, "a user's mknod of a device", mknod(s.p("u"), unix.S_IFCHR|0o644, 1, 3))
	s.expect("0", user, "a user's mknod of a fifo", mknod(s.p("f"), unix.S_IFIFO|0o644, 0, 0))
	s.expect("fifo,0644,65534", root, "stat", stat(s.p("f"), "type,mode,uid"))
	s.expect("0", root, "mknod a regular file", mknod(s.p("r"), unix.S_IFREG|0o600, 0, 0))
	s.expect("regular,0600", root, "stat", stat(s.p("r"), "type,mode"))
}

func checkLink(s *suite) {
	f := s.p("f")
	s.setup("create f", create(f, 0o644))
	s.expect("0", root, "link f g", link(f, s.p("g")))
	s.expect("2", root, "two links", stat(f, "nlink"))
	s.expect("EEXIST", root, "link onto an existing name", link(f, s.p("g")))
	s.expect("EPERM", root, "link a directory", func() (string, error) {
		if err := unix.Mkdir(s.p("d"), 0o755); err != nil {
			return "", err
		}
		return link(s.p("d"), s.p("dl"))()
	})
	s.setup("chown f 65534", chown(f, 65534, 65534))
	s.expect("EACCES", user, "link into root's 0755 directory", link(f, s.p("d/x")))
	s.setup("chmod d 0777", chmod(s.p("d"), 0o777))
	s.expect("0", user, "link own file into a 0777 directory", link(f, s.p("d/x")))
	s.expect("3", root, "three links", stat(f, "nlink"))
	s.expect("0", root, "unlink one", unlink(s.p("g")))
	s.expect("2", root, "two links", stat(f, "nlink"))
	s.expect("ENOENT", root, "link a missing file", link(s.p("missing"), s.p("y")))
}

func checkRename(s *suite) {
	f, g := s.p("f"), s.p("g")
	s.setup("create f", create(f, 0o644))
	s.expect("0", root, "rename f g", rename(f, g))
	s.expect("ENOENT", root, "the old name is gone", stat(f, "mode"))
	s.expect("0644", root, "the new name", stat(g, "mode"))
	s.setup("mkdir d", mkdir(s.p("d"), 0o755))
	s.setup("mkdir e", mkdir(s.p("e"), 0o755))
	s.setup("create e/x", create(s.p("e/x"), 0o644))
	s.expect("ENOTEMPTY", root, "rename onto a non-empty directory", rename(s.p("d"), s.p("e")))
	s.expect("EISDIR", root, "rename a file onto a directory", rename(g, s.p("d")))
	s.expect("ENOTDIR", root, "rename a directory onto a file", rename(s.p("d"), g))
	s.expect("EINVAL", root, "rename a directory into itself", rename(s.p("d"), s.p("d/sub")))
	s.setup("create h", create(s.p("h"), 0o600))
	s.expect("0", root, "rename over a file", rename(g, s.p("h")))
	s.expect("0644", root, "the renamed file took the name", stat(s.p("h"), "mode"))
	s.setup("create d/h", create(s.p("d/h"), 0o666))
	s.expect("EACCES", user, "rename in root's 0755 directory", rename(s.p("d/h"), s.p("d/i")))
	s.setup("unlink d/h", unlink(s.p("d/h")))
	// A sticky directory: only the file's owner (or the directory's) moves it.
	t := s.p("t")
	s.setup("mkdir t 01777", mkdir(t, 0o1777))
	s.expect("0", user, "create in the sticky directory", create(t+"/mine", 0o644))
	s.expect("EPERM", other, "rename another's file in a sticky directory", rename(t+"/mine", t+"/theirs"))
	s.expect("0", user, "rename own file in a sticky directory", rename(t+"/mine", t+"/moved"))
	s.expect("0", root, "an empty directory onto an empty directory", func() (string, error) {
		if err := unix.Mkdir(s.p("m"), 0o700); err != nil {
			return "", err
		}
		return rename(s.p("m"), s.p("d"))()
	})
	s.expect("0700", root, "the moved directory", stat(s.p("d"), "mode"))
}

func checkRmdir(s *suite) {
	d := s.p("d")
	s.setup("mkdir d", mkdir(d, 0o755))
	s.setup("create d/f", create(d+"/f", 0o644))
	s.expect("ENOTEMPTY", root, "rmdir a non-empty directory", rmdir(d))
	s.expect("ENOTDIR", root, "rmdir a file", rmdir(d+"/f"))
	s.setup("unlink d/f", unlink(d+"/f"))
	s.setup("mkdir d/e", mkdir(d+"/e", 0o777))
	s.expect("EACCES", user, "rmdir in root's 0755 directory", rmdir(d+"/e"))
	s.expect("0", root, "rmdir", rmdir(d+"/e"))
	s.expect("ENOENT", root, "gone", stat(d+"/e", "mode"))
	t := s.p("t")
	s.setup("mkdir t 01777", mkdir(t, 0o1777))
	s.expect("0", user, "mkdir in a sticky directory", mkdir(t+"/mine", 0o755))
	s.expect("EPERM", other, "rmdir another's directory in a sticky directory", rmdir(t+"/mine"))
	s.expect("0", user, "rmdir own directory in a sticky directory", rmdir(t+"/mine"))
	s.expect("EINVAL", root, "rmdir .", rmdir(d+"/."))
	s.expect("ENOENT", root, "rmdir a missing directory", rmdir(s.p("missing")))
}

func checkUnlink(s *suite) {
	s.setup("mkdir r 0755", mkdir(s.p("r"), 0o755))
	f := s.p("r/f")
	s.setup("create r/f", create(f, 0o666))
	s.expect("EACCES", user, "unlink in root's 0755 directory", unlink(f))
	s.expect("0", root, "unlink", unlink(f))
	s.expect("ENOENT", root, "gone", stat(f, "mode"))
	s.setup("mkdir d", mkdir(s.p("d"), 0o755))
	s.expect("EISDIR", root, "unlink a directory", unlink(s.p("d")))
	t := s.p("t")
	s.setup("mkdir t 01777", mkdir(t, 0o1777))
	s.expect("0", user, "create in a sticky directory", create(t+"/mine", 0o666))
	s.expect("EPERM", other, "unlink another's file in a sticky directory", unlink(t+"/mine"))
	s.expect("0", user, "unlink own file in a sticky directory", unlink(t+"/mine"))
	s.setup("mkfifo p", mkfifo(s.p("p"), 0o644))
	s.expect("0", root, "unlink a fifo", unlink(s.p("p")))
	s.setup("symlink l", symlink("d", s.p("l")))
	s.expect("0", root, "unlink a symlink to a directory", unlink(s.p("l")))
	s.expect("dir", root, "its target stays", stat(s.p("d"), "type"))
}

func checkSymlink(s *suite) {
	l := s.p("l")
	s.expect("0", root, "symlink", symlink("target/path", l))
	s.expect("target/path", root, "readlink", readlink(l))
	s.expect("symlink,0777", root, "lstat", stat(l, "type,mode"))
	s.expect("EEXIST", root, "symlink over an existing name", symlink("x", l))
	long := strings.Repeat("x", 1000)
	s.expect("0", root, "a 1000-byte target", symlink(long, s.p("long")))
	s.expect(long, root, "read back whole", readlink(s.p("long")))
	s.setup("mkdir d 0755", mkdir(s.p("d"), 0o755))
	s.expect("EACCES", user, "symlink in root's 0755 directory", symlink("x", s.p("d/l")))
	s.setup("symlink loop a->b", symlink("b", s.p("a")))
	s.setup("symlink loop b->a", symlink("a", s.p("b")))
	s.expect("ELOOP", root, "open a symlink loop", open(s.p("a"), unix.O_RDONLY))
	s.expect("ENOENT", root, "a dangling symlink", open(l, unix.O_RDONLY))
}

func checkTruncate(s *suite) {
	f := s.p("f")
	s.setup("create f", create(f, 0o644))
	s.setup("chown f 65534", chown(f, 65534, 65534))
	s.expect("0", user, "truncate own file to 12345", truncate(f, 12345))
	s.expect("12345", root, "stat", stat(f, "size"))
	s.expect("0", user, "truncate to 10", truncate(f, 10))
	s.expect("10", root, "stat", stat(f, "size"))
	s.expect("EACCES", other, "truncate another's 0644 file", truncate(f, 0))
	s.expect("EISDIR", root, "truncate a directory", func() (string, error) {
		if err := unix.Mkdir(s.p("d"), 0o755); err != nil {
			return "", err
		}
		return truncate(s.p("d"), 0)()
	})
	s.expect("EINVAL", root, "a negative size", truncate(f, -1))
	s.setup("chmod 06777", chmod(f, 0o6777))
	s.expect("0", other, "truncate another's setuid file", truncate(f, 5))
	s.expect("0777", root, "setuid and setgid cleared", stat(f, "mode"))
}

func checkWrite(s *suite) {
	f := s.p("f")
	s.setup("create f", create(f, 0o644))
	s.setup("chmod 06777", chmod(f, 0o6777))
	s.expect("0", user, "another user writes a setuid file", write(f, "x"))
	s.expect("0777", root, "setuid and setgid cleared", stat(f, "mode"))
	s.setup("chmod 06777", chmod(f, 0o6777))
	s.expect("0", root, "root writes a setuid file", write(f, "y"))
	s.expect("06777", root, "root's write keeps them", stat(f, "mode"))
}

func checkUtimensat(s *suite) {
	f := s.p("f")
	s.setup("create f", create(f, 0o644))
	t1 := unix.Timespec{Sec: 1000000000, Nsec: 123456789}
	t2 := unix.Timespec{Sec: 1100000000, Nsec: 987654321}
	s.expect("0", root, "set atime and mtime", utimens(f, t1, t2, 0))
	s.expect("1000000000,1100000000", root, "seconds", func() (string, error) {
		v, err := stat(f, "atime,mtime")()
		return secondsOnly(v), err
	})
	s.expect("1000000000.123456789,1100000000.987654321", root, "nanoseconds", stat(f, "atime,mtime"))
	omit := unix.Timespec{Nsec: unix.UTIME_OMIT}
	now := unix.Timespec{Nsec: unix.UTIME_NOW}
	s.expect("0", root, "UTIME_OMIT both", utimens(f, omit, omit, 0))
	s.expect("1000000000,1100000000", root, "unchanged", func() (string, error) {
		v, err := stat(f, "atime,mtime")()
		return secondsOnly(v), err
	})
	s.setup("symlink", symlink("f", s.p("l")))
	s.expect("0", root, "set a symlink's own times", utimens(s.p("l"), t2, t1, unix.AT_SYMLINK_NOFOLLOW))
	s.expect("1100000000,1000000000", root, "the symlink's times", func() (string, error) {
		v, err := stat(s.p("l"), "atime,mtime")()
		return secondsOnly(v), err
	})
	s.expect("1000000000,1100000000", root, "its target's are unchanged", func() (string, error) {
		v, err := stat(f, "atime,mtime")()
		return secondsOnly(v), err
	})
	s.expect("EPERM", user, "explicit times on another's file", utimens(f, t1, t1, 0))
	s.expect("EACCES", user, "UTIME_NOW on another's 0644 file", utimens(f, now, now, 0))
	s.setup("chmod 0666", chmod(f, 0o666))
	s.expect("0", user, "UTIME_NOW on another's writable file", utimens(f, now, now, 0))
	s.setup("chown 65534", chown(f, 65534, 65534))
	s.setup("chmod 0444", chmod(f, 0o444))
	s.expect("0", user, "the owner sets explicit times", utimens(f, t1, t1, 0))
}

func secondsOnly(v string) string {
	parts := strings.Split(v, ",")
	for i, p := range parts {
		parts[i], _, _ = strings.Cut(p, ".")
	}
	return strings.Join(parts, ",")
}
