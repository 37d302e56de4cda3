package userland

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Etc is where the user database lives; tests point it elsewhere.
type Etc struct{ Passwd, Group, Home string }

// SystemEtc is the root's own.
var SystemEtc = Etc{Passwd: "/etc/passwd", Group: "/etc/group", Home: "/home"}

// Useradd adds a user to /etc/passwd (and its own group to /etc/group
// unless -g names one), and makes its home directory, owned by it.
func Useradd(args []string, stdout, stderr io.Writer) error {
	return SystemEtc.Useradd(args, stdout, stderr)
}

// Useradd is useradd on e's files.
func (e Etc) Useradd(args []string, _, stderr io.Writer) error {
	fl := flag.NewFlagSet("useradd", flag.ContinueOnError)
	fl.SetOutput(stderr)
	uidFlag := fl.Int("u", -1, "user id (default: the first free from 1000)")
	groupFlag := fl.String("g", "", "primary group, name or number (default: a new group named as the user)")
	groupsFlag := fl.String("G", "", "supplementary groups, comma-separated names")
	homeFlag := fl.String("d", "", "home directory (default: /home/NAME)")
	noHome := fl.Bool("M", false, "make no home directory")
	shell := fl.String("s", "/bin/sh", "login shell")
	if err := fl.Parse(args); err != nil {
		return ExitError{Code: 2}
	}
	if fl.NArg() != 1 {
		return usage(stderr, "useradd", "usage: useradd [-u UID] [-g GROUP] [-G GROUP,...] [-d HOME] [-M] [-s SHELL] NAME")
	}
	name := fl.Arg(0)
	if !validName(name) {
		return usage(stderr, "useradd", fmt.Sprintf("%q is not a valid user name (lower-case letters, digits, _ and -, starting with a letter or _)", name))
	}
	passwd, err := readDB(e.Passwd)
	if err != nil {
		return fail(stderr, "useradd", err)
	}
	groups, err := readDB(e.Group)
	if err != nil {
		return fail(stderr, "useradd", err)
	}
	if passwd.has(name) {
		return fail(stderr, "useradd", fmt.Errorf("user %q exists", name))
	}
	uid := *uidFlag
	if uid < 0 {
		uid = passwd.freeID(1000, groups)
	} else if passwd.hasID(uid) {
		return fail(stderr, "useradd", fmt.Errorf("uid %d is taken", uid))
	}
	gid := -1
	newGroup := *groupFlag == ""
	if newGroup {
		if groups.has(name) {
			return fail(stderr, "useradd", fmt.Errorf("group %q exists: name it with -g", name))
		}
		gid = uid
		if groups.hasID(gid) {
			gid = groups.freeID(1000, passwd)
		}
	} else if gid, err = groups.resolve(*groupFlag); err != nil {
		return fail(stderr, "useradd", err)
	}
	var extra []string
	if *groupsFlag != "" {
		for _, g := range strings.Split(*groupsFlag, ",") {
			if !groups.has(g) {
				return fail(stderr, "useradd", fmt.Errorf("no group %q in %s", g, e.Group))
			}
			extra = append(extra, g)
		}
	}
	home := *homeFlag
	if home == "" {
		home = filepath.Join(e.Home, name)
	}
	if newGroup {
		groups.lines = append(groups.lines, fmt.Sprintf("%s:x:%d:", name, gid))
	}
	for _, g := range extra {
		groups.addMember(g, name)
	}
	passwd.lines = append(passwd.lines, fmt.Sprintf("%s:x:%d:%d::%s:%s", name, uid, gid, home, *shell))
	// The group first: a user whose group is not there yet is worse
	// than a group with no user.
	if err := groups.write(); err != nil {
		return fail(stderr, "useradd", err)
	}
	if err := passwd.write(); err != nil {
		return fail(stderr, "useradd", err)
	}
	if !*noHome {
		if err := os.MkdirAll(filepath.Dir(home), 0o755); err != nil {
			return fail(stderr, "useradd", err)
		}
		if err := os.Mkdir(home, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fail(stderr, "useradd", err)
		}
		if err := os.Lchown(home, uid, gid); err != nil {
			return fail(stderr, "useradd", err)
		}
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c == '_':
		case (c >= '0' && c <= '9') || c == '-':
			if i == 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// db is /etc/passwd or /etc/group, line by line.
type db struct {
	path  string
	lines []string
	mode  os.FileMode
}

func readDB(path string) (*db, error) {
	d := &db{path: path, mode: 0o644}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil {
		d.mode = fi.Mode().Perm()
	}
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			d.lines = append(d.lines, l)
		}
	}
	return d, nil
}

func (d *db) fields(i int) []string { return strings.Split(d.lines[i], ":") }

// field is field i of name's line, "" if there is none (os/user gives
// no login shell).
func (d *db) field(name string, i int) string {
	for n := range d.lines {
		if f := d.fields(n); f[0] == name && len(f) > i {
			return f[i]
		}
	}
	return ""
}

func (d *db) has(name string) bool {
	for i := range d.lines {
		if d.fields(i)[0] == name {
			return true
		}
	}
	return false
}

func (d *db) hasID(id int) bool {
	for i := range d.lines {
		if f := d.fields(i); len(f) > 2 && f[2] == strconv.Itoa(id) {
			return true
		}
	}
	return false
}

// freeID is the first id from min that neither d nor other uses.
func (d *db) freeID(min int, other *db) int {
	for id := min; ; id++ {
		if !d.hasID(id) && !other.hasID(id) {
			return id
		}
	}
}

func (d *db) resolve(s string) (int, error) {
	for i := range d.lines {
		if f := d.fields(i); len(f) > 2 && f[0] == s {
			return strconv.Atoi(f[2])
		}
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return n, nil
	}
	return 0, fmt.Errorf("no group %q in %s", s, d.path)
}

func (d *db) addMember(group, name string) {
	for i := range d.lines {
		f := d.fields(i)
		if f[0] != group || len(f) < 4 {
			continue
		}
		if f[3] == "" {
			f[3] = name
		} else {
			f[3] += "," + name
		}
		d.lines[i] = strings.Join(f, ":")
	}
}

// write replaces the file whole (a temporary file renamed over it), so
// that a reader on any node sees the old file or the new one.
func (d *db) write() error {
	tmp := d.path + ".locus-new"
	if err := os.WriteFile(tmp, []byte(strings.Join(d.lines, "\n")+"\n"), d.mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, d.mode); err != nil {
		os.Remove(tmp)
		return err
	}
	f, err := os.Open(tmp)
	if err == nil {
		err = f.Sync()
		f.Close()
	}
	if err == nil {
		err = os.Rename(tmp, d.path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// Su runs a shell (or -c's command) as another user. Only root may: there
// are no passwords to check in a minimal root.
func Su(args []string, _, stderr io.Writer) error {
	login := false
	var command string
	var rest []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-" || a == "-l" || a == "--login":
			login = true
		case a == "-c" || a == "--command":
			if i+1 == len(args) {
				return usage(stderr, "su", "-c needs a command")
			}
			i++
			command = args[i]
		case strings.HasPrefix(a, "-") && a != "-":
			return usage(stderr, "su", "usage: su [-] [USER] [-c COMMAND]")
		default:
			rest = append(rest, a)
		}
	}
	name := "root"
	if len(rest) > 1 {
		return usage(stderr, "su", "usage: su [-] [USER] [-c COMMAND]")
	}
	if len(rest) == 1 {
		name = rest[0]
	}
	if os.Geteuid() != 0 {
		return fail(stderr, "su", errors.New("only root may switch users here (no passwords in this root)"))
	}
	uid, gid, uname, home, err := lookupUser(name)
	if err != nil {
		return fail(stderr, "su", err)
	}
	if gid < 0 {
		return fail(stderr, "su", fmt.Errorf("uid %s has no entry in /etc/passwd", name))
	}
	groups, err := groupsOf(uname, gid)
	if err != nil {
		return fail(stderr, "su", err)
	}
	shell := "/bin/sh"
	if passwd, err := readDB(SystemEtc.Passwd); err == nil {
		if s := passwd.field(uname, 6); s != "" {
			shell = s
		}
	}
	env := os.Environ()
	if login {
		env = []string{"PATH=" + os.Getenv("PATH"), "TERM=" + os.Getenv("TERM")}
	}
	env = setEnv(env, "HOME", home)
	env = setEnv(env, "USER", uname)
	env = setEnv(env, "LOGNAME", uname)
	env = setEnv(env, "SHELL", shell)
	if err := syscall.Setgroups(groups); err != nil {
		return fail(stderr, "su", fmt.Errorf("setgroups: %w", err))
	}
	if err := syscall.Setgid(gid); err != nil {
		return fail(stderr, "su", fmt.Errorf("setgid %d: %w", gid, err))
	}
	if err := syscall.Setuid(uid); err != nil {
		return fail(stderr, "su", fmt.Errorf("setuid %d: %w", uid, err))
	}
	if login {
		if err := os.Chdir(home); err != nil {
			fmt.Fprintf(stderr, "su: cannot enter %s: %v\n", home, err)
		}
	}
	argv := []string{shell}
	if command != "" {
		argv = append(argv, "-c", command)
	}
	err = syscall.Exec(shell, argv, env)
	return fail(stderr, "su", fmt.Errorf("exec %s: %w", shell, err))
}

func setEnv(env []string, k, v string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, k+"=") {
			out = append(out, e)
		}
	}
	return append(out, k+"="+v)
}

// Chown changes the owner (and group) of files: chown [-R] [-h]
// OWNER[:GROUP] FILE... (":GROUP" changes only the group).
func Chown(args []string, _, stderr io.Writer) error {
	return chown("chown", args, stderr, func(spec string) (int, int, error) {
		owner, group, hasGroup := strings.Cut(spec, ":")
		uid, gid := -1, -1
		if owner != "" {
			u, g, _, _, err := lookupUser(owner)
			if err != nil {
				return 0, 0, err
			}
			uid = u
			if hasGroup && group == "" {
				gid = g // "user:" is the user's group
			}
		}
		if group != "" {
			g, err := lookupGroup(group)
			if err != nil {
				return 0, 0, err
			}
			gid = g
		}
		return uid, gid, nil
	})
}

// Chgrp changes the group of files: chgrp [-R] [-h] GROUP FILE...
func Chgrp(args []string, _, stderr io.Writer) error {
	return chown("chgrp", args, stderr, func(spec string) (int, int, error) {
		g, err := lookupGroup(spec)
		return -1, g, err
	})
}

func chown(cmd string, args []string, stderr io.Writer, parse func(string) (int, int, error)) error {
	fl := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fl.SetOutput(stderr)
	recursive := fl.Bool("R", false, "change directories' contents too (symlinks themselves, not followed)")
	noDeref := fl.Bool("h", false, "change a symlink itself, not its target")
	if err := fl.Parse(args); err != nil {
		return ExitError{Code: 2}
	}
	if fl.NArg() < 2 {
		return usage(stderr, cmd, fmt.Sprintf("usage: %s [-R] [-h] %s FILE...", cmd, map[string]string{"chown": "OWNER[:GROUP]", "chgrp": "GROUP"}[cmd]))
	}
	uid, gid, err := parse(fl.Arg(0))
	if err != nil {
		return fail(stderr, cmd, err)
	}
	failed := false
	for _, p := range fl.Args()[1:] {
		change := os.Chown
		if *noDeref {
			change = os.Lchown
		}
		if err := change(p, uid, gid); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
			failed = true
			continue
		}
		if !*recursive {
			continue
		}
		err := filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if q == p {
				return nil
			}
			return os.Lchown(q, uid, gid)
		})
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
			failed = true
		}
	}
	if failed {
		return ExitError{Code: 1}
	}
	return nil
}

// Stat prints files' status: stat [-L] [-c FORMAT] FILE... FORMAT takes
// coreutils' %a %A %u %U %g %G %n %s %F %i %h %x %y %z %X %Y %Z %%.
func Stat(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("stat", flag.ContinueOnError)
	fl.SetOutput(stderr)
	follow := fl.Bool("L", false, "follow symlinks")
	format := fl.String("c", "", "print FORMAT, a line for each file")
	if err := fl.Parse(args); err != nil {
		return ExitError{Code: 2}
	}
	if fl.NArg() == 0 {
		return usage(stderr, "stat", "usage: stat [-L] [-c FORMAT] FILE...")
	}
	failed := false
	for _, p := range fl.Args() {
		var st unix.Stat_t
		var err error
		if *follow {
			err = unix.Stat(p, &st)
		} else {
			err = unix.Lstat(p, &st)
		}
		if err != nil {
			fmt.Fprintf(stderr, "stat: cannot stat '%s': %v\n", p, err)
			failed = true
			continue
		}
		f := *format
		if f == "" {
			f = "  File: %n\n  Size: %s\t%F\nInode: %i\tLinks: %h\nAccess: (%a/%A)  Uid: (%u/%U)  Gid: (%g/%G)\nAccess: %x\nModify: %y\nChange: %z"
		}
		fmt.Fprintln(stdout, formatStat(f, p, &st))
	}
	if failed {
		return ExitError{Code: 1}
	}
	return nil
}

func formatStat(f, name string, st *unix.Stat_t) string {
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] != '%' || i+1 == len(f) {
			b.WriteByte(f[i])
			continue
		}
		i++
		switch f[i] {
		case 'a':
			b.WriteString(strconv.FormatUint(uint64(st.Mode&0o7777), 8))
		case 'A':
			b.WriteString(modeString(st.Mode))
		case 'u':
			b.WriteString(strconv.Itoa(int(st.Uid)))
		case 'U':
			b.WriteString(userName(int(st.Uid)))
		case 'g':
			b.WriteString(strconv.Itoa(int(st.Gid)))
		case 'G':
			b.WriteString(groupName(int(st.Gid)))
		case 'n':
			b.WriteString(name)
		case 's':
			b.WriteString(strconv.FormatInt(st.Size, 10))
		case 'F':
			b.WriteString(fileType(st.Mode))
		case 'i':
			b.WriteString(strconv.FormatUint(st.Ino, 10))
		case 'h':
			b.WriteString(strconv.FormatUint(uint64(st.Nlink), 10))
		case 'x':
			b.WriteString(stamp(st.Atim))
		case 'y':
			b.WriteString(stamp(st.Mtim))
		case 'z':
			b.WriteString(stamp(st.Ctim))
		case 'X':
			b.WriteString(strconv.FormatInt(st.Atim.Sec, 10))
		case 'Y':
			b.WriteString(strconv.FormatInt(st.Mtim.Sec, 10))
		case 'Z':
			b.WriteString(strconv.FormatInt(st.Ctim.Sec, 10))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(f[i])
		}
	}
	return b.String()
}

func stamp(t unix.Timespec) string {
	return time.Unix(t.Sec, t.Nsec).Format("2006-01-02 15:04:05.000000000 -0700")
}

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return "UNKNOWN"
}

func groupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return "UNKNOWN"
}

func fileType(m uint32) string {
	switch m & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symbolic link"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "character special file"
	case unix.S_IFBLK:
		return "block special file"
	case unix.S_IFSOCK:
		return "socket"
	}
	return "unknown"
}

// modeString is ls -l's mode column: drwsr-sr-t and the like.
func modeString(m uint32) string {
	types := map[uint32]byte{unix.S_IFDIR: 'd', unix.S_IFLNK: 'l', unix.S_IFIFO: 'p', unix.S_IFCHR: 'c', unix.S_IFBLK: 'b', unix.S_IFSOCK: 's'}
	b := []byte("-rwxrwxrwx")
	if t, ok := types[m&unix.S_IFMT]; ok {
		b[0] = t
	}
	for i := 0; i < 9; i++ {
		if m&(1<<uint(8-i)) == 0 {
			b[i+1] = '-'
		}
	}
	special := []struct {
		bit uint32
		pos int
		set byte
	}{{unix.S_ISUID, 3, 's'}, {unix.S_ISGID, 6, 's'}, {unix.S_ISVTX, 9, 't'}}
	for _, s := range special {
		if m&s.bit == 0 {
			continue
		}
		if b[s.pos] == '-' {
			b[s.pos] = s.set - 'a' + 'A'
		} else {
			b[s.pos] = s.set
		}
	}
	return string(b)
}

// Names lists the applets, sorted.
func Names() []string {
	var out []string
	for n := range Applets() {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Chmod changes file modes: chmod [-R] MODE FILE..., MODE octal (up to
// 07777: setuid, setgid and sticky included, which u-root's chmod
// refuses) or symbolic ([ugoa]*[+-=][rwxXst]*, comma-separated).
func Chmod(args []string, _, stderr io.Writer) error {
	fl := flag.NewFlagSet("chmod", flag.ContinueOnError)
	fl.SetOutput(stderr)
	recursive := fl.Bool("R", false, "change directories' contents too")
	// A mode such as -w would be taken for a flag: stop at the first
	// argument that is not -R.
	var rest []string
	for i, a := range args {
		if a == "-R" {
			*recursive = true
			continue
		}
		if a == "--" {
			rest = append(rest, args[i+1:]...)
			break
		}
		rest = append(rest, args[i:]...)
		break
	}
	if len(rest) < 2 {
		return usage(stderr, "chmod", "usage: chmod [-R] MODE FILE...")
	}
	spec := rest[0]
	if _, err := applyMode(spec, 0, false); err != nil {
		return usage(stderr, "chmod", err.Error())
	}
	failed := false
	change := func(p string) error {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return err
		}
		m, _ := applyMode(spec, st.Mode&0o7777, st.Mode&unix.S_IFMT == unix.S_IFDIR)
		return unix.Chmod(p, m)
	}
	for _, p := range rest[1:] {
		if err := change(p); err != nil {
			fmt.Fprintf(stderr, "chmod: %s: %v\n", p, err)
			failed = true
			continue
		}
		if *recursive {
			err := filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
				if err != nil || q == p || d.Type()&fs.ModeSymlink != 0 {
					return err
				}
				return change(q)
			})
			if err != nil {
				fmt.Fprintf(stderr, "chmod: %v\n", err)
				failed = true
			}
		}
	}
	if failed {
		return ExitError{Code: 1}
	}
	return nil
}

// applyMode applies the chmod mode spec to mode (of a directory if dir).
func applyMode(spec string, mode uint32, dir bool) (uint32, error) {
	if n, err := strconv.ParseUint(spec, 8, 32); err == nil {
		if n > 0o7777 {
			return 0, fmt.Errorf("mode %s: more than 07777", spec)
		}
		return uint32(n), nil
	}
	umask := uint32(unix.Umask(0))
	unix.Umask(int(umask))
	for _, clause := range strings.Split(spec, ",") {
		i := 0
		var who uint32
		for ; i < len(clause) && strings.IndexByte("ugoa", clause[i]) >= 0; i++ {
			who |= map[byte]uint32{'u': 0o4700, 'g': 0o2070, 'o': 0o1007, 'a': 0o7777}[clause[i]]
		}
		if i == len(clause) {
			return 0, fmt.Errorf("invalid mode %q", spec)
		}
		for i < len(clause) {
			op := clause[i]
			if op != '+' && op != '-' && op != '=' {
				return 0, fmt.Errorf("invalid mode %q", spec)
			}
			i++
			var bits uint32
			for ; i < len(clause) && strings.IndexByte("rwxXst", clause[i]) >= 0; i++ {
				switch clause[i] {
				case 'r':
					bits |= 0o444
				case 'w':
					bits |= 0o222
				case 'x':
					bits |= 0o111
				case 'X':
					if dir || mode&0o111 != 0 {
						bits |= 0o111
					}
				case 's':
					bits |= 0o6000
				case 't':
					bits |= 0o1000
				}
			}
			mask := who
			if who == 0 { // as "a", less the umask
				mask = 0o7777 &^ umask
			}
			switch op {
			case '+':
				mode |= bits & mask
			case '-':
				mode &^= bits & mask
			case '=':
				clear := who
				if who == 0 {
					clear = 0o7777
				}
				mode = mode&^clear | bits&mask
			}
		}
	}
	return mode, nil
}
