package pid1

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Procs starts init's children and reaps orphans. As PID 1, init inherits
// every orphaned process and must reap it; but a blind wait(-1) would steal
// the exit status of children that os/exec is waiting for. So children are
// started under a lock and tracked, and the reaper only waits for zombies
// it does not track.
type Procs struct {
	mu      sync.Mutex
	tracked map[int]bool
}

// NewProcs returns an empty process table.
func NewProcs() *Procs { return &Procs{tracked: map[int]bool{}} }

// Start starts cmd and tracks it until Wait.
func (p *Procs) Start(cmd *exec.Cmd) error {
	// u-root's busybox finds the command to run by following argv[0]'s
	// symlink chain (/bin/sh -> ../bbin/gosh -> bb); a bare "sh" cannot be
	// followed, so argv[0] gets the resolved path.
	if filepath.IsAbs(cmd.Path) && len(cmd.Args) > 0 {
		cmd.Args[0] = cmd.Path
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	p.tracked[cmd.Process.Pid] = true
	return nil
}

// Wait waits for a started cmd and stops tracking it.
func (p *Procs) Wait(cmd *exec.Cmd) error {
	err := cmd.Wait()
	p.mu.Lock()
	delete(p.tracked, cmd.Process.Pid)
	p.mu.Unlock()
	return err
}

// Run starts cmd and waits for it.
func (p *Procs) Run(cmd *exec.Cmd) error {
	if err := p.Start(cmd); err != nil {
		return err
	}
	return p.Wait(cmd)
}

// Reap reaps untracked zombie children on SIGCHLD (and every 10 s, in case
// a signal was coalesced) until ctx ends.
func (p *Procs) Reap(ctx context.Context) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	defer signal.Stop(sig)
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
		case <-t.C:
		}
		p.reapOnce()
	}
}

func (p *Procs) reapOnce() {
	p.mu.Lock()
	defer p.mu.Unlock()
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || p.tracked[pid] {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parens.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] != "Z" || f[1] != strconv.Itoa(self) {
			continue
		}
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	}
}

// Daemon runs argv until ctx ends, restarting it (after a pause that grows
// to 10 s) whenever it exits. Output goes to the console.
//
// root, if set, is the directory the daemon runs chrooted in (the shared
// root); argv[0] is looked up there.
func (p *Procs) Daemon(ctx context.Context, log *slog.Logger, name, root string, argv []string, env []string) {
	backoff := 500 * time.Millisecond
	con := consoleFile()
	defer con.Close()
	for ctx.Err() == nil {
		cmd := commandIn(ctx, root, argv)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = con, con
		cmd.SysProcAttr.Setsid = true
		// Stopped with SIGTERM, not exec's SIGKILL: a daemon leaves what
		// it holds (the DLM's lockspaces, a taken-over root) cleanly; it
		// is killed below if it has not gone within 5 s.
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		started := time.Now()
		if err := p.Start(cmd); err != nil {
			log.Warn("service failed to start", "service", name, "err", err)
		} else {
			done := make(chan error, 1)
			go func() { done <- p.Wait(cmd) }()
			select {
			case err := <-done:
				log.Warn("service exited; restarting", "service", name, "err", fmt.Sprint(err))
			case <-ctx.Done():
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					cmd.Process.Kill()
					<-done
				}
				return
			}
		}
		if time.Since(started) > 30*time.Second {
			backoff = 500 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// consoleFile opens the console for a child's output; the caller closes it.
func consoleFile() *os.File {
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		return f
	}
	f, _ := os.Open(os.DevNull)
	return f
}

// Env is the environment of init's children.
func Env() []string {
	return []string{"PATH=/usr/local/sbin:/usr/local/bin:/bin:/bbin:/sbin:/usr/bin:/usr/sbin", "HOME=/root", "TERM=linux"}
}

// commandIn makes a command that runs chrooted in root ("" is init's own
// root). os/exec looks argv[0] up in init's root, so in another root the
// lookup is done again there.
func commandIn(ctx context.Context, root string, argv []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	cmd.Dir = "/"
	if root == "" {
		return cmd
	}
	cmd.SysProcAttr.Chroot = root
	cmd.Path, cmd.Err = lookPathIn(root, argv[0]), nil
	return cmd
}

// lookPathIn finds file in the PATH of Env inside root and returns its
// path as seen from inside root.
func lookPathIn(root, file string) string {
	if strings.Contains(file, "/") {
		return file
	}
	path := strings.TrimPrefix(Env()[0], "PATH=")
	for _, dir := range strings.Split(path, ":") {
		p := dir + "/" + file
		if fi, err := os.Stat(root + p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return file
}
