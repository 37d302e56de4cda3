// Package userland is the handful of user and ownership commands a
// minimal Locus root needs beside u-root's: useradd, su, chown, chgrp,
// stat and chmod. u-root has none of them but a chmod that refuses the
// setuid, setgid and sticky bits, and without them no user but root
// can work in the shared root. The locus binary runs them by name
// (/bin/chown is a link to it), in the way of busybox applets.
//
// The user database is the shared root's /etc/passwd and /etc/group:
// one for the whole cluster, so a user added on one node is that user
// on every node.
package userland

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
)

// Applet is one command: args without the command's name.
type Applet func(args []string, stdout, stderr io.Writer) error

// Applets are the commands by name.
func Applets() map[string]Applet {
	return map[string]Applet{
		"useradd": Useradd,
		"su":      Su,
		"chown":   Chown,
		"chgrp":   Chgrp,
		"stat":    Stat,
		"chmod":   Chmod,
	}
}

// ExitError is a failure whose message was already printed.
type ExitError struct{ Code int }

func (e ExitError) Error() string { return "exit status " + strconv.Itoa(e.Code) }

// lookupUser resolves a user name or number to uid, primary gid and name.
func lookupUser(s string) (uid, gid int, name, home string, err error) {
	u, err := user.Lookup(s)
	if err != nil {
		if n, perr := strconv.Atoi(s); perr == nil && n >= 0 {
			if u, err = user.LookupId(s); err != nil {
				return n, -1, s, "/", nil // a number with no entry: as is
			}
		} else {
			return 0, 0, "", "", fmt.Errorf("no user %q in /etc/passwd", s)
		}
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, u.Username, u.HomeDir, nil
}

// lookupGroup resolves a group name or number.
func lookupGroup(s string) (int, error) {
	g, err := user.LookupGroup(s)
	if err == nil {
		return strconv.Atoi(g.Gid)
	}
	if n, perr := strconv.Atoi(s); perr == nil && n >= 0 {
		return n, nil
	}
	return 0, fmt.Errorf("no group %q in /etc/group", s)
}

// groupsOf is the supplementary groups /etc/group gives name.
func groupsOf(name string, primary int) ([]int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return []int{primary}, nil
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("groups of %s: %w", name, err)
	}
	out := []int{primary}
	for _, s := range ids {
		if n, err := strconv.Atoi(s); err == nil && n != primary {
			out = append(out, n)
		}
	}
	return out, nil
}

// usage is a usage error: printed to stderr, exit status 2.
func usage(stderr io.Writer, cmd, text string) error {
	fmt.Fprintf(stderr, "%s: %s\n", cmd, text)
	return ExitError{Code: 2}
}

// fail prints err prefixed by the command's name and returns exit 1.
func fail(stderr io.Writer, cmd string, err error) error {
	fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
	return ExitError{Code: 1}
}

// appendLine adds line to the file at path (creating it with mode perm),
// refusing a line whose first field is already there.
func appendLine(path, line string, perm os.FileMode) error {
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	key, _, _ := strings.Cut(line, ":")
	for _, l := range strings.Split(string(b), "\n") {
		if k, _, _ := strings.Cut(l, ":"); k == key {
			return fmt.Errorf("%s: %q is already there", path, key)
		}
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		line = "\n" + line
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, perm)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
