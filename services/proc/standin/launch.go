package standin

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"golang.org/x/term"
)

// Upgrade is the protocol a job's stream upgrades to from the node
// daemon's GET /v1/proc/exec: the frames of this package, both ways.
const Upgrade = "locus-exec/1"

// Options are a launch's: what to run where, and how.
type Options struct {
	// Node is where (0: the least loaded node).
	Node int
	Argv []string
	// Env is added to this process's environment for the job.
	Env []string
	// Dir is the job's working directory ("": this one).
	Dir string
	// TTY gives the job a terminal even when stdout is not one; NoTTY
	// never (by default: when stdin and stdout are terminals).
	TTY, NoTTY bool
	// NoStdin gives the job /dev/null for stdin.
	NoStdin bool
	// Detach starts the job on its own; the launch returns once it runs.
	Detach bool
	// Verbose says on stderr which node the job runs on (fast -v).
	Verbose bool
}

// Launch runs o's job through the stream rwc (a node daemon's, opened
// for it) as this process's stand-in: stdio, terminal and signals are
// this process's.
func Launch(rwc io.ReadWriteCloser, o Options, stdin io.Reader, stdout, stderr io.Writer) (Started, Exit) {
	dir := o.Dir
	if dir == "" {
		dir, _ = os.Getwd()
	}
	st := Start{Node: o.Node, Argv: o.Argv, Env: append(os.Environ(), o.Env...), Dir: dir, Detach: o.Detach, Term: os.Getenv("TERM")}
	in, _ := stdin.(*os.File)
	out, _ := stdout.(*os.File)
	isTerm := func(f *os.File) bool { return f != nil && term.IsTerminal(int(f.Fd())) }
	s := Stdio{Stdout: stdout, Stderr: stderr}
	s.TTY = !o.NoTTY && !o.Detach && isTerm(in) && (o.TTY || isTerm(out))
	if !o.NoStdin && !o.Detach {
		s.Stdin = stdin
	}
	if o.Verbose {
		s.OnStarted = func(st Started) { fmt.Fprintf(stderr, "locus: fast: node %d\n", st.Node) }
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, Relayed()...)
	defer signal.Stop(sigs)
	s.Signals = sigs
	return Attach(context.Background(), NewConn(rwc), st, s)
}

// Detached says whether a launch with Detach started its job.
func Detached(e Exit) bool { return !e.Lost && e.Reason == "" && e.Code == 0 }

// Report says on w why a job ended, when it did not simply exit: a lost
// node, a command that could not run. node is where it was asked to run.
func Report(w io.Writer, node int, started Started, e Exit) {
	switch {
	case e.Lost && started.Node > 0:
		fmt.Fprintf(w, "locus: %s; job %d (%d:%d) lost\n", e.Reason, started.CPID, started.Node, started.PID)
	case e.Reason != "" && started.Node > 0:
		fmt.Fprintf(w, "locus: node %d: %s\n", started.Node, e.Reason)
	case e.Reason != "":
		where := "node " + strconv.Itoa(node)
		if e.Node > 0 {
			where = "node " + strconv.Itoa(e.Node)
		} else if node == 0 {
			where = "the least loaded node"
		}
		fmt.Fprintf(w, "locus: %s: %s\n", where, e.Reason)
	}
}

// Dial opens a job's stream on the node daemon's unix socket at sock
// (its user socket: who connects is who the kernel says). It does not
// wait for the daemon's answer: the Start frame goes with the request,
// and the first read finds out whether the daemon took it.
func Dial(sock string) (io.ReadWriteCloser, error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("the node daemon: %w", err)
	}
	if _, err := io.WriteString(c, "GET /v1/proc/exec HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: "+Upgrade+"\r\n\r\n"); err != nil {
		c.Close()
		return nil, fmt.Errorf("the node daemon at %s: %w", sock, err)
	}
	return &upgraded{Reader: bufio.NewReader(c), Conn: c, sock: sock}, nil
}

// upgraded is a stream whose first read checks the daemon's answer to
// the upgrade.
type upgraded struct {
	*bufio.Reader
	net.Conn
	sock     string
	answered bool
	err      error
}

func (u *upgraded) Read(p []byte) (int, error) {
	if !u.answered {
		u.answered, u.err = true, u.answer()
	}
	if u.err != nil {
		return 0, u.err
	}
	return u.Reader.Read(p)
}

// answer reads the daemon's answer: 101, or why not (401, 403, ...).
func (u *upgraded) answer() error {
	tp := textproto.NewReader(u.Reader)
	status, err := tp.ReadLine()
	if err != nil {
		return fmt.Errorf("the node daemon at %s: %w", u.sock, err)
	}
	hdr, _ := tp.ReadMIMEHeader()
	if f := strings.Fields(status); len(f) >= 2 && f[1] == "101" {
		return nil
	}
	msg := status
	if n, err := strconv.Atoi(hdr.Get("Content-Length")); err == nil && n > 0 && n < 4096 {
		b := make([]byte, n)
		if _, err := io.ReadFull(u.Reader, b); err == nil {
			msg += ": " + strings.TrimSpace(string(b))
		}
	}
	return fmt.Errorf("the node daemon at %s: %s", u.sock, msg)
}
