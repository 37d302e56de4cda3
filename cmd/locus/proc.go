package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/locusd"
	"github.com/locus-ssi/locus/services/proc"
	"github.com/locus-ssi/locus/services/proc/standin"
)

// jobExitError carries a job's end out of run: main ends the process
// the same way (standin.Reraise).
type jobExitError struct{ exit standin.Exit }

func (e jobExitError) Error() string { return fmt.Sprintf("job exited with status %d", e.exit.Code) }

// procClient is the daemon the process verbs talk to.
func (e *env) procClient() (*locusd.Client, error) {
	ep, err := resolveEndpoint(e.endpoint, e.context)
	if err != nil {
		return nil, err
	}
	return ep.client, nil
}

// parseNode reads a node argument: 3, node3, or auto/fast (0: the least
// loaded node).
func parseNode(s string) (int, error) { return standin.ParseNode(s) }

// jobFlags are onnode's and fast's.
type jobFlags struct {
	tty, noTTY, noStdin, detach, verbose bool
	env                                  []string
	dir                                  string
}

func (f *jobFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.SetInterspersed(false)
	fl.BoolVarP(&f.tty, "tty", "t", false, "give the job a terminal even if stdin and stdout are not one")
	fl.BoolVarP(&f.noTTY, "no-tty", "T", false, "no terminal for the job, even from a terminal")
	fl.BoolVarP(&f.noStdin, "null-stdin", "n", false, "the job's stdin is /dev/null")
	fl.BoolVarP(&f.detach, "detach", "d", false, "start the job on its own (stdio on /dev/null, not ended with this command) and print its cluster PID")
	fl.StringArrayVar(&f.env, "env", nil, "set K=V in the job's environment (repeatable)")
	fl.StringVar(&f.dir, "cwd", "", "the job's working directory (default: this one)")
}

// runJob runs argv on node (0: the least loaded) as this process's
// stand-in, and returns how it ended as a jobExitError.
func (e *env) runJob(node int, argv []string, f jobFlags) error {
	client, err := e.procClient()
	if err != nil {
		return err
	}
	rwc, err := client.OpenJob(context.Background())
	if err != nil {
		return err
	}
	o := standin.Options{Node: node, Argv: argv, Env: f.env, Dir: f.dir, TTY: f.tty, NoTTY: f.noTTY, NoStdin: f.noStdin,
		Detach: f.detach, Verbose: f.verbose}
	started, exit := standin.Launch(rwc, o, e.stdin, e.stdout, e.stderr)
	if f.detach && standin.Detached(exit) {
		fmt.Fprintln(e.stdout, started.CPID)
		return nil
	}
	standin.Report(e.stderr, node, started, exit)
	return jobExitError{exit}
}

func newOnnodeCmd(e *env) *cobra.Command {
	var f jobFlags
	cmd := &cobra.Command{
		Use:   "onnode NODE [--] COMMAND [ARG...]",
		Short: "Run a command on a node, as if here: terminal, signals, exit status",
		Long: `Onnode runs COMMAND on NODE (a number, nodeN, or auto for the least loaded
node) as you, in this directory and environment. This process stands in
for it: stdin, stdout and stderr are streamed, a terminal is given when
you are at one (window size follows), catchable signals are passed on
(Ctrl-C reaches the job), and onnode ends as the job did: its exit
status, or its signal raised here, so a shell's wait, $! and kill %1 work
on it as on a local child. If the node goes Down, onnode exits 255 at
once; if onnode goes away, the job gets SIGHUP, then SIGKILL 5 s later.
A command that does not exist exits 127, one that cannot run 126.`,
		Example: "  locus onnode 3 -- uname -n\n  locus onnode 4 -- sh          # an interactive shell on node 4\n  locus onnode 2 -- wc -l < file\n  locus onnode 3 -d -- sleep 600   # prints the job's cluster PID",
		Args:    cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			node, err := parseNode(args[0])
			if err != nil {
				return err
			}
			argv, err := jobArgs(cmd, args[1:])
			if err != nil {
				return err
			}
			return e.runJob(node, argv, f)
		},
	}
	f.add(cmd)
	return cmd
}

func newFastCmd(e *env) *cobra.Command {
	var f jobFlags
	cmd := &cobra.Command{
		Use:   "fast [--] COMMAND [ARG...]",
		Short: "Run a command on the least loaded node",
		Long: `Fast runs COMMAND as onnode does, on the node with the least load: the
run queue per CPU (CPU count and speed counted), damped as MOSIX damps
it, every node's gossiped every half second, plus the jobs placed on
each node in the last seconds, so a burst of launches spreads.`,
		Example: "  locus fast -- make -j2\n  locus fast -v -- ./simulate    # say on stderr where it runs",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			argv, err := jobArgs(cmd, args)
			if err != nil {
				return err
			}
			return e.runJob(0, argv, f)
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVarP(&f.verbose, "verbose", "v", false, "print the chosen node on stderr")
	return cmd
}

// jobArgs is the command of onnode NODE [FLAGS] -- COMMAND...: flags
// may come after the node when a -- ends them (onnode 3 -d -- cmd);
// without --, everything after the node is the command (onnode 3 ls -l).
func jobArgs(cmd *cobra.Command, args []string) ([]string, error) {
	i := slices.Index(args, "--")
	switch {
	case i == 0:
		args = args[1:]
	case i > 0 && strings.HasPrefix(args[0], "-"):
		if err := cmd.Flags().Parse(args[:i]); err != nil {
			return nil, err
		}
		args = args[i+1:]
	}
	if len(args) == 0 {
		return nil, errors.New("no command to run")
	}
	return args, nil
}

func dropDashes(args []string) []string {
	if len(args) > 0 && args[0] == "--" {
		return args[1:]
	}
	return args
}

func newFastnodeCmd(e *env) *cobra.Command {
	var names bool
	var count int
	cmd := &cobra.Command{
		Use:     "fastnode",
		Short:   "Print the least loaded node",
		Long:    "Fastnode prints the node fast would pick (TCF's fastsite); --count K prints K nodes spread as K launches would be.",
		Example: "  locus fastnode\n  locus onnode $(locus fastnode) -- ./job",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := e.procClient()
			if err != nil {
				return err
			}
			var nodes []int
			if err := client.Get(cmd.Context(), "/v1/proc/place?count="+strconv.Itoa(count), &nodes); err != nil {
				return err
			}
			for _, n := range nodes {
				if names {
					fmt.Fprintf(e.stdout, "node%d\n", n)
				} else {
					fmt.Fprintln(e.stdout, n)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&names, "name", "n", false, "print nodeN rather than the number")
	cmd.Flags().IntVar(&count, "count", 1, "how many nodes")
	return cmd
}

// upNodes is the membership's Up nodes, as the daemon sees them.
func upNodes(ctx context.Context, client *locusd.Client) ([]int, error) {
	var st clms.Status
	if err := client.Get(ctx, "/v1/cluster/status", &st); err != nil {
		return nil, err
	}
	var up []int
	for _, n := range st.Nodes {
		if n.State == clms.Up {
			up = append(up, n.Node)
		}
	}
	if len(up) == 0 && st.Self > 0 {
		up = []int{st.Self}
	}
	return up, nil
}

// labeller writes each whole line with a prefix; writes from several
// labellers onto one writer do not interleave within a line.
type labeller struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (l *labeller) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.emit(l.buf[:i+1])
		l.buf = l.buf[i+1:]
	}
}

func (l *labeller) emit(line []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Write(append([]byte(l.prefix), line...))
}

func (l *labeller) flush() {
	if len(l.buf) > 0 {
		l.emit(append(l.buf, '\n'))
		l.buf = nil
	}
}

func newOnallCmd(e *env) *cobra.Command {
	var nodesFlag, exclude string
	var noLabel, noStdin bool
	cmd := &cobra.Command{
		Use:   "onall [--] COMMAND [ARG...]",
		Short: "Run a command on every Up node at once, its lines labelled nodeN:",
		Long: `Onall runs COMMAND on every Up node (or --nodes 2,4-6) in parallel, as onnode
does. Each output line is labelled "nodeN: " (dshbak and clubak read it);
stdin, when it is not a terminal, goes to every node. The exit status is
the highest of the nodes' (a death by signal counts 128+signal, a lost
node 255), and the failures are summed up on stderr. The first Ctrl-C
says which nodes still run; a second within a second interrupts them.`,
		Example: "  locus onall -- uname -n\n  locus onall --nodes 2-3 -- uptime\n  locus onall -- df -h / | dshbak -c",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := e.procClient()
			if err != nil {
				return err
			}
			nodes, err := locusd.ParseNodeList(nodesFlag)
			if err != nil {
				return err
			}
			if len(nodes) == 0 {
				if nodes, err = upNodes(cmd.Context(), client); err != nil {
					return err
				}
			}
			skip, err := locusd.ParseNodeList(exclude)
			if err != nil {
				return err
			}
			nodes = slices.DeleteFunc(nodes, func(n int) bool { return slices.Contains(skip, n) })
			if len(nodes) == 0 {
				return errors.New("no nodes to run on")
			}
			var input []byte
			if f, ok := e.stdin.(*os.File); !noStdin && e.stdin != nil && (!ok || !term.IsTerminal(int(f.Fd()))) {
				if input, err = io.ReadAll(e.stdin); err != nil {
					return fmt.Errorf("reading stdin for the nodes: %w", err)
				}
			}
			return e.onall(client, nodes, dropDashes(args), input, !noLabel)
		},
	}
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringVarP(&nodesFlag, "nodes", "w", "", "the nodes to run on (2,4-6; default every Up node)")
	cmd.Flags().StringVarP(&exclude, "exclude", "x", "", "nodes to leave out")
	cmd.Flags().BoolVarP(&noLabel, "no-label", "N", false, "do not label the lines")
	cmd.Flags().BoolVarP(&noStdin, "null-stdin", "n", false, "no stdin for the nodes")
	return cmd
}

func (e *env) onall(client *locusd.Client, nodes []int, argv []string, input []byte, label bool) error {
	dir, _ := os.Getwd()
	var mu sync.Mutex
	type result struct {
		node int
		exit standin.Exit
	}
	results := make(chan result, len(nodes))
	sigChans := map[int]chan os.Signal{}
	var running sync.Map
	for _, n := range nodes {
		sc := make(chan os.Signal, 4)
		sigChans[n] = sc
		running.Store(n, true)
		go func() {
			out := &labeller{mu: &mu, w: e.stdout}
			errw := &labeller{mu: &mu, w: e.stderr}
			if label {
				out.prefix, errw.prefix = fmt.Sprintf("node%d: ", n), fmt.Sprintf("node%d: ", n)
			}
			io := standin.Stdio{Stdout: out, Stderr: errw, Signals: sc}
			if input != nil {
				io.Stdin = bytes.NewReader(input)
			}
			var exit standin.Exit
			rwc, err := client.OpenJob(context.Background())
			if err != nil {
				exit = standin.Lost(err.Error())
			} else {
				st := standin.Start{Node: n, Argv: argv, Env: os.Environ(), Dir: dir}
				_, exit = standin.Attach(context.Background(), standin.NewConn(rwc), st, io)
			}
			out.flush()
			errw.flush()
			running.Delete(n)
			results <- result{n, exit}
		}()
	}
	interrupts := make(chan os.Signal, 2)
	signal.Notify(interrupts, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(interrupts)
	var lastInt time.Time
	failures := map[string][]int{}
	worst := 0
	for done := 0; done < len(nodes); {
		select {
		case r := <-results:
			done++
			code := r.exit.Code
			var what string
			switch {
			case r.exit.Lost:
				code, what = 255, r.exit.Reason
			case r.exit.Signal > 0:
				code, what = 128+r.exit.Signal, "killed by signal "+strconv.Itoa(r.exit.Signal)
			case r.exit.Reason != "":
				what = fmt.Sprintf("%s (exit code %d)", r.exit.Reason, code)
			case code != 0:
				what = fmt.Sprintf("exited with exit code %d", code)
			}
			if what != "" {
				failures[what] = append(failures[what], r.node)
			}
			worst = max(worst, code)
		case s := <-interrupts:
			if s == syscall.SIGINT && time.Since(lastInt) > time.Second {
				lastInt = time.Now()
				var still []int
				running.Range(func(k, _ any) bool { still = append(still, k.(int)); return true })
				slices.Sort(still)
				fmt.Fprintf(e.stderr, "locus: interrupt (one more within 1 sec to abort)\nlocus: still running: node%s\n", nodeSet(still))
				continue
			}
			for _, sc := range sigChans {
				select {
				case sc <- s:
				default:
				}
			}
		}
	}
	whats := make([]string, 0, len(failures))
	for w := range failures {
		whats = append(whats, w)
	}
	slices.Sort(whats)
	for _, w := range whats {
		fmt.Fprintf(e.stderr, "locus: node%s: %s\n", nodeSet(failures[w]), w)
	}
	if worst != 0 {
		return exitCodeError{code: worst}
	}
	return nil
}

// nodeSet writes nodes as pdsh does: [2-4,7], or 3 for one node.
func nodeSet(nodes []int) string {
	slices.Sort(nodes)
	if len(nodes) == 1 {
		return strconv.Itoa(nodes[0])
	}
	var parts []string
	for i := 0; i < len(nodes); {
		j := i
		for j+1 < len(nodes) && nodes[j+1] == nodes[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", nodes[i], nodes[j]))
		} else {
			parts = append(parts, strconv.Itoa(nodes[i]))
		}
		i = j + 1
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// isSelf reports whether p is this very command, run on a node (its
// own command line has what --command looks for): left out, as pgrep
// leaves itself out. Same PID and same arguments: on another node a
// process with both is all but impossible.
func isSelf(p proc.Process) bool {
	return int(p.PID) == os.Getpid() && slices.Equal(p.Args, os.Args)
}

func newPSCmd(e *env) *cobra.Command {
	var output, nodesFlag, userFlag, command, procDir string
	var procps bool
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "Every process of every node, by cluster PID",
		Long: `Ps lists the processes of every Up node (or --nodes), asked in parallel. CPID
is the cluster PID (node<<22 | pid; NODE:PID is accepted wherever a CPID
is), %CPU is over the process's life as ps computes it, RSS in KiB, START
on the node's clock.`,
		Example: "  locus ps\n  locus ps --nodes 3 --user alice\n  locus ps --command sleep --output json\n  locus ps --procps -- aux   # procps' own ps over the clusterwide /proc",
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if procps {
				if len(args) == 0 {
					args = []string{"-ef"}
				}
				return e.ssi(procDir, append([]string{"ps"}, args...))
			}
			if len(args) > 0 {
				return fmt.Errorf("ps: unexpected %q (procps' own arguments go after --procps --)", args)
			}
			if err := checkOutput(output); err != nil {
				return err
			}
			client, err := e.procClient()
			if err != nil {
				return err
			}
			nodes, err := locusd.ParseNodeList(nodesFlag)
			if err != nil {
				return err
			}
			if len(nodes) == 0 {
				nodesFlag = ""
			}
			reply, err := client.PS(cmd.Context(), nodesFlag)
			if err != nil {
				return err
			}
			reply.Processes = slices.DeleteFunc(reply.Processes, func(p proc.Process) bool {
				return (userFlag != "" && p.User != userFlag && strconv.Itoa(int(p.UID)) != userFlag) ||
					(command != "" && (!strings.Contains(p.Command(), command) || isSelf(p)))
			})
			for _, u := range reply.Unreachable {
				fmt.Fprintf(e.stderr, "locus: node %d: %s\n", u.Node, u.Error)
			}
			if output == "json" {
				return jsonOut(e, reply)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 1, ' ', 0)
			fmt.Fprintln(tw, "CPID\tNODE\tPID\tUSER\tSTAT\t%CPU\tRSS\tSTART\tCOMMAND")
			now := time.Now()
			for _, p := range reply.Processes {
				fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%.1f\t%d\t%s\t%s\n", p.CPID, p.Node, p.PID, p.User, p.State, p.CPU, p.RSS,
					startTime(p.Start, now), truncate(p.Command(), 120))
			}
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &output)
	cmd.Flags().StringVarP(&nodesFlag, "nodes", "w", "", "only these nodes (2,4-6)")
	cmd.Flags().StringVarP(&userFlag, "user", "u", "", "only this user's processes (name or uid)")
	cmd.Flags().StringVarP(&command, "command", "c", "", "only processes whose command line has this")
	cmd.Flags().BoolVar(&procps, "procps", false, "run the system's own ps (procps, u-root) with the clusterwide /proc as its /proc; its arguments after --")
	cmd.Flags().StringVar(&procDir, "proc", proc.ProcMount, "the clusterwide /proc")
	return cmd
}

// ssi runs argv with the clusterwide /proc at procDir over /proc, in a
// mount namespace of its own, and ends as it did.
func (e *env) ssi(procDir string, argv []string) error {
	if _, err := os.Stat(filepath.Join(procDir, "self")); err != nil {
		return fmt.Errorf("no clusterwide /proc at %s (%v): the node daemon serves it on every node", procDir, err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := proc.SSICommand(self, []string{"ssi-enter"}, procDir, argv)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = e.stdin, e.stdout, e.stderr
	signal.Ignore(syscall.SIGINT, syscall.SIGQUIT) // the command's, as a shell's child
	defer signal.Reset(syscall.SIGINT, syscall.SIGQUIT)
	err = cmd.Run()
	if cmd.ProcessState == nil {
		return fmt.Errorf("ssi: %w", err)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return jobExitError{standin.Exit{Code: 128 + int(ws.Signal()), Signal: int(ws.Signal())}}
	}
	if ws.ExitStatus() != 0 {
		return exitCodeError{code: ws.ExitStatus()}
	}
	return nil
}

func newSSICmd(e *env) *cobra.Command {
	var procDir string
	cmd := &cobra.Command{
		Use:   "ssi [--] COMMAND [ARG...]",
		Short: "Run a command that sees every process of the cluster in /proc",
		Long: `Ssi runs COMMAND in a mount namespace of its own where the clusterwide /proc
(/cluster/proc) covers /proc, so that unmodified tools (procps' ps and top,
u-root's ps) list every node's processes by cluster PID. Only for one
command: programs read /proc/self/exe, fd and maps, which only a
process's own node has.`,
		Example: "  locus ssi -- ps -ef\n  locus ssi -- top -b -n1",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.ssi(procDir, dropDashes(args))
		},
	}
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringVar(&procDir, "proc", proc.ProcMount, "the clusterwide /proc")
	return cmd
}

func newSSIEnterCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "ssi-enter DIR -- COMMAND [ARG...]",
		Short:              "ssi's helper, in the command's new mount namespace",
		Example:            "  locus ssi-enter /cluster/proc -- ps -e   # what locus ssi -- ps -e runs",
		Hidden:             true,
		DisableFlagParsing: true,
		Args:               cobra.MinimumNArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return proc.EnterSSI(args[0], dropDashes(args[1:]))
		},
	}
}

func newJobEnterCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:                proc.EnterRootCommand + " ROOT DIR UID GID GROUPS PATH -- ARGV...",
		Short:              "The node daemon's helper that starts a job in the node's root",
		Example:            "  locus job-enter /sysroot /home/ann 1000 1000 - /bin/sh -- sh -i   # what locusd runs for onnode",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			err := proc.EnterRoot(args)
			fmt.Fprintln(e.stderr, "locus:", err)
			if errors.Is(err, os.ErrNotExist) {
				return exitCodeError{127}
			}
			return exitCodeError{126}
		},
	}
}

func startTime(unixSec float64, now time.Time) string {
	t := time.Unix(int64(unixSec), 0)
	if now.Sub(t) < 24*time.Hour {
		return t.Format("15:04")
	}
	return t.Format("Jan02")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// signalNumber reads a signal: TERM, SIGTERM, 15.
func signalNumber(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && n <= 64 {
		return n, nil
	}
	name := strings.ToUpper(strings.TrimPrefix(strings.ToUpper(s), "SIG"))
	if n := unix.SignalNum("SIG" + name); n != 0 {
		return int(n), nil
	}
	return 0, fmt.Errorf("%q is not a signal (a name like TERM, or a number)", s)
}

func newKillCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kill [-SIGNAL | -s SIGNAL] CPID|-CPGID...",
		Short: "Send a signal to processes of any node, by cluster PID",
		Long: `Kill sends SIGNAL (default TERM) to each process named by its cluster PID
(or NODE:PID), wherever it runs; -CPGID (after --, or after the signal)
names a process group. You may signal what you could signal on the node
itself: your own processes, or any as root. It exits 1 if any target
failed, naming each.`,
		Example:            "  locus kill 3:1234\n  locus kill -9 12584146\n  locus kill -s HUP -- -3:1200    # node 3's process group 1200",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
				return cmd.Help()
			}
			sig, targets, err := parseKillArgs(args)
			if err != nil {
				return err
			}
			return e.kill(cmd.Context(), sig, targets)
		},
	}
	return cmd
}

func parseKillArgs(args []string) (int, []locusd.KillTarget, error) {
	sig := int(syscall.SIGTERM)
	sigGiven := false
	var targets []locusd.KillTarget
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			sigGiven = true // what follows are targets
			continue
		case (a == "-s" || a == "-n") && !sigGiven && len(targets) == 0:
			if i+1 >= len(args) {
				return 0, nil, errors.New("kill: -s needs a signal")
			}
			i++
			n, err := signalNumber(args[i])
			if err != nil {
				return 0, nil, fmt.Errorf("kill: %w", err)
			}
			sig, sigGiven = n, true
			continue
		case strings.HasPrefix(a, "-") && !sigGiven && len(targets) == 0:
			n, err := signalNumber(a[1:])
			if err != nil {
				return 0, nil, fmt.Errorf("kill: %w", err)
			}
			sig, sigGiven = n, true
			continue
		}
		group := strings.HasPrefix(a, "-")
		node, pid, err := proc.ParseCPID(strings.TrimPrefix(a, "-"))
		if err != nil {
			return 0, nil, fmt.Errorf("kill: %w", err)
		}
		targets = append(targets, locusd.KillTarget{Node: node, PID: pid, Group: group})
	}
	if len(targets) == 0 {
		return 0, nil, errors.New("kill: name a process: its cluster PID, or NODE:PID")
	}
	return sig, targets, nil
}

func (e *env) kill(ctx context.Context, sig int, targets []locusd.KillTarget) error {
	client, err := e.procClient()
	if err != nil {
		return err
	}
	var res []locusd.KillResult
	if err := client.Post(ctx, "/v1/proc/kill", locusd.KillRequest{Signal: sig, Targets: targets}, &res); err != nil {
		return err
	}
	failed := 0
	for _, r := range res {
		if r.Error != "" {
			failed++
			fmt.Fprintf(e.stderr, "locus: kill %d (%d:%d): %s\n", r.CPID, r.Node, r.PID, r.Error)
		}
	}
	if failed > 0 {
		return exitCodeError{code: 1}
	}
	return nil
}

func newKill3Cmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "kill3 CPID SIGNAL NODE",
		Short: "openSSI's kill3: a signal for a process, naming a node",
		Long: `Kill3 sends SIGNAL to the process CPID. In openSSI its NODE is where
SIGMIGRATE moves the process to; Locus cannot migrate processes yet, so
SIGMIGRATE is refused, and for other signals NODE must be where CPID runs.`,
		Example: "  locus kill3 3:1234 TERM 3",
		Args:    cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			node, pid, err := proc.ParseCPID(args[0])
			if err != nil {
				return err
			}
			if strings.EqualFold(strings.TrimPrefix(strings.ToUpper(args[1]), "SIG"), "MIGRATE") {
				return errors.New("kill3: SIGMIGRATE: Locus does not migrate processes yet")
			}
			sig, err := signalNumber(args[1])
			if err != nil {
				return err
			}
			to, err := parseNode(args[2])
			if err != nil || to == 0 {
				return fmt.Errorf("kill3: node %q: want a node number", args[2])
			}
			if to != node {
				return fmt.Errorf("kill3: %s runs on node %d, not %d (moving it there is SIGMIGRATE, not available yet)", args[0], node, to)
			}
			return e.kill(cmd.Context(), sig, []locusd.KillTarget{{Node: node, PID: pid}})
		},
	}
}

func newWhereCmd(e *env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "where CPID...",
		Aliases: []string{"where_pid"},
		Short:   "The node a process runs on",
		Long:    "Where prints the node each cluster PID runs on (bproc's pidnode, openSSI's where_pid) after asking that node; it exits 1 if any is not a process.",
		Example: "  locus where 12584146\n  locus where 3:1234",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			client, err := e.procClient()
			if err != nil {
				return err
			}
			var found []proc.Process
			failed := false
			for _, a := range args {
				node, pid, err := proc.ParseCPID(a)
				if err == nil {
					var p proc.Process
					if err = client.Get(cmd.Context(), "/v1/proc/where?cpid="+proc.FormatCPID(node, pid), &p); err == nil {
						found = append(found, p)
						if output != "json" {
							fmt.Fprintln(e.stdout, p.Node)
						}
						continue
					}
				}
				failed = true
				var se *locusd.StatusError
				if errors.As(err, &se) && se.Code == http.StatusNotFound {
					err = errors.New(se.Msg) // the daemon's own words
				}
				fmt.Fprintf(e.stderr, "locus: where %s: %v\n", a, err)
			}
			if output == "json" {
				if err := jsonOut(e, found); err != nil {
					return err
				}
			}
			if failed {
				return exitCodeError{code: 1}
			}
			return nil
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newLoadsCmd(e *env) *cobra.Command {
	var output string
	var watch float64
	cmd := &cobra.Command{
		Use:   "loads",
		Short: "Every node's load, as fast sees it",
		Long: `Loads prints each Up node's load vector as this node has it from the
gossip: CPUs and speed, the run queue, the damped MOSIX load (LOAD rises
slowly and drops at once; UPPER, used for other nodes, rises at once and
decays slowly) in processes per CPU, load averages, free memory,
processes and uptime; AGE is how old the entry is. -w refreshes.`,
		Example: "  locus loads\n  locus loads -w 1\n  locus loads --output json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			client, err := e.procClient()
			if err != nil {
				return err
			}
			for {
				var ls []proc.Load
				if err := client.Get(cmd.Context(), "/v1/proc/loads", &ls); err != nil {
					return err
				}
				if output == "json" {
					if err := jsonOut(e, ls); err != nil {
						return err
					}
				} else {
					if watch > 0 {
						fmt.Fprint(e.stdout, "\033[H\033[2J")
					}
					tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "NODE\tHOST\tCPUS\tSPEED\tRUNQ\tLOAD\tUPPER\tLOAD1\tLOAD5\tLOAD15\tMEMFREE\tPROCS\tUPTIME\tAGE")
					for _, l := range ls {
						fmt.Fprintf(tw, "%d\t%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%dM\t%d\t%s\t%.1fs\n", l.Node, l.Hostname, l.NCPU, l.Speed,
							l.RunQ, l.Mean, l.Upper, l.LoadAvg[0], l.LoadAvg[1], l.LoadAvg[2], l.MemFree/1024, l.Procs,
							(time.Duration(l.Uptime) * time.Second).String(), float64(l.AgeMS)/1000)
					}
					tw.Flush()
				}
				if watch <= 0 {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(time.Duration(watch * float64(time.Second))):
				}
			}
		},
	}
	addOutputFlag(cmd, &output)
	cmd.Flags().Float64VarP(&watch, "watch", "w", 0, "refresh every this many seconds")
	return cmd
}
