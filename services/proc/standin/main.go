package standin

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// UserSocket is the node daemon's socket for every user of the node
// (locusd.UserSocketPath).
const UserSocket = "/run/locus/locusd.sock"

// Usage is the lean command's help.
const Usage = `usage: onnode [-tTndv] [--env K=V] [--cwd DIR] NODE [--] COMMAND [ARG...]
       fast   [-tTndv] [--env K=V] [--cwd DIR] [--] COMMAND [ARG...]

Run COMMAND on NODE (a number, nodeN, or auto) or on the least loaded
node, as you, here: this process stands in for it (stdio, terminal,
signals, exit status). -t/-T force or refuse a terminal, -n gives it
/dev/null for stdin, -d detaches it and prints its cluster PID, -v says
where it runs. See locus onnode --help.
`

// ParseArgs reads onnode's or fast's command line (prog says which):
// its flags come before the node, or between the node and a --.
func ParseArgs(prog string, args []string) (Options, error) {
	var o Options
	needNode := prog != "fast"
	flags := func(args []string, stopAtPositional bool) ([]string, error) {
		for len(args) > 0 {
			a := args[0]
			if a == "--" {
				return args[1:], nil
			}
			if !strings.HasPrefix(a, "-") || a == "-" {
				if stopAtPositional {
					return args, nil
				}
				return nil, fmt.Errorf("%s: %q before --: only flags go there", prog, a)
			}
			args = args[1:]
			name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
			value := func() (string, error) {
				if hasVal {
					return val, nil
				}
				if len(args) == 0 {
					return "", fmt.Errorf("%s: %s needs a value", prog, a)
				}
				v := args[0]
				args = args[1:]
				return v, nil
			}
			switch {
			case name == "env":
				v, err := value()
				if err != nil {
					return nil, err
				}
				if !strings.Contains(v, "=") {
					return nil, fmt.Errorf("%s: --env %q: want K=V", prog, v)
				}
				o.Env = append(o.Env, v)
			case name == "cwd":
				v, err := value()
				if err != nil {
					return nil, err
				}
				o.Dir = v
			case name == "tty":
				o.TTY = true
			case name == "no-tty":
				o.NoTTY = true
			case name == "null-stdin":
				o.NoStdin = true
			case name == "detach":
				o.Detach = true
			case name == "verbose":
				o.Verbose = true
			case name == "help" || name == "h":
				return nil, errHelp
			case !strings.HasPrefix(a, "--") && !hasVal:
				for _, c := range name {
					switch c {
					case 't':
						o.TTY = true
					case 'T':
						o.NoTTY = true
					case 'n':
						o.NoStdin = true
					case 'd':
						o.Detach = true
					case 'v':
						o.Verbose = true
					default:
						return nil, fmt.Errorf("%s: unknown flag -%c", prog, c)
					}
				}
			default:
				return nil, fmt.Errorf("%s: unknown flag %s", prog, a)
			}
		}
		return args, nil
	}
	rest, err := flags(args, true)
	if err != nil {
		return o, err
	}
	if needNode {
		if len(rest) == 0 {
			return o, fmt.Errorf("%s: which node? (a number, nodeN, or auto)", prog)
		}
		if o.Node, err = ParseNode(rest[0]); err != nil {
			return o, fmt.Errorf("%s: %w", prog, err)
		}
		rest = rest[1:]
		// Flags after the node only with a -- after them (onnode 3 -d --
		// cmd); onnode 3 ls -l is a command.
		if i := indexOf(rest, "--"); i == 0 {
			rest = rest[1:]
		} else if i > 0 && strings.HasPrefix(rest[0], "-") {
			if _, err := flags(rest[:i+1], false); err != nil {
				return o, err
			}
			rest = rest[i+1:]
		}
	}
	if len(rest) == 0 {
		return o, fmt.Errorf("%s: no command to run", prog)
	}
	o.Argv = rest
	return o, nil
}

var errHelp = errors.New("help")

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// ParseNode reads a node: 3, node3, or auto/fast (0: the least loaded).
func ParseNode(s string) (int, error) {
	if s == "auto" || s == "fast" {
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimPrefix(s, "node"))
	if err != nil || n < 1 || n > 511 {
		return 0, fmt.Errorf("node %q: want a node number (1-511), nodeN, or auto", s)
	}
	return n, nil
}

// Main is the lean onnode and fast (cmd/onnode): through this node's
// user socket, or, for any other endpoint (a workstation's context), as
// `locus onnode` does it. It returns only on a usage error; otherwise
// it ends the process as the job ended.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	prog := filepath.Base(args[0])
	if prog != "fast" {
		prog = "onnode"
	}
	o, err := ParseArgs(prog, args[1:])
	if errors.Is(err, errHelp) {
		fmt.Fprint(stdout, Usage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%v\n%s", err, Usage)
		return 2
	}
	sock := UserSocket
	if ep := os.Getenv("LOCUS_ENDPOINT"); ep != "" || os.Getenv("LOCUS_CONTEXT") != "" {
		sock = ep
	}
	if !filepath.IsAbs(sock) {
		// Not this node's daemon: the full CLI knows the contexts.
		locus, err := exec.LookPath("locus")
		if err == nil {
			err = syscall.Exec(locus, append([]string{"locus", prog}, args[1:]...), os.Environ())
		}
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 255
	}
	rwc, err := Dial(sock)
	if err != nil {
		fmt.Fprintf(stderr, "locus: %v\n", err)
		return 255
	}
	started, e := Launch(rwc, o, stdin, stdout, stderr)
	if o.Detach && Detached(e) {
		fmt.Fprintln(stdout, started.CPID)
		os.Exit(0)
	}
	Report(stderr, o.Node, started, e)
	Reraise(e)
	return 0
}
