package proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/locus-ssi/locus/services/proc/standin"
	"golang.org/x/sys/unix"
)

// DefaultGrace is how long a job whose stand-in went away has between
// SIGHUP and SIGKILL.
const DefaultGrace = 5 * time.Second

// defaultPath is $PATH for a job whose environment has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Runner runs jobs on this node for stand-ins anywhere in the cluster.
type Runner struct {
	Node    int
	ProcDir string
	// Root, if set, is the directory jobs run chrooted in, asked as each
	// job starts: the node's shared root once init mounted it, where
	// the console's and the services' processes run ("": the daemon's
	// own root).
	Root func() string
	// Helper is the binary whose EnterRootCommand enters Root for a job
	// ("": this process's own executable).
	Helper string
	// Grace is the time between SIGHUP and SIGKILL for a job whose
	// stand-in went away (0: DefaultGrace).
	Grace time.Duration
	Log   *slog.Logger
	// Accepted, if set, is told of each job started here (the load
	// vector counts them until they show in the run queue).
	Accepted func()
}

// Run runs st's job: frames from the stand-in come from recv, the job's
// go out through send, until the job ends (its Exit sent) or the
// stand-in goes away (ctx ends or recv fails): then the job's session
// gets SIGHUP and, Grace later, SIGKILL. A detached job runs on alone:
// Run returns once it started.
func (r *Runner) Run(ctx context.Context, st standin.Start, recv func() (standin.Frame, error), send0 func(standin.Frame) error) error {
	// An exit sent before the job started says which node refused it.
	send := func(f standin.Frame) error {
		if f.Kind == standin.KindExit {
			var e standin.Exit
			if f.Decode(&e) == nil && e.Node == 0 {
				e.Node = r.Node
				f = standin.JSONFrame(standin.KindExit, e)
			}
		}
		return send0(f)
	}
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	if len(st.Argv) == 0 || st.Argv[0] == "" {
		return send(standin.JSONFrame(standin.KindExit, standin.Exit{Code: 2, Reason: "no command given"}))
	}
	if st.User == nil {
		return send(standin.JSONFrame(standin.KindExit, standin.Exit{Code: 126, Reason: "the job carries no user to run as"}))
	}
	env := append(filterEnv(st.Env), "LOCUS_NODE="+strconv.Itoa(r.Node), "LOCUS_ORIGIN="+strconv.Itoa(st.Origin))
	root := ""
	if r.Root != nil {
		root = r.Root()
	}
	rv := openRoot(root)
	defer rv.close()
	path, err := lookPath(rv, st.Argv[0], envValue(env, "PATH", defaultPath), st.Dir)
	if err != nil {
		return send(standin.JSONFrame(standin.KindExit, standin.Exit{Code: 127, Reason: st.Argv[0] + ": command not found"}))
	}
	argv := slices.Clone(st.Argv)
	if fi, err := rv.stat(path, false); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		// A link to a multi-call binary (u-root's /bin/sh, busybox)
		// finds what to be by following argv[0]: give it the path.
		argv[0] = path
	}
	var note string
	dir := st.Dir
	if fi, err := rv.stat(st.Dir, true); st.Dir == "" || err != nil || !fi.IsDir() {
		if st.Dir != "" {
			note = fmt.Sprintf("locus: node %d has no directory %s; the job runs in /\n", r.Node, st.Dir)
		}
		dir = "/"
	}
	var cmd *exec.Cmd
	attr := &syscall.SysProcAttr{Setsid: true}
	if root == "" {
		cmd = exec.Command(path, argv[1:]...)
		cmd.Args[0], cmd.Dir = argv[0], dir
		attr.Credential = &syscall.Credential{Uid: st.User.UID, Gid: st.User.GID, Groups: st.User.Groups}
	} else {
		// Not chrooted by this process's fork: until its child execs,
		// this process waits (a vfork), and with one CPU none of its
		// goroutines runs; a child that execs from a root this daemon
		// serves (the FUSE relay's) would wait for it forever. The
		// helper is this daemon's own binary, in the initramfs; it
		// enters the root, becomes the user and execs the command.
		helper := r.Helper
		if helper == "" {
			if helper, err = os.Executable(); err != nil {
				return send(standin.JSONFrame(standin.KindExit, standin.Exit{Code: 126, Reason: "no helper to enter the node's root: " + err.Error()}))
			}
		}
		cmd = exec.Command(helper, enterRootArgs(root, dir, *st.User, path, argv)...)
		cmd.Dir = "/"
	}
	cmd.Env = env
	cmd.SysProcAttr = attr
	j := &job{r: r, cmd: cmd, send: send, log: log}
	if st.Detach {
		return j.detach(note)
	}
	var outs []*os.File
	var stdin io.WriteCloser
	if st.TTY {
		ptmx, tty, err := pty.Open()
		if err != nil {
			return send(standin.JSONFrame(standin.KindExit, standin.Exit{Code: 126, Reason: "no pseudo-terminal: " + err.Error()}))
		}
		defer tty.Close()
		// The terminal is the user's, as sshd makes it.
		tty.Chown(int(st.User.UID), int(st.User.GID))
		tty.Chmod(0o620)
		if st.Rows > 0 && st.Cols > 0 {
			pty.Setsize(ptmx, &pty.Winsize{Rows: st.Rows, Cols: st.Cols})
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		attr.Setctty, attr.Ctty = true, 0
		if st.Term != "" {
			cmd.Env = append(cmd.Env, "TERM="+st.Term)
		}
		j.ptmx, stdin, outs = ptmx, ptmx, []*os.File{ptmx}
	} else {
		var files []*os.File
		pipe := func() (*os.File, *os.File) {
			pr, pw, err := os.Pipe()
			if err == nil {
				files = append(files, pr, pw)
			}
			return pr, pw
		}
		inR, inW := pipe()
		outR, outW := pipe()
		errR, errW := pipe()
		if len(files) != 6 {
			for _, f := range files {
				f.Close()
			}
			return send(standin.JSONFrame(standin.KindExit, standin.Exit{Code: 126, Reason: "no pipes for the job's stdio"}))
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
		defer func() { inR.Close(); outW.Close(); errW.Close() }()
		stdin, outs = inW, []*os.File{outR, errR}
	}
	if err := cmd.Start(); err != nil {
		for _, f := range outs {
			f.Close()
		}
		stdin.Close()
		return send(standin.JSONFrame(standin.KindExit, startFailed(st.Argv[0], err)))
	}
	// The child has its ends: the job's pipes end when it (and what it
	// started) let go of them.
	if c, ok := cmd.Stdin.(*os.File); ok {
		c.Close()
	}
	if c, ok := cmd.Stdout.(*os.File); ok {
		c.Close()
	}
	if c, ok := cmd.Stderr.(*os.File); ok {
		c.Close()
	}
	if r.Accepted != nil {
		r.Accepted()
	}
	pid := cmd.Process.Pid
	log.Debug("job started", "node", r.Node, "pid", pid, "uid", st.User.UID, "origin", st.Origin, "argv", st.Argv, "tty", st.TTY)
	if err := send(standin.JSONFrame(standin.KindStarted, standin.Started{Node: r.Node, PID: pid, CPID: CPID(r.Node, pid)})); err != nil {
		j.hangUp(pid)
		return err
	}
	if note != "" {
		send(standin.Frame{Kind: standin.KindStderr, Data: []byte(note)})
	}
	return j.serve(ctx, recv, stdin, outs)
}

// job is one running job.
type job struct {
	r    *Runner
	cmd  *exec.Cmd
	send func(standin.Frame) error
	log  *slog.Logger
	ptmx *os.File
}

func (j *job) detach(note string) error {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return j.send(standin.JSONFrame(standin.KindExit, standin.Exit{Code: 126, Reason: err.Error()}))
	}
	defer null.Close()
	j.cmd.Stdin, j.cmd.Stdout, j.cmd.Stderr = null, null, null
	if err := j.cmd.Start(); err != nil {
		return j.send(standin.JSONFrame(standin.KindExit, startFailed(j.cmd.Args[0], err)))
	}
	pid := j.cmd.Process.Pid
	if j.r.Accepted != nil {
		j.r.Accepted()
	}
	j.log.Debug("detached job started", "node", j.r.Node, "pid", pid, "argv", j.cmd.Args)
	go j.cmd.Wait() // reaps it; ends when it exits
	if note != "" {
		j.send(standin.Frame{Kind: standin.KindStderr, Data: []byte(note)})
	}
	return j.send(standin.JSONFrame(standin.KindStarted, standin.Started{Node: j.r.Node, PID: pid, CPID: CPID(j.r.Node, pid)}))
}

// serve relays the job's stdio until it ends or its stand-in goes.
func (j *job) serve(ctx context.Context, recv func() (standin.Frame, error), stdin io.WriteCloser, outs []*os.File) error {
	pid := j.cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- j.cmd.Wait() }()
	var pumps sync.WaitGroup
	for i, f := range outs {
		kind := standin.KindStdout
		if i == 1 {
			kind = standin.KindStderr
		}
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := f.Read(buf)
				if n > 0 {
					if j.send(standin.Frame{Kind: kind, Data: append([]byte(nil), buf[:n]...)}) != nil {
						return
					}
				}
				if err != nil {
					return // EOF, EIO (a terminal whose last user left), or the deadline
				}
			}
		}()
	}
	// Stdin is written apart, so that a job that does not read it holds
	// up only its own input, not its signals.
	input := make(chan []byte, 64)
	go func() {
		for b := range input {
			if b == nil {
				if j.ptmx == nil {
					stdin.Close()
				} else {
					stdin.Write([]byte{4}) // ^D: end of input on a terminal
				}
				continue
			}
			stdin.Write(b)
		}
		if j.ptmx == nil {
			stdin.Close()
		}
	}()
	gone := make(chan struct{})
	go func() {
		defer close(input)
		for {
			f, err := recv()
			if err != nil {
				close(gone)
				return
			}
			switch f.Kind {
			case standin.KindStdin:
				input <- f.Data
			case standin.KindStdinClose:
				input <- nil
			case standin.KindResize:
				var rs standin.Resize
				if f.Decode(&rs) == nil && j.ptmx != nil && rs.Rows > 0 && rs.Cols > 0 {
					pty.Setsize(j.ptmx, &pty.Winsize{Rows: rs.Rows, Cols: rs.Cols})
				}
			case standin.KindSignal:
				var s standin.Signal
				if f.Decode(&s) == nil && s.Signo > 0 && s.Signo < 65 {
					j.signal(pid, syscall.Signal(s.Signo))
				}
			}
		}
	}()
	finish := func(werr error) error {
		// What the job wrote before it ended is sent; a pipe some child
		// of it still holds open is not waited for.
		for _, f := range outs {
			f.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		}
		pumps.Wait()
		for _, f := range outs {
			f.Close()
		}
		return j.send(standin.JSONFrame(standin.KindExit, exitOf(j.cmd.ProcessState, werr)))
	}
	select {
	case err := <-exited:
		return finish(err)
	case <-ctx.Done():
	case <-gone:
	}
	j.log.Info("job's stand-in went away: hanging up its session", "node", j.r.Node, "pid", pid)
	j.hangUp(pid)
	err := <-exited
	for _, f := range outs {
		f.Close()
	}
	pumps.Wait()
	_ = err
	return nil
}

// signal sends sig to the job: its process group, and on a terminal
// also the terminal's foreground group (what ^C would reach).
func (j *job) signal(pid int, sig syscall.Signal) {
	syscall.Kill(-pid, sig)
	if j.ptmx != nil {
		if fg, err := unix.IoctlGetInt(int(j.ptmx.Fd()), unix.TIOCGPGRP); err == nil && fg > 0 && fg != pid {
			syscall.Kill(-fg, sig)
		}
	}
}

// hangUp ends the job's session: SIGHUP (and SIGCONT, for stopped
// members) now, SIGKILL to whatever of it is left after the grace.
func (j *job) hangUp(sid int) {
	grace := j.r.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	for _, p := range sessionMembers(j.r.ProcDir, sid) {
		syscall.Kill(p, syscall.SIGHUP)
		syscall.Kill(p, syscall.SIGCONT)
	}
	if j.ptmx != nil {
		j.ptmx.Close()
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if len(sessionMembers(j.r.ProcDir, sid)) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range sessionMembers(j.r.ProcDir, sid) {
		j.log.Warn("job outlived its hang-up: killed", "node", j.r.Node, "session", sid, "pid", p)
		syscall.Kill(p, syscall.SIGKILL)
	}
	// SIGKILL is not refused, but dying takes a moment.
	for range 100 {
		if len(sessionMembers(j.r.ProcDir, sid)) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sessionMembers lists the live (not zombie) processes of session sid.
func sessionMembers(procDir string, sid int) []int {
	return processesWhere(procDir, func(p Process) bool { return p.SID == sid && p.State != "Z" && p.State != "X" })
}

// processesWhere lists the processes of procDir whose stat keep takes.
func processesWhere(procDir string, keep func(Process) bool) []int {
	if procDir == "" {
		procDir = "/proc"
	}
	ents, _ := os.ReadDir(procDir)
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procDir, e.Name(), "stat"))
		if err != nil {
			continue
		}
		if p, err := ParseStat(b); err == nil && keep(p) {
			out = append(out, pid)
		}
	}
	return out
}

// exitOf is how a process ended.
func exitOf(ps *os.ProcessState, werr error) standin.Exit {
	if ps == nil {
		return standin.Exit{Code: 255, Reason: fmt.Sprintf("wait: %v", werr)}
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok {
		return standin.Exit{Code: ps.ExitCode()}
	}
	if ws.Signaled() {
		return standin.Exit{Code: 128 + int(ws.Signal()), Signal: int(ws.Signal()), Core: ws.CoreDump()}
	}
	return standin.Exit{Code: ws.ExitStatus()}
}

// startFailed is the exit of a command that could not start, with the
// status a shell gives: 127 not found, 126 found but not run.
func startFailed(name string, err error) standin.Exit {
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, exec.ErrNotFound):
		return standin.Exit{Code: 127, Reason: name + ": command not found"}
	case errors.Is(err, os.ErrPermission):
		return standin.Exit{Code: 126, Reason: name + ": permission denied"}
	}
	return standin.Exit{Code: 126, Reason: fmt.Sprintf("%s: %v", name, unwrapPathErr(err))}
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// lookPath finds name as the shell would on the job's $PATH, in the
// job's root; a name with a slash is taken as it is (relative to dir).
// The path returned is as the job sees it.
func lookPath(rv rootView, name, path, dir string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) && dir != "" {
			p = filepath.Join(dir, p)
		}
		if _, err := rv.stat(p, true); err != nil {
			return "", err
		}
		return p, nil
	}
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, name)
		if fi, err := rv.stat(p, true); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// rootView looks at paths as a process chrooted in a job's root sees
// them: symbolic links, absolute ones too, resolve inside it (openat2's
// RESOLVE_IN_ROOT). The root is opened once for all of a job's lookups.
type rootView struct {
	path string
	fd   int   // -1: the daemon's own root
	err  error // the root could not be opened
}

func openRoot(root string) rootView {
	if root == "" || root == "/" {
		return rootView{fd: -1}
	}
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return rootView{path: root, fd: -1, err: &os.PathError{Op: "open", Path: root, Err: err}}
	}
	return rootView{path: root, fd: fd}
}

func (rv rootView) close() {
	if rv.fd >= 0 {
		unix.Close(rv.fd)
	}
}

// stat stats p in the root; follow false stats a final link itself.
func (rv rootView) stat(p string, follow bool) (os.FileInfo, error) {
	switch {
	case rv.err != nil:
		return nil, rv.err
	case rv.fd < 0 && follow:
		return os.Stat(p)
	case rv.fd < 0:
		return os.Lstat(p)
	}
	flags := uint64(unix.O_PATH | unix.O_CLOEXEC)
	if !follow {
		flags |= unix.O_NOFOLLOW
	}
	fd, err := unix.Openat2(rv.fd, p, &unix.OpenHow{Flags: flags, Resolve: unix.RESOLVE_IN_ROOT})
	if err != nil {
		return nil, &os.PathError{Op: "openat2", Path: filepath.Join(rv.path, p), Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	return f.Stat()
}

func envValue(env []string, key, def string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v
		}
	}
	return def
}

// filterEnv drops what belongs to the caller's node, not the job's:
// its Locus job variables and its terminal's name (set again from
// Start.Term).
func filterEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "LOCUS_NODE", "LOCUS_ORIGIN", "LOCUS_CPID", "TERM":
			continue
		}
		out = append(out, kv)
	}
	return out
}
