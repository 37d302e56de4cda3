package proc

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/locus-ssi/locus/services/proc/standin"
	"golang.org/x/sys/unix"
)

// localService is node 1's process service with no other node.
func localService(t *testing.T) *Service {
	t.Helper()
	s, err := New(Config{Node: 1, Grace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// attach runs argv on s through a socket pair as the stand-in would, as
// the test's own user.
func attach(t *testing.T, s *Service, st standin.Start, stdin string, sigs <-chan os.Signal) (standin.Started, standin.Exit, string, string) {
	t.Helper()
	return attachAs(t, s, st, standin.User{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}, false, stdin, sigs)
}

// attachAs is attach as user, foreign (an operator's job) or not.
func attachAs(t *testing.T, s *Service, st standin.Start, user standin.User, foreign bool, stdin string, sigs <-chan os.Signal) (standin.Started, standin.Exit, string, string) {
	t.Helper()
	a, b := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Exec(ctx, standin.NewConn(b), user, foreign)
	}()
	var out, errb bytes.Buffer
	var in *strings.Reader
	io := standin.Stdio{Stdout: &out, Stderr: &errb, Signals: sigs}
	if stdin != "" {
		in = strings.NewReader(stdin)
		io.Stdin = in
	}
	started, exit := standin.Attach(ctx, standin.NewConn(a), st, io)
	<-done
	return started, exit, out.String(), errb.String()
}

func TestJobExitStatuses(t *testing.T) {
	s := localService(t)
	for _, c := range []struct {
		argv   []string
		code   int
		signal int
		reason string
	}{
		{[]string{"true"}, 0, 0, ""},
		{[]string{"false"}, 1, 0, ""},
		{[]string{"sh", "-c", "exit 42"}, 42, 0, ""},
		{[]string{"sh", "-c", "kill -TERM $$"}, 128 + 15, 15, ""},
		{[]string{"sh", "-c", "kill -KILL $$"}, 128 + 9, 9, ""},
		{[]string{"sh", "-c", "kill -SEGV $$"}, 128 + 11, 11, ""},
		{[]string{"no-such-command-anywhere"}, 127, 0, "command not found"},
		{[]string{"/etc/passwd"}, 126, 0, "permission denied"},
	} {
		_, e, _, _ := attach(t, s, standin.Start{Node: 1, Argv: c.argv}, "", nil)
		if e.Code != c.code || e.Signal != c.signal || e.Lost || !strings.Contains(e.Reason, c.reason) {
			t.Errorf("%v: exit %+v, want code %d signal %d reason %q", c.argv, e, c.code, c.signal, c.reason)
		}
	}
}

func TestJobStreamsEnvAndDir(t *testing.T) {
	s := localService(t)
	dir := t.TempDir()
	started, e, out, errs := attach(t, s, standin.Start{Node: 1, Argv: []string{"sh", "-c", "wc -l; pwd; echo $FOO $LOCUS_NODE; echo oops >&2"},
		Env: []string{"FOO=bar", "PATH=" + os.Getenv("PATH")}, Dir: dir}, "a\nb\nc\n", nil)
	if e.Code != 0 {
		t.Fatalf("exit %+v (stderr %q)", e, errs)
	}
	if want := "3\n" + dir + "\nbar 1\n"; out != want {
		t.Errorf("stdout %q, want %q", out, want)
	}
	if errs != "oops\n" {
		t.Errorf("stderr %q", errs)
	}
	if started.Node != 1 || started.CPID != CPID(1, started.PID) || started.PID < 2 {
		t.Errorf("started %+v", started)
	}
}

func TestJobSignalReachesGroup(t *testing.T) {
	s := localService(t)
	sigs := make(chan os.Signal, 1)
	go func() {
		time.Sleep(500 * time.Millisecond)
		sigs <- syscall.SIGTERM
	}()
	// The shell's child sleeps in the job's process group; TERM reaches both.
	_, e, _, _ := attach(t, s, standin.Start{Node: 1, Argv: []string{"sh", "-c", "sleep 30; echo survived"}}, "", sigs)
	if e.Signal != int(syscall.SIGTERM) {
		t.Errorf("exit %+v, want death by SIGTERM", e)
	}
}

func TestJobOfAVanishedStandInLeavesNoOrphan(t *testing.T) {
	s := localService(t)
	a, b := net.Pipe()
	ctx := context.Background()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Exec(ctx, standin.NewConn(b), standin.User{}, false)
	}()
	c := standin.NewConn(a)
	// The job ignores SIGHUP: it takes the SIGKILL after the grace.
	c.Write(standin.JSONFrame(standin.KindStart, standin.Start{Node: 1, Argv: []string{"sh", "-c", "trap '' HUP; sleep 300 & sleep 300"}}))
	f, err := c.Read()
	if err != nil || f.Kind != standin.KindStarted {
		t.Fatalf("first frame %q, %v", f.Kind, err)
	}
	var st standin.Started
	f.Decode(&st)
	time.Sleep(300 * time.Millisecond)
	if n := len(sessionMembers("/proc", st.PID)); n < 2 {
		t.Fatalf("the job's session has %d processes, want its shell and sleeps", n)
	}
	c.Close() // the stand-in is gone
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Exec did not end after its stand-in went")
	}
	if left := sessionMembers("/proc", st.PID); len(left) > 0 {
		t.Errorf("processes of the job left behind: %v", left)
	}
}

func TestJobDetached(t *testing.T) {
	s := localService(t)
	st, e, _, _ := attach(t, s, standin.Start{Node: 1, Argv: []string{"sleep", "30"}, Detach: true}, "", nil)
	if e.Code != 0 || st.PID == 0 {
		t.Fatalf("detach: started %+v exit %+v", st, e)
	}
	defer syscall.Kill(st.PID, syscall.SIGKILL)
	time.Sleep(200 * time.Millisecond)
	b, err := os.ReadFile("/proc/" + strconv.Itoa(st.PID) + "/stat")
	if err != nil {
		t.Fatalf("the detached job is gone once its stream ended: %v", err)
	}
	p, _ := ParseStat(b)
	if p.SID != st.PID {
		t.Errorf("the detached job's session is %d, want its own", p.SID)
	}
}

func TestSnapshotHasThisProcess(t *testing.T) {
	s := localService(t)
	ps, errs := s.PS(context.Background(), nil)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, p := range ps {
		if p.PID == os.Getpid() {
			if p.CPID != CPID(1, os.Getpid()) || p.Node != 1 || p.Start < float64(time.Now().Add(-time.Hour).Unix()) || p.RSS == 0 || len(p.Args) == 0 {
				t.Errorf("this process: %+v", p)
			}
			return
		}
	}
	t.Fatalf("this process (%d) is not among %d", os.Getpid(), len(ps))
}

func FuzzParseStat(f *testing.F) {
	b, _ := os.ReadFile("/proc/self/stat")
	f.Add(b)
	f.Add([]byte("1 (a) b) S 0 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0"))
	f.Add([]byte("12 ()"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseStat(b)
	})
}

func TestKillProcessGroup(t *testing.T) {
	s := localService(t)
	cmd := exec.Command("sh", "-c", "sleep 30 & sleep 30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	time.Sleep(200 * time.Millisecond)
	pgid := cmd.Process.Pid
	if n := len(groupMembers("/proc", pgid)); n < 2 {
		t.Fatalf("process group %d has %d members, want the shell and its sleeps", pgid, n)
	}
	if err := s.Kill(context.Background(), standin.User{}, 1, pgid, true, int(syscall.SIGTERM)); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	for deadline := time.Now().Add(2 * time.Second); len(processesWhere("/proc", func(p Process) bool { return p.PGID == pgid && p.State != "Z" })) > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("members of process group %d outlived SIGTERM to the group", pgid)
		}
	}
	// A group whose only member exited and was reaped is gone.
	gone := exec.Command("true")
	gone.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	if err := s.Kill(context.Background(), standin.User{}, 1, gone.Process.Pid, true, int(syscall.SIGTERM)); err == nil || !strings.Contains(err.Error(), "no such process") {
		t.Errorf("a kill of a group that is gone: %v", err)
	}
}

// TestJobRunsInTheNodesRoot: with a process root set (a node's shared
// root, as init reports it), a job runs chrooted there: its command is
// found on that root's PATH, an operator's job gets the user's home and
// name from that root's /etc/passwd, and it reads that root's files.
func TestJobRunsInTheNodesRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: chroot and a bind mount")
	}
	root := t.TempDir()
	for _, d := range []string{"usr", "etc", "home/alice", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The host's programs, seen through the root's own /bin, /lib and
	// /lib64 links (relative ones, as Debian's merged /usr has them).
	if err := unix.Mount("/usr", filepath.Join(root, "usr"), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatalf("bind /usr into the test root: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(filepath.Join(root, "usr"), unix.MNT_DETACH) })
	for _, l := range []string{"bin", "lib", "lib64", "sbin"} {
		if err := os.Symlink("usr/"+l, filepath.Join(root, l)); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nalice:x:4242:4242::/home/alice:/bin/sh\n",
		"etc/marker": "the node's shared root\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(root, "home/alice"), 4242, 4242); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Node: 1, Grace: time.Second, Root: func() string { return root }})
	if err != nil {
		t.Fatal(err)
	}
	_, e, out, errs := attachAs(t, s, standin.Start{Node: 1, Argv: []string{"sh", "-c", "cat /etc/marker; pwd; echo $HOME $USER; id -u"}},
		standin.User{UID: 4242, GID: 4242}, true, "", nil) // an operator's job, as alice
	if e.Code != 0 {
		t.Fatalf("exit %+v (stderr %q)", e, errs)
	}
	if want := "the node's shared root\n/home/alice\n/home/alice alice\n4242\n"; out != want {
		t.Errorf("stdout %q, want %q", out, want)
	}
	// A program only the daemon's own root has (this test's binary, in
	// a build directory) is not found in the node's root.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if _, e, _, _ := attach(t, s, standin.Start{Node: 1, Argv: []string{exe, "-test.run=^$"}}, "", nil); e.Code != 127 {
		t.Errorf("%s, outside the node's root, ran there: exit %+v", exe, e)
	}
}

func TestParsePasswd(t *testing.T) {
	got := parsePasswd(strings.NewReader("root:x:0:0:root:/root:/bin/sh\n\nbad line\n:x:5:5::/nowhere:\nalice:x:4242:4242::/home/alice:/bin/sh\nalice2:x:4242:1::/other:/bin/sh\nbob:x:77:77\nneg:x:-1:0::/:\n"))
	want := map[uint32]account{0: {"root", "/root"}, 4242: {"alice", "/home/alice"}, 77: {"bob", ""}}
	if len(got) != len(want) {
		t.Errorf("parsed %v, want %v", got, want)
	}
	for uid, a := range want {
		if got[uid] != a {
			t.Errorf("uid %d: %+v, want %+v", uid, got[uid], a)
		}
	}
}

// FuzzParsePasswd: a passwd file of any content gives a map, never a
// crash, and every name in it is non-empty.
func FuzzParsePasswd(f *testing.F) {
	f.Add("root:x:0:0:root:/root:/bin/sh\nalice:x:4242:4242::/home/alice:/bin/sh\n")
	f.Add("::::::\n:x:1\nx:x:99999999999:0::/:\n")
	f.Fuzz(func(t *testing.T, s string) {
		for uid, a := range parsePasswd(strings.NewReader(s)) {
			if a.name == "" {
				t.Errorf("uid %d has an empty name", uid)
			}
		}
	})
}

// TestMain lets this test binary be the job helper (EnterRootCommand)
// for the tests that give the runner a root.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == EnterRootCommand {
		err := EnterRoot(os.Args[2:])
		fmt.Fprintln(os.Stderr, "locus:", err)
		os.Exit(126)
	}
	os.Exit(m.Run())
}
