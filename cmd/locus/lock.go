package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/locus-ssi/locus/services/dlm"
	"github.com/locus-ssi/locus/services/dlm/lockdev"
	"github.com/locus-ssi/locus/services/locusd"
)

func newLockCmd(e *env) *cobra.Command {
	var mode, lockspace string
	var wait time.Duration
	var increment int
	cmd := &cobra.Command{
		Use:   "lock [flags] NAME -- COMMAND [ARG...]",
		Short: "Run a command holding a clusterwide lock (the kernel's DLM), like flock(1) for the whole cluster",
		Long: `Lock takes the lock NAME in the cluster's lock manager (the kernel's DLM,
which every node's daemon configures from the membership), runs COMMAND
while it holds it, and releases it when COMMAND ends; the exit status is
COMMAND's. Modes (-m): EX exclusive (default), PW protected write, PR
shared read, CW, CR, NL. A lock held by a node that fails is released
once the membership has fenced it and taken it Down.

--wait 0 fails at once if the lock is held (exit 1, as flock -n); --wait
DUR gives up after DUR (exit 1); the default waits as long as it takes.
--increment N, without a command, adds 1 to a 64-bit counter in the
lock's value block N times (converting between NL and EX) and prints
each new value. The DLM keeps a value block as long as some lock on the
resource is held, anywhere (an NL one will do: "locus lock -m NL NAME --
sleep infinity"); with the last lock it is gone, and the count starts
again from 0. A node that dies holding a lock does not take the value
with it if another node holds one.

Locks live in a lockspace: "locus" (--lockspace), which every node
joins at boot and every user may use. It runs on a node (the lock is the
process's: it ends with it); locus lock ls works from anywhere.`,
		Example: "  locus lock backup -- tar czf /srv/backup.tgz /srv/data\n  locus lock -m PR --wait 10s config -- cat /etc/app.conf\n  locus lock --increment 100 counter\n  locus lock ls",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("lock: need the lock's NAME (and a COMMAND after --, or --increment)")
			}
			if increment == 0 && cmd.ArgsLenAtDash() != 1 {
				return errors.New("lock: want NAME -- COMMAND [ARG...]")
			}
			if increment > 0 && len(args) != 1 {
				return errors.New("lock: --increment takes no command")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := lockdev.ParseMode(mode)
			if err != nil {
				return err
			}
			name := args[0]
			if err := lockdev.CheckResourceName(name); err != nil {
				return fmt.Errorf("lock: %w", err)
			}
			ls, err := lockdev.Open(lockspace)
			for deadline := time.Now().Add(15 * time.Second); errors.Is(err, os.ErrNotExist) && lockspace == dlm.DefaultLockspace && time.Now().Before(deadline); {
				// A node just come up joins the default lockspace a
				// moment after it is a member.
				time.Sleep(200 * time.Millisecond)
				ls, err = lockdev.Open(lockspace)
			}
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("lock: %w: this node has not joined it (is it a cluster member, with the DLM?)", err)
				}
				return fmt.Errorf("lock: %w", err)
			}
			defer ls.Close()
			if increment > 0 {
				return incrementCounter(cmd.Context(), e, ls, name, increment)
			}
			ctx := cmd.Context()
			// With the value block, so that while this lock is held the
			// resource's value (--increment's counter) is kept.
			o := lockdev.Options{Flags: lockdev.ValBlk}
			if wait == 0 {
				o.Flags |= lockdev.NoQueue
			} else if wait > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, wait)
				defer cancel()
			}
			l, err := ls.Lock(ctx, name, m, o)
			switch {
			case errors.Is(err, lockdev.ErrWouldBlock):
				fmt.Fprintf(e.stderr, "locus: lock %s is held in a mode that excludes %s\n", name, m)
				return exitCodeError{code: 1}
			case errors.Is(err, context.DeadlineExceeded):
				fmt.Fprintf(e.stderr, "locus: lock %s not granted within %v\n", name, wait)
				return exitCodeError{code: 1}
			case err != nil:
				return err
			}
			defer l.Unlock(0, nil)
			return runHolding(e, args[1:])
		},
	}
	f := cmd.Flags()
	f.StringVarP(&mode, "mode", "m", "EX", "lock mode: EX, PW, PR, CW, CR or NL")
	f.DurationVar(&wait, "wait", -1, "how long to wait for the lock (0: fail at once if held; default: as long as it takes)")
	f.StringVar(&lockspace, "lockspace", dlm.DefaultLockspace, "the lockspace")
	f.IntVar(&increment, "increment", 0, "add 1 to the counter in the lock's value block this many times, printing each value")
	cmd.AddCommand(newLockLsCmd(e), newLockSpacesCmd(e))
	return cmd
}

// runHolding runs argv with the terminal's stdio, passing on the signals
// that would end locus (so the lock is released after the command, not
// before), and returns its exit status.
func runHolding(e *env, argv []string) error {
	c := exec.Command(argv[0], argv[1:]...)
	c.Stdin, c.Stdout, c.Stderr = e.stdin, e.stdout, e.stderr
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	if err := c.Start(); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				c.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err := c.Wait()
	close(done)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return exitCodeError{code: 128 + int(ws.Signal())}
		}
		return exitCodeError{code: ee.ExitCode()}
	}
	return err
}

// incrementCounter adds 1 to the counter in name's value block n times:
// an NL lock holds the block on this node between increments (so it
// survives the death of any other holder), each increment a convert to
// EX (the block comes back) and down to NL (it is written).
func incrementCounter(ctx context.Context, e *env, ls *lockdev.Lockspace, name string, n int) error {
	l, err := ls.Lock(ctx, name, lockdev.NL, lockdev.Options{Flags: lockdev.ValBlk})
	if err != nil {
		return err
	}
	defer l.Unlock(0, nil)
	for i := 0; i < n; i++ {
		if err := l.Convert(ctx, lockdev.EX, lockdev.Options{Flags: lockdev.ValBlk}); err != nil {
			return err
		}
		b, _ := l.LVB()
		v := binary.LittleEndian.Uint64(b) + 1
		binary.LittleEndian.PutUint64(b, v)
		if err := l.Convert(ctx, lockdev.NL, lockdev.Options{Flags: lockdev.ValBlk, LVB: b}); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, v)
	}
	return nil
}

func newLockLsCmd(e *env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "ls [LOCKSPACE]",
		Short: "The locks of a lockspace, clusterwide: holders and waiters, their nodes and processes",
		Long: `Ls lists the locks of LOCKSPACE (default "locus") on every node, from each
kernel's own view: the resource, the node and process holding or waiting,
the state (granted, converting, waiting), the modes, the node that masters
the resource, and for how long.`,
		Example: "  locus lock ls\n  locus lock ls --output json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			name := dlm.DefaultLockspace
			if len(args) == 1 {
				name = args[0]
			}
			if err := lockdev.CheckLockspaceName(name); err != nil {
				return err
			}
			client, err := e.procClient()
			if err != nil {
				return err
			}
			var reply locusd.DLMReply
			if err := client.Get(cmd.Context(), "/v1/dlm/locks?lockspace="+name, &reply); err != nil {
				return err
			}
			if output == "json" {
				return jsonOut(e, reply)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RESOURCE\tNODE\tPID\tSTATE\tMODE\tWANTS\tMASTER\tFOR")
			for _, l := range reply.Locks {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%d\t%s\n", printable(l.Resource), l.Node, l.PID, l.State, dash(l.Granted), dash(l.Requested), l.Master, l.For.Round(time.Millisecond))
			}
			tw.Flush()
			if reply.Unreachable != "" {
				fmt.Fprintln(e.stderr, "locus: not every node answered:", reply.Unreachable)
			}
			return nil
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newLockSpacesCmd(e *env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "spaces",
		Short: "Every node's lockspaces: members, epoch, running or stopped",
		Long: `Spaces lists, for every node, the DLM lockspaces it is in (the default
"locus", a GFS2 root's "root", applications' own): running, stopped
(recovering, or without quorum), joining or leaving; the epoch of the
last change the master made (its Raft term, then a sequence), and the
members it started with.`,
		Example: "  locus lock spaces\n  locus lock spaces --output json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			client, err := e.procClient()
			if err != nil {
				return err
			}
			var reply locusd.DLMReply
			if err := client.Get(cmd.Context(), "/v1/dlm/lockspaces", &reply); err != nil {
				return err
			}
			if output == "json" {
				return jsonOut(e, reply)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tLOCKSPACE\tSTATE\tEPOCH\tMEMBERS")
			for _, n := range reply.Nodes {
				for _, sp := range n.Spaces {
					state := "running"
					switch {
					case sp.Joining:
						state = "joining"
					case sp.Leaving:
						state = "leaving"
					case !sp.Started:
						state = "stopped"
					}
					var ms []string
					for _, m := range sp.Members {
						ms = append(ms, fmt.Sprint(m.Node))
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%v\t%s\n", n.Node, sp.Name, state, sp.Epoch, strings.Join(ms, ","))
				}
			}
			tw.Flush()
			if reply.Unreachable != "" {
				fmt.Fprintln(e.stderr, "locus: not every node answered:", reply.Unreachable)
			}
			return nil
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// printable shows a resource name, quoting one with bytes a terminal
// would act on.
func printable(s string) string {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Sprintf("%q", s)
		}
	}
	return s
}

func newFSLockCmd(e *env) *cobra.Command {
	var shared bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "lock [--shared] [--wait DUR] FILE -- COMMAND [ARG...]",
		Short: "Run a command holding a POSIX (fcntl) lock on FILE, as programs that lock files do",
		Long: `Lock takes a POSIX record lock (fcntl F_SETLKW) on the whole of FILE,
exclusive unless --shared, runs COMMAND, and exits with its status. It is
what dpkg, sqlite and most daemons do to their files: on a GFS2 root
without localflocks such locks are clusterwide (the DLM's daemons order
them on the master), on a node-local filesystem they are the node's.
--wait 0 fails at once if the file is locked (exit 1), --wait DUR after
DUR.`,
		Example: "  locus fs lock /var/lib/app/state -- app --update\n  locus fs lock --shared --wait 0 /etc/app.conf -- cat /etc/app.conf",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 || cmd.ArgsLenAtDash() != 1 {
				return errors.New("fs lock: want FILE -- COMMAND [ARG...]")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.OpenFile(args[0], os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil && shared {
				f, err = os.Open(args[0])
			}
			if err != nil {
				return fmt.Errorf("fs lock: %w", err)
			}
			defer f.Close()
			lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
			if shared {
				lk.Type = unix.F_RDLCK
			}
			op := unix.F_SETLKW
			if wait == 0 {
				op = unix.F_SETLK
			}
			done := make(chan error, 1)
			go func() { done <- unix.FcntlFlock(f.Fd(), op, &lk) }() // a blocked F_SETLKW ends with the process
			var timeout <-chan time.Time
			if wait > 0 {
				timeout = time.After(wait)
			}
			select {
			case err := <-done:
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
					fmt.Fprintf(e.stderr, "locus: %s is locked\n", args[0])
					return exitCodeError{code: 1}
				}
				if err != nil {
					return fmt.Errorf("fs lock %s: %w", args[0], err)
				}
			case <-timeout:
				fmt.Fprintf(e.stderr, "locus: %s not locked within %v\n", args[0], wait)
				return exitCodeError{code: 1}
			}
			return runHolding(e, args[1:])
		},
	}
	cmd.Flags().BoolVar(&shared, "shared", false, "a shared (read) lock instead of an exclusive one")
	cmd.Flags().DurationVar(&wait, "wait", -1, "how long to wait (0: fail at once; default: as long as it takes)")
	return cmd
}
