package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
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
cpid), by cluster PID, fitted to the terminal's size. When stdout is not a
terminal it prints --count snapshots (default 1) as plain lines, --width
columns wide. (Keys to sort, filter and signal from the view are not yet
there: use locus kill with the CPID it shows.)`,
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
			tty := isTerminal(e.stdout)
			var last top.Snapshot
			for i := 0; tty || i < max(count, 1); i++ {
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
				if !tty {
					if err != nil {
						return err
					}
					fmt.Fprint(e.stdout, top.Render(s, v, width, 0))
					continue
				}
				w, h := 80, 24
				if f, ok := e.stdout.(interface{ Fd() uintptr }); ok {
					if tw, th, err := term.GetSize(int(f.Fd())); err == nil {
						w, h = tw, th
					}
				}
				if err == nil {
					last = s
				}
				out := top.Render(last, v, w, h-2)
				if err != nil {
					out += "locus top: " + err.Error() + "\n"
				}
				// Home, the view, then clear what is left of the screen.
				fmt.Fprint(e.stdout, "\x1b[H"+strings.ReplaceAll(out, "\n", "\x1b[K\n")+"\x1b[J")
			}
			return nil
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
