package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/locus-ssi/locus/services/locusd"
)

func newRunLevelCmd(e *env) *cobra.Command {
	cmd := endpointCmd(e, "runlevel [LEVEL]", "Show the cluster's run level, or change it on every node",
		"  locus runlevel\n  locus runlevel 2\n  locus runlevel --output json",
		func(cmd *cobra.Command, args []string, ep *endpoint, output string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			if len(args) == 1 {
				level, err := strconv.Atoi(args[0])
				if err != nil || level < 1 || level > 5 {
					return fmt.Errorf("run level %q: want a number from 1 to 5", args[0])
				}
				if err := ep.client.Post(ctx, "/v1/runlevel", locusd.RunLevelRequest{Level: level}, nil); err != nil {
					return fmt.Errorf("set run level %d through %s (%s): %w", level, ep.API, ep.From, err)
				}
				if output != "json" {
					fmt.Fprintf(e.stdout, "cluster run level set to %d; nodes follow within seconds\n", level)
					return nil
				}
			}
			var st locusd.ClusterView
			if err := ep.client.Get(ctx, "/v1/cluster", &st); err != nil {
				return fmt.Errorf("cluster from %s (%s): %w", ep.API, ep.From, err)
			}
			if output == "json" {
				type row struct {
					Node     int    `json:"node"`
					State    string `json:"state"`
					RunLevel int    `json:"runlevel"`
				}
				out := struct {
					RunLevel int   `json:"runlevel"`
					Nodes    []row `json:"nodes"`
				}{RunLevel: st.RunLevel}
				for _, n := range st.Nodes {
					out.Nodes = append(out.Nodes, row{n.Node, string(n.State), n.RunLevel})
				}
				return jsonOut(e, out)
			}
			fmt.Fprintf(e.stdout, "cluster run level %d\n", st.RunLevel)
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NODE\tSTATE\tRUNLEVEL")
			for _, n := range st.Nodes {
				rl := "-"
				if n.RunLevel > 0 {
					rl = strconv.Itoa(n.RunLevel)
				}
				fmt.Fprintf(w, "%d\t%s\t%s\n", n.Node, n.State, rl)
			}
			return w.Flush()
		})
	cmd.Long = `The cluster's run level is cluster state, committed by the master. Every
node climbs to it (starting each level's services in order) or comes down
to it (stopping the services above it in reverse order). A node booting
later is Up only once it has reached it.`
	cmd.Args = cobra.MaximumNArgs(1)
	return cmd
}

func newShutdownCmd(e *env) *cobra.Command {
	var node int
	var reboot, yes bool
	cmd := endpointCmd(e, "shutdown", "Shut down (or reboot) the whole cluster, or one node",
		"  locus shutdown            # asks first on a terminal\n  locus shutdown --yes\n  locus shutdown --node 3\n  locus shutdown --node 2 --reboot",
		func(cmd *cobra.Command, _ []string, ep *endpoint, output string) error {
			if node == 0 && !yes {
				verb := "power off"
				if reboot {
					verb = "reboot"
				}
				if err := confirm(e, fmt.Sprintf("This will %s every node of the cluster at %s (%s).", verb, ep.API, ep.From)); err != nil {
					return err
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			var reply locusd.ShutdownReply
			if err := ep.client.Post(ctx, "/v1/shutdown", locusd.ShutdownRequest{Node: node, Reboot: reboot}, &reply); err != nil {
				return fmt.Errorf("shutdown through %s (%s): %w", ep.API, ep.From, err)
			}
			if output == "json" {
				return jsonOut(e, reply)
			}
			verb := "shutting down"
			if reboot {
				verb = "rebooting"
			}
			fmt.Fprintf(e.stdout, "%s: nodes %v\n", verb, reply.Asked)
			for n, why := range reply.Failed {
				fmt.Fprintf(e.stdout, "node %s not asked: %s\n", n, why)
			}
			if len(reply.Failed) > 0 {
				return fmt.Errorf("%d node(s) not asked", len(reply.Failed))
			}
			return nil
		})
	cmd.Long = `Each node asked stops its services in reverse order, tells the cluster it
is ShuttingDown, leaves its shared root, and powers off (or reboots); the
master takes it Down without fencing. In a whole-cluster shutdown the node
serving the shared root goes last, once the others are Down, so nothing
written before is lost.`
	cmd.Flags().IntVar(&node, "node", 0, "the node to shut down (default: the whole cluster)")
	cmd.Flags().BoolVar(&reboot, "reboot", false, "reboot instead of powering off")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask before shutting the whole cluster down")
	return cmd
}

// confirm asks on a terminal whether to go on with what; without a
// terminal to ask on it refuses, pointing at --yes.
func confirm(e *env, what string) error {
	in, ok := e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return fmt.Errorf("%s Nothing to ask on (stdin is not a terminal): add --yes to go on", what)
	}
	fmt.Fprintf(e.stderr, "%s Go on? [y/N] ", what)
	line, _ := bufio.NewReader(in).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
		return fmt.Errorf("not confirmed: nothing was shut down")
	}
	return nil
}
