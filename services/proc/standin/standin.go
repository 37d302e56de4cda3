package standin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// Stdio is the stand-in's side of a job: its streams, and whether the
// job gets a terminal.
type Stdio struct {
	// Stdin is read for the job's stdin (nil: none, closed at once); a
	// terminal (an *os.File) is read only while this process is in its
	// foreground.
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// TTY puts Stdin (a terminal) in raw mode for the job's
	// pseudo-terminal, and forwards its size as it changes.
	TTY bool
	// Signals are passed on to the job as they come (a command line's
	// stand-in gives what os/signal gets of Relayed; nil: none).
	Signals <-chan os.Signal
	// OnStarted, if set, is told where the job runs once it does.
	OnStarted func(Started)
}

// Relayed are the signals a command line's stand-in passes on to its
// job.
func Relayed() []os.Signal {
	return []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1,
		syscall.SIGUSR2, syscall.SIGALRM, syscall.SIGWINCH, syscall.SIGCONT, syscall.SIGTSTP}
}

// Attach runs st through c as its stand-in and returns how the job
// ended. A stream that ends without the job's Exit is a lost job.
func Attach(ctx context.Context, c *Conn, st Start, io Stdio) (Started, Exit) {
	defer c.Close()
	tty, _ := io.Stdin.(*os.File)
	if !io.TTY {
		tty = nil
	}
	if tty != nil {
		if ws, err := unix.IoctlGetWinsize(int(tty.Fd()), unix.TIOCGWINSZ); err == nil {
			st.Rows, st.Cols = ws.Row, ws.Col
		}
		st.TTY = true
	}
	if err := c.Write(JSONFrame(KindStart, st)); err != nil {
		return Started{}, Lost("the node daemon: " + err.Error())
	}
	first, err := c.Read()
	if err != nil {
		return Started{}, Lost("the node daemon closed the stream: " + errText(err))
	}
	if first.Kind == KindStderr { // a detached job's note comes first
		io.Stderr.Write(first.Data)
		if first, err = c.Read(); err != nil {
			return Started{}, Lost("the node daemon closed the stream: " + errText(err))
		}
	}
	var started Started
	switch first.Kind {
	case KindExit:
		var e Exit
		if err := first.Decode(&e); err != nil {
			return Started{}, Lost(err.Error())
		}
		return Started{}, e
	case KindStarted:
		if err := first.Decode(&started); err != nil {
			return Started{}, Lost(err.Error())
		}
	default:
		return Started{}, Lost(fmt.Sprintf("the stream began with a %q frame", first.Kind))
	}
	if io.OnStarted != nil {
		io.OnStarted(started)
	}
	if st.Detach {
		return started, Exit{}
	}
	if tty != nil {
		if old, err := term.MakeRaw(int(tty.Fd())); err == nil {
			defer term.Restore(int(tty.Fd()), old)
		}
	}
	stop := make(chan struct{})
	var bg sync.WaitGroup
	defer bg.Wait()
	defer close(stop)
	if io.Signals != nil {
		bg.Add(1)
		go func() {
			defer bg.Done()
			relaySignals(c, tty, io.Signals, stop)
		}()
	}
	if io.Stdin != nil {
		go pumpStdin(c, io.Stdin, stop) // ends with the process: a read of a terminal cannot be interrupted
	} else {
		c.Write(Frame{Kind: KindStdinClose})
	}
	for {
		f, err := c.Read()
		if err != nil {
			return started, Lost(fmt.Sprintf("lost the stream to node %d: %s", started.Node, errText(err)))
		}
		switch f.Kind {
		case KindStdout:
			if _, err := io.Stdout.Write(f.Data); err != nil {
				return started, Exit{Code: 141, Signal: int(syscall.SIGPIPE), Reason: "stdout closed"}
			}
		case KindStderr:
			io.Stderr.Write(f.Data)
		case KindExit:
			var e Exit
			if err := f.Decode(&e); err != nil {
				return started, Lost(err.Error())
			}
			return started, e
		}
	}
}

func errText(err error) string {
	if errors.Is(err, io.EOF) {
		return "end of stream"
	}
	return err.Error()
}

// pumpStdin sends stdin to the job, then its end. A terminal is read
// only while this process is in its foreground, as a shell's background
// job would be stopped for reading it.
func pumpStdin(c *Conn, in io.Reader, stop <-chan struct{}) {
	fd, isTerm := -1, false
	if f, ok := in.(*os.File); ok {
		fd = int(f.Fd())
		isTerm = term.IsTerminal(fd)
	}
	buf := make([]byte, 32<<10)
	for {
		if isTerm {
			for !foreground(fd) {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
		n, err := in.Read(buf)
		if n > 0 {
			if c.Write(Frame{Kind: KindStdin, Data: append([]byte(nil), buf[:n]...)}) != nil {
				return
			}
		}
		if err != nil {
			c.Write(Frame{Kind: KindStdinClose})
			return
		}
	}
}

// foreground says whether this process's group owns terminal fd.
func foreground(fd int) bool {
	pg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err != nil || pg == unix.Getpgrp()
}

func relaySignals(c *Conn, tty *os.File, sigs <-chan os.Signal, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case s := <-sigs:
			sig := s.(syscall.Signal)
			switch sig {
			case syscall.SIGWINCH:
				if tty != nil {
					if ws, err := unix.IoctlGetWinsize(int(tty.Fd()), unix.TIOCGWINSZ); err == nil {
						c.Write(JSONFrame(KindResize, Resize{Rows: ws.Row, Cols: ws.Col}))
					}
				}
			case syscall.SIGTSTP:
				// Stop the job, then this stand-in, so the shell sees its
				// job stopped; SIGCONT (fg, bg) continues both.
				c.Write(JSONFrame(KindSignal, Signal{Signo: int(syscall.SIGTSTP)}))
				syscall.Kill(os.Getpid(), syscall.SIGSTOP)
			default:
				c.Write(JSONFrame(KindSignal, Signal{Signo: int(sig)}))
			}
		}
	}
}

// Reraise ends this process as the job ended: its exit code, or its
// signal raised on itself (with no core file), so a shell sees the
// same status it would of a local child.
func Reraise(e Exit) {
	if e.Signal > 0 && !e.Lost {
		sig := syscall.Signal(e.Signal)
		signal.Reset(sig)
		unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
		// The Go runtime keeps its handler for SIGSEGV and the like
		// (signal.Reset leaves it): put the kernel's default back.
		var dfl [4]uint64 // struct sigaction: handler SIG_DFL, flags, restorer, mask
		unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0)
		syscall.Kill(os.Getpid(), sig)
		time.Sleep(100 * time.Millisecond) // a signal this process cannot die of
		os.Exit(128 + e.Signal)
	}
	os.Exit(e.Code)
}
