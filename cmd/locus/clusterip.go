package main

import (
	"fmt"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/locus-ssi/locus/services/locusd"
	"github.com/locus-ssi/locus/services/lvs"
)

func newClusterIPCmd(e *env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "clusterip",
		Short: "The cluster IP: which node directs it, and each port's real servers",
		Long: `The cluster IP (cluster_ip: in the spec) is one address for the whole
cluster. One node, the director, holds it and spreads each port's
connections over the nodes running the port's service, with the kernel's
IPVS (direct routing). The membership's master picks the director and
moves it when the director is fenced Down; the new one takes the address
and announces it (gratuitous ARP) at once, and the connections IPVS
synchronised to it go on.`,
		Example: "  locus clusterip\n  locus clusterip --output json\n  locus clusterip move 3",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			client, err := e.procClient()
			if err != nil {
				return err
			}
			var r lvs.Report
			if err := client.Get(cmd.Context(), "/v1/clusterip", &r); err != nil {
				return err
			}
			if output == "json" {
				return jsonOut(e, r)
			}
			director := "none"
			switch d := r.Director; {
			case d.Node != 0 && d.Releasing:
				director = fmt.Sprintf("node %d, giving it up (%s)", d.Node, d.Why)
			case d.Node != 0:
				director = fmt.Sprintf("node %d (since %s ago: %s)", d.Node, age(d.Since), d.Why)
			case d.Next != 0:
				director = fmt.Sprintf("none: node %d takes it next (%s)", d.Next, d.Why)
			}
			fmt.Fprintf(e.stdout, "cluster IP %s on %s, director %s\n", r.Address, r.Interface, director)
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PORT\tSCHEDULER\tREAL SERVERS")
			for _, v := range r.Table {
				servers := make([]string, len(v.Servers))
				for i, a := range v.Servers {
					servers[i] = netip.Addr.String(a)
				}
				fmt.Fprintf(tw, "%s/%d\t%s\t%s\n", v.Protocol, v.Port, v.Scheduler, dashIfEmpty(strings.Join(servers, " ")))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.AddCommand(newClusterIPMoveCmd(e))
	return cmd
}

func newClusterIPMoveCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "move NODE",
		Short: "Move the cluster IP to another of its directors (maintenance of the director)",
		Long: `The director gives the address up first (its IPVS sync daemon stops as
master, so every backup holds the connections it synchronised); then NODE
takes the address, becomes the sync master and announces it. NODE must be
one of the spec's directors and Up. The command returns once the master
recorded the move; locus clusterip shows it done.`,
		Example: "  locus clusterip move 3",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := parseNode(args[0])
			if err != nil || n == 0 {
				return fmt.Errorf("clusterip move: %q: want a node number", args[0])
			}
			client, err := e.procClient()
			if err != nil {
				return err
			}
			var reply locusd.ClusterIPMove
			if err := client.Post(cmd.Context(), "/v1/clusterip/move", locusd.ClusterIPMove{To: n}, &reply); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "cluster IP: move to node %d committed\n", n)
			return nil
		},
	}
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
