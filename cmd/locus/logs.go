package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/locus-ssi/locus/services/logring"
)

func newLogsCmd(e *env) *cobra.Command {
	var follow, previous bool
	var node, since, level, grep, output string
	cmd := &cobra.Command{
		Use:   "logs",
		Short: "Every node's daemon log, merged by time (or one node's), and with -f the new lines as they come",
		Long: `Logs reads the log every node's daemon keeps in a ring (its own lines, the
membership's, and Raft's and memberlist's, which go there too), merged by
time and labelled by node, from any node or the workstation. -f follows:
the new lines of every node, each second; a node that stops answering gets
a line saying so and the others go on. --previous reads the previous
boot's log instead, from the disk of the nodes that have a state disk
(the init node keeps its log at /var/lib/locus/log/locusd.log).`,
		Example: "  locus logs --since 10m --level warn\n  locus logs --previous --node 1 --level error\n  locus logs -f --grep 'lockspace|fence'\n  locus logs --node 3 --output json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			q := url.Values{}
			if node != "" {
				n, err := parseNode(node)
				if err != nil || n == 0 {
					return fmt.Errorf("logs: --node %q: want a node number", node)
				}
				q.Set("node", fmt.Sprint(n))
			}
			for k, v := range map[string]string{"since": since, "level": level, "grep": grep} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if follow {
				q.Set("follow", "true")
			}
			if previous {
				if follow {
					return fmt.Errorf("logs: --previous and -f: a previous boot's log is finished")
				}
				q.Set("boot", "previous")
			}
			client, err := e.procClient()
			if err != nil {
				return err
			}
			resp, err := client.Open(cmd.Context(), "/v1/logs?"+q.Encode())
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				if output == "json" {
					fmt.Fprintln(e.stdout, sc.Text())
					continue
				}
				var l logring.Line
				if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
					return fmt.Errorf("logs: a line from the daemon: %w", err)
				}
				fmt.Fprintln(e.stdout, l.String())
			}
			if cmd.Context().Err() != nil {
				return nil
			}
			return sc.Err()
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "then the new lines, until interrupted")
	cmd.Flags().BoolVar(&previous, "previous", false, "the previous boot's log, from the nodes' state disks")
	cmd.Flags().StringVar(&node, "node", "", "only this node's")
	cmd.Flags().StringVar(&since, "since", "", "only lines newer than this (10m, 1h)")
	cmd.Flags().StringVar(&level, "level", "", "only this level and above (debug, info, warn, error)")
	cmd.Flags().StringVar(&grep, "grep", "", "only lines matching this regular expression")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table (lines) or json (one object a line)")
	return cmd
}
