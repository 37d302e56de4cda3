package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/locus-ssi/locus/internal/top"
	"github.com/locus-ssi/locus/services/locusd"
	"github.com/locus-ssi/locus/services/proc"
)

func newTopCmd(e *env) *cobra.Command {
	var count, width, node int
	var sort string
	cmd := &cobra.Command{
		Use:   "top",
		Short: "The whole cluster in one terminal view: nodes, load, memory, the busiest processes by cluster PID",
		Long: `Top redraws every second, until interrupted: every node's state, role, load
(the process service's load vector), CPUs, memory and process count, then
every node's processes (or --node N's), busiest first (--sort cpu, mem or
cpid), by cluster PID, fitted to the terminal's size. Keys: s sorts (CPU,
memory, cluster PID), n shows one node then the next (then every node
again), up and down select a process, k sends it SIGTERM and K SIGKILL
(through the cluster's kill, as you), q quits. When stdout is not a
terminal it prints --count snapshots (default 1) as plain lines, --width
columns wide.`,
		Example: "  locus top\n  locus top --node 2 --sort mem\n  locus top --count 3 --width 120 > top.txt",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains([]string{top.SortCPU, top.SortMem, top.SortPID}, sort) {
				return fmt.Errorf("top: --sort %q: want cpu, mem or cpid", sort)
			}
			client, err := e.procClient()
			if err != nil {
				return err
			}
			v := top.View{Sort: sort, Node: node, Selected: -1}
			if !isTerminal(e.stdout) {
				for i := 0; i < max(count, 1); i++ {
					if i > 0 {
						select {
						case <-cmd.Context().Done():
							return nil
						case <-time.After(time.Second):
						}
					}
					ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
					s, err := snapshot(ctx, client)
					cancel()
					if err != nil {
						return err
					}
					fmt.Fprint(e.stdout, top.Render(s, v, width, 0))
				}
				return nil
			}
			return topTerminal(cmd.Context(), e, client, v)
		},
	}
	cmd.Flags().IntVar(&count, "count", 1, "snapshots to print when stdout is not a terminal")
	cmd.Flags().IntVar(&width, "width", 100, "columns when stdout is not a terminal")
	cmd.Flags().IntVar(&node, "node", 0, "only this node's processes")
	cmd.Flags().StringVar(&sort, "sort", top.SortCPU, "cpu, mem or cpid")
	return cmd
}

// snapshot is the cluster now: the membership, the load vectors and
// every node's processes.
func snapshot(ctx context.Context, client *locusd.Client) (top.Snapshot, error) {
	s := top.Snapshot{At: time.Now()}
	if err := client.Get(ctx, "/v1/cluster/status", &s.Status); err != nil {
		return s, err
	}
	var loads []proc.Load
	if err := client.Get(ctx, "/v1/proc/loads", &loads); err != nil {
		return s, err
	}
	s.Loads = loads
	var ps locusd.PSReply
	if err := client.Get(ctx, "/v1/proc/ps", &ps); err != nil {
		return s, err
	}
	s.Procs = ps.Processes
	for _, u := range ps.Unreachable {
		s.Unreachable = append(s.Unreachable, fmt.Sprintf("node %d", u.Node))
	}
	return s, nil
}

// topTerminal is top on a terminal: the view redrawn on every snapshot
// (fetched every second, apart from the keys, so a slow node does not
// stall them), key and resize; keys read from stdin in raw mode.
func topTerminal(ctx context.Context, e *env, client *locusd.Client, v top.View) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	type result struct {
		s   top.Snapshot
		err error
	}
	snaps := make(chan result, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			fctx, fcancel := context.WithTimeout(ctx, 15*time.Second)
			s, err := snapshot(fctx, client)
			fcancel()
			select {
			case <-ctx.Done():
				return
			case snaps <- result{s, err}:
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	keys, restore, err := rawKeys(ctx, e.stdin, &wg)
	if err != nil {
		return err
	}
	defer restore()
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	notes := make(chan string, 4)
	fmt.Fprint(e.stdout, "\x1b[?1049h\x1b[?25l") // the alternate screen, no cursor
	defer fmt.Fprint(e.stdout, "\x1b[?25h\x1b[?1049l")
	var last top.Snapshot
	var lastErr error
	note := ""
	for {
		w, h := 80, 24
		if f, ok := e.stdout.(interface{ Fd() uintptr }); ok {
			if tw, th, err := term.GetSize(int(f.Fd())); err == nil {
				w, h = tw, th
			}
		}
		out := top.Render(last, v, w, h-3)
		if lastErr != nil {
			out += "locus top: " + lastErr.Error() + "\n"
		}
		if note != "" {
			out += note + "\n"
		}
		// Home, the view, then clear what is left of the screen (raw
		// mode: a line ends in CR LF).
		fmt.Fprint(e.stdout, "\x1b[H"+strings.ReplaceAll(out, "\n", "\x1b[K\r\n")+"\x1b[J")
		select {
		case <-ctx.Done():
			return nil
		case r := <-snaps:
			lastErr = r.err
			if r.err == nil {
				last = r.s
				v = v.Fit(last)
			}
		case <-winch:
		case note = <-notes:
		case k, ok := <-keys:
			if !ok {
				return nil
			}
			if v.Selected < 0 {
				v.Selected = 0
			}
			var a top.Action
			v, a = v.Key(k, last)
			switch {
			case a.Quit:
				return nil
			case a.Target != nil:
				p, sig := *a.Target, a.Signal
				note = fmt.Sprintf("sending %s to %d (node %d pid %d)...", sig, p.CPID, p.Node, p.PID)
				wg.Add(1)
				go func() {
					defer wg.Done()
					kctx, kcancel := context.WithTimeout(ctx, 5*time.Second)
					defer kcancel()
					msg := fmt.Sprintf("%s sent to %d (node %d pid %d)", sig, p.CPID, p.Node, p.PID)
					if err := signalProcess(kctx, client, p.Node, p.PID, sig); err != nil {
						msg = fmt.Sprintf("%s to %d: %v", sig, p.CPID, err)
					}
					select {
					case notes <- msg:
					case <-ctx.Done():
					}
				}()
			}
		}
	}
}

// signalProcess sends sig to pid on node through the cluster's kill.
func signalProcess(ctx context.Context, client *locusd.Client, node, pid int, sig syscall.Signal) error {
	var res []locusd.KillResult
	err := client.Post(ctx, "/v1/proc/kill", locusd.KillRequest{Signal: int(sig), Targets: []locusd.KillTarget{{Node: node, PID: pid}}}, &res)
	if err == nil && len(res) == 1 && res[0].Error != "" {
		err = errors.New(res[0].Error)
	}
	return err
}

// rawKeys puts the terminal on stdin in raw mode and sends its keys on
// the channel until ctx ends (then it is closed); restore gives the
// terminal back. Without a terminal on stdin there are no keys.
func rawKeys(ctx context.Context, stdin io.Reader, wg *sync.WaitGroup) (<-chan string, func(), error) {
	keys := make(chan string, 16)
	in, ok := stdin.(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return keys, func() {}, nil // never closed: q is Ctrl-C then
	}
	old, err := term.MakeRaw(int(in.Fd()))
	if err != nil {
		return nil, nil, fmt.Errorf("top: terminal: %w", err)
	}
	// A duplicate of stdin, non-blocking, so the reader below ends when
	// it is closed instead of blocking on the terminal for ever.
	fd, err := syscall.Dup(int(in.Fd()))
	if err != nil {
		term.Restore(int(in.Fd()), old)
		return nil, nil, fmt.Errorf("top: stdin: %w", err)
	}
	syscall.SetNonblock(fd, true)
	f := os.NewFile(uintptr(fd), "stdin")
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(keys)
		buf := make([]byte, 64)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			for _, k := range top.ParseKeys(buf[:n]) {
				select {
				case keys <- k:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	restore := func() {
		f.Close()
		syscall.SetNonblock(int(in.Fd()), false)
		term.Restore(int(in.Fd()), old)
	}
	return keys, restore, nil
}
