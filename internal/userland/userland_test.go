package userland

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testEtc(t *testing.T) Etc {
	t.Helper()
	dir := t.TempDir()
	e := Etc{Passwd: filepath.Join(dir, "passwd"), Group: filepath.Join(dir, "group"), Home: filepath.Join(dir, "home")}
	os.WriteFile(e.Passwd, []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.WriteFile(e.Group, []byte("root:x:0:\nstaff:x:50:\n"), 0o644)
	return e
}

// TestUseradd: a user gets the first free id, its own group, the
// supplementary groups asked for and a home directory it owns.
func TestUseradd(t *testing.T) {
	e := testEtc(t)
	var stderr bytes.Buffer
	if err := e.Useradd([]string{"-G", "staff", "alice"}, nil, &stderr); err != nil {
		t.Fatalf("useradd alice: %v: %s", err, stderr.String())
	}
	if err := e.Useradd([]string{"-u", "2000", "-g", "staff", "-M", "bob"}, nil, &stderr); err != nil {
		t.Fatalf("useradd bob: %v: %s", err, stderr.String())
	}
	passwd, _ := os.ReadFile(e.Passwd)
	group, _ := os.ReadFile(e.Group)
	wantPasswd := "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::" + filepath.Join(e.Home, "alice") + ":/bin/sh\nbob:x:2000:50::" + filepath.Join(e.Home, "bob") + ":/bin/sh\n"
	if string(passwd) != wantPasswd {
		t.Errorf("passwd:\n%s\nwant:\n%s", passwd, wantPasswd)
	}
	if want := "root:x:0:\nstaff:x:50:alice\nalice:x:1000:\n"; string(group) != want {
		t.Errorf("group:\n%s\nwant:\n%s", group, want)
	}
	if os.Geteuid() == 0 {
		fi, err := os.Stat(filepath.Join(e.Home, "alice"))
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("alice's home: %v %v", fi, err)
		}
	}
	if _, err := os.Stat(filepath.Join(e.Home, "bob")); err == nil {
		t.Errorf("-M made bob's home")
	}
	for _, bad := range [][]string{{"alice"}, {"-u", "1000", "carol"}, {"-g", "nosuch", "dave"}, {"Eve"}, {"-G", "nosuch", "frank"}} {
		stderr.Reset()
		if err := e.Useradd(bad, nil, &stderr); err == nil {
			t.Errorf("useradd %v succeeded", bad)
		} else if stderr.Len() == 0 {
			t.Errorf("useradd %v failed saying nothing", bad)
		}
	}
}

// TestChownStat: chown and chgrp by number, stat's format.
func TestChownStat(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	f := filepath.Join(t.TempDir(), "f")
	os.WriteFile(f, nil, 0o644)
	var out, stderr bytes.Buffer
	if err := Chown([]string{"65534:65533", f}, nil, &stderr); err != nil {
		t.Fatalf("chown: %v: %s", err, stderr.String())
	}
	if err := Chgrp([]string{"65532", f}, nil, &stderr); err != nil {
		t.Fatalf("chgrp: %v: %s", err, stderr.String())
	}
	os.Chmod(f, 0o755|os.ModeSetuid)
	if err := Stat([]string{"-c", "%a %A %u %g %F %s", f}, &out, &stderr); err != nil {
		t.Fatalf("stat: %v: %s", err, stderr.String())
	}
	if got, want := strings.TrimSpace(out.String()), "4755 -rwsr-xr-x 65534 65532 regular file 0"; got != want {
		t.Errorf("stat: %q; want %q", got, want)
	}
	stderr.Reset()
	if err := Stat([]string{filepath.Join(t.TempDir(), "missing")}, &out, &stderr); err == nil || !strings.Contains(stderr.String(), "cannot stat") {
		t.Errorf("stat of a missing file: %v %q", err, stderr.String())
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[uint32]string{0o040755 | 0o1000: "drwxr-xr-t", 0o100644 | 0o2000: "-rw-r-Sr--", 0o120777: "lrwxrwxrwx"} {
		if got := modeString(m); got != want {
			t.Errorf("modeString(%o) = %s; want %s", m, got, want)
		}
	}
}

func TestApplyMode(t *testing.T) {
	for _, c := range []struct {
		spec string
		from uint32
		dir  bool
		want uint32
	}{
		{"2750", 0o644, true, 0o2750}, {"4755", 0, false, 0o4755}, {"u+s", 0o755, false, 0o4755}, {"g+s", 0o750, true, 0o2750},
		{"+t", 0o777, true, 0o1777}, {"o-rwx", 0o777, false, 0o770}, {"u=rw,go=r", 0o777, false, 0o644},
		{"a+X", 0o600, true, 0o711}, {"a+X", 0o600, false, 0o600}, {"g-s", 0o2755, true, 0o755},
	} {
		got, err := applyMode(c.spec, c.from, c.dir)
		if err != nil || got != c.want {
			t.Errorf("applyMode(%q, %#o) = %#o, %v; want %#o", c.spec, c.from, got, err, c.want)
		}
	}
	for _, bad := range []string{"8", "17777", "u", "u+q", "x+r"} {
		if _, err := applyMode(bad, 0, false); err == nil {
			t.Errorf("applyMode(%q) accepted", bad)
		}
	}
}
