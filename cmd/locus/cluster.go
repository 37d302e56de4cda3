package main

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/locus-ssi/locus/services/events"

	"github.com/spf13/cobra"

	"github.com/locus-ssi/locus/services/locusd"
)

func newClusterCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "The cluster's membership: who is in, in which state, who is master",
		Long: `The cluster verbs ask one node's daemon for its view of the membership
(every node holds the same view): on the host, through the context
` + "`locus qemu up`" + ` saved (its credential and endpoint; see locus config),
or --endpoint; on a node, as root, its own daemon's socket. On a node, ` + "`cluster`" + ` is
also a command of its own (openSSI's).`,
		Example: "  locus cluster status\n  locus cluster status --output json\n  locus cluster events",
	}
	cmd.AddCommand(newClusterStatusCmd(e), newClusterEventsCmd(e))
	return cmd
}

// endpointCmd is a verb that talks to the cluster's endpoint and prints
// a table or JSON. It takes no arguments unless the caller sets Args.
func endpointCmd(e *env, use, short, example string, run func(cmd *cobra.Command, args []string, ep *endpoint, output string) error) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use: use, Short: short, Example: example, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ep, err := resolveEndpoint(e.endpoint, e.context)
			if err != nil {
				return err
			}
			defer ep.client.Close()
			return run(cmd, args, ep, output)
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newClusterStatusCmd(e *env) *cobra.Command {
	return endpointCmd(e, "status", "Show every node's membership state, the master and the last transition",
		"  locus cluster status\n  locus --endpoint 10.77.0.2 cluster status --output json",
		func(cmd *cobra.Command, _ []string, ep *endpoint, output string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			var st locusd.ClusterView
			if err := ep.client.Get(ctx, "/v1/cluster", &st); err != nil {
				return fmt.Errorf("cluster status from %s (%s): %w", ep.API, ep.From, err)
			}
			if output == "json" {
				return jsonOut(e, st)
			}
			quorum := "yes"
			if !st.Quorum {
				quorum = "NO: this node is on a minority side or has no master; it grants nothing"
			}
			if st.Waiting != "" {
				quorum += "; " + st.Waiting + ", no node is taken Up"
			}
			fmt.Fprintf(e.stdout, "seen from node %d: master node %d, term %d, last transition %d, quorum %s\n", st.Self, st.Master, st.Term, st.LastTransition, quorum)
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NODE\tHOSTNAME\tSTATE\tTRANSITION\tROLE\tADDR\tRUNLEVEL\tUPTIME\tSINCE")
			for _, n := range st.Nodes {
				role := "member"
				switch {
				case n.Node == st.Master:
					role = "master"
				case n.Voter:
					role = "voter"
				}
				addr, _, _ := strings.Cut(n.Addr, ":")
				rl, up := "-", "-"
				if n.RunLevel > 0 {
					rl = fmt.Sprint(n.RunLevel)
				}
				if n.Uptime > 0 {
					up = (time.Duration(n.Uptime) * time.Second).String()
				}
				if n.Unreachable != "" {
					rl, up = "?", "unreachable"
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s ago\n", n.Node, dash(n.Hostname), n.State, n.Transition, role, dash(addr), rl, up, time.Since(n.Since).Round(time.Second))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			for _, n := range st.Nodes {
				if n.Fence != "" {
					fmt.Fprintf(e.stdout, "node %d: %s\n", n.Node, n.Fence)
				}
			}
			for _, r := range st.Refused {
				fmt.Fprintf(e.stdout, "refused gossip member %s\n", r)
			}
			return nil
		})
}

func newClusterEventsCmd(e *env) *cobra.Command {
	var follow bool
	var f eventFilter
	cmd := endpointCmd(e, "events", "Show a node's event feed: phases, run level, transitions, roles, services, fencing",
		"  locus cluster events\n  locus cluster events -f --kind transition.applied\n  locus cluster events --since 40 --output json",
		func(cmd *cobra.Command, _ []string, ep *endpoint, output string) error {
			if err := f.check(); err != nil {
				return err
			}
			q := url.Values{"since": {strconv.FormatUint(f.since, 10)}}
			if follow {
				q.Set("follow", "true")
			}
			resp, err := ep.client.Open(cmd.Context(), "/v1/events?"+q.Encode())
			if err != nil {
				return fmt.Errorf("cluster events from %s (%s): %w", ep.API, ep.From, err)
			}
			defer resp.Body.Close()
			err = events.Read(resp.Body, f.printer(e, output))
			if err != nil && cmd.Context().Err() == nil {
				return fmt.Errorf("cluster events from %s: %w", ep.API, err)
			}
			return nil
		})
	cmd.Long = `Events are what a node's init and daemon did, typed and numbered in order
from 1 each boot: phase.started/done/failed, runlevel.reached,
state.changed, transition.applied (every membership transition, the same
on every node), role.taken/lost (master, cfs-server),
service.started/stopped, node.fenced, root.unmounted. The feed is the
endpoint's node's (on a node, its own); --follow keeps printing new ones.`
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing events as they come")
	f.add(cmd)
	return cmd
}
