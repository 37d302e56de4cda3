package main

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/spf13/cobra"

	"github.com/locus-ssi/locus/internal/top"
	"github.com/locus-ssi/locus/services/locusd"
	"github.com/locus-ssi/locus/services/proc"
)

func newTopCmd(e *env) *cobra.Command {
	var count int
	var width int
	cmd := &cobra.Command{
		Use:   "top",
		Short: "The whole cluster in one terminal view: nodes, load, memory, the busiest processes by cluster PID",
		Long: `Top refreshes every second: every node's state, role, load (the process
service's load vector), CPUs, memory and process count, then every node's
processes, busiest first, by cluster PID. Keys: s sorts (CPU, memory,
cluster PID), n shows one node then the next (then all again), up and down
select a process, k sends it SIGTERM and K SIGKILL (as you: the verbs'
own rules), q quits. When stdout is not a terminal it prints --count
snapshots (default 1) as plain lines, --width columns wide.`,
		Example: "  locus top\n  locus top --count 3 --width 120 > top.txt",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := e.procClient()
			if err != nil {
				return err
			}
			src := top.Source{
				Fetch: func(ctx context.Context) (top.Snapshot, error) { return snapshot(ctx, client) },
				Kill: func(ctx context.Context, node, pid int, sig syscall.Signal) error {
					var res []locusd.KillResult
					err := client.Post(ctx, "/v1/proc/kill", locusd.KillRequest{Signal: int(sig), Targets: []locusd.KillTarget{{Node: node, PID: pid}}}, &res)
					if err == nil && len(res) == 1 && res[0].Error != "" {
						err = fmt.Errorf("%s", res[0].Error)
					}
					return err
				},
			}
			if !isTerminal(e.stdout) {
				for i := 0; i < max(count, 1); i++ {
					if i > 0 {
						time.Sleep(time.Second)
					}
					s, err := src.Fetch(cmd.Context())
					if err != nil {
						return err
					}
					fmt.Fprint(e.stdout, top.Render(s, top.View{Selected: -1}, width, 0))
				}
				return nil
			}
			in, _ := e.stdin.(*os.File)
			p := tea.NewProgram(top.NewModel(cmd.Context(), src), tea.WithAltScreen(), tea.WithContext(cmd.Context()), tea.WithInput(in), tea.WithOutput(e.stdout))
			_, err = p.Run()
			if err != nil && cmd.Context().Err() != nil {
				return nil
			}
			return err
		},
	}
	cmd.Flags().IntVar(&count, "count", 1, "snapshots to print when stdout is not a terminal")
	cmd.Flags().IntVar(&width, "width", 100, "columns when stdout is not a terminal")
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
