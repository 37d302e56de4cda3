package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

func newMetricsCmd(e *env) *cobra.Command {
	var node string
	var netboot bool
	cmd := &cobra.Command{
		Use:   "metrics",
		Short: "A node's Prometheus metrics, as its daemon serves them to Prometheus",
		Long: `Metrics prints GET /v1/metrics of the node the API answers from, or with
--node N of node N (fetched over the cluster's interconnect), in
Prometheus's text format: the membership as that node sees it, every Up
node's load vector, its HA instances, lockspaces and cluster IP, and
counters of its event feed (transitions, fencings, master changes,
service starts and stops, lockspace recoveries). --netboot prints the
init node's netboot service's instead (DHCP exchanges, leases, TFTP and
HTTP bytes and transfers, machines by boot stage; GET
/v1/netboot/metrics). docs/metrics.md has a scrape configuration and the
alerts that matter.`,
		Example: "  locus metrics\n  locus metrics --node 3 | grep '^locus_node_state'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := "/v1/metrics"
			if netboot {
				if node != "" {
					return fmt.Errorf("metrics: --netboot and --node: the netboot service runs on the init node, which the endpoint reaches")
				}
				path = "/v1/netboot/metrics"
			}
			if node != "" {
				n, err := parseNode(node)
				if err != nil || n == 0 {
					return fmt.Errorf("metrics: --node %q: want a node number", node)
				}
				path += fmt.Sprintf("?node=%d", n)
			}
			client, err := e.procClient()
			if err != nil {
				return err
			}
			resp, err := client.Open(cmd.Context(), path)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			_, err = io.Copy(e.stdout, resp.Body)
			return err
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the node whose metrics (default: the one answering)")
	cmd.Flags().BoolVar(&netboot, "netboot", false, "the netboot service's metrics (DHCP, TFTP, HTTP, boot stages)")
	return cmd
}
