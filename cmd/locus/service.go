package main

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/locus-ssi/locus/services/locusd"
)

func newServiceCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "service",
		Aliases: []string{"keepalive", "spawndaemon"},
		Short:   "The cluster's HA services: where each instance runs, start, stop, move, logs",
		Long: `An HA service (a spec service with an ha: block) is kept running by the
cluster: the membership's master puts each instance on a node (in its
Raft log, so a new master keeps every assignment), the node runs and
monitors it, restarts a local failure at once, and the master moves it
when its node fails (after the fence), fails too often
(migration_threshold within failure_timeout) or cannot run it (OCF 2, 4,
5). openSSI's keepalive and spawndaemon are this command's other names.`,
		Example: "  locus service ls\n  locus service status web\n  locus service move web --to 3\n  locus service stop web\n  locus service logs web",
	}
	cmd.AddCommand(newServiceLsCmd(e, "ls"), newServiceLsCmd(e, "status"), newServiceVerbCmd(e, "start"), newServiceVerbCmd(e, "stop"), newServiceVerbCmd(e, "move"), newServiceLogsCmd(e))
	return cmd
}

func newServiceLsCmd(e *env, use string) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:     use + " [NAME...]",
		Short:   "Each HA service's instances: node, state, restarts, why it is there; failure counts",
		Example: "  locus service " + use + "\n  locus service " + use + " web --output json",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			client, err := e.procClient()
			if err != nil {
				return err
			}
			var reply locusd.ServicesReply
			if err := client.Get(cmd.Context(), "/v1/services", &reply); err != nil {
				return err
			}
			if len(args) > 0 {
				var keep []int
				for i, s := range reply.Services {
					for _, a := range args {
						if s.Name == a {
							keep = append(keep, i)
						}
					}
				}
				for _, a := range args {
					found := false
					for _, s := range reply.Services {
						found = found || s.Name == a
					}
					if !found {
						return fmt.Errorf("service %s: no such HA service in the spec", a)
					}
				}
				svcs := reply.Services[:0:0]
				for _, i := range keep {
					svcs = append(svcs, reply.Services[i])
				}
				reply.Services = svcs
			}
			if output == "json" {
				return jsonOut(e, reply)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERVICE\tKIND\tINSTANCE\tNODE\tSTATE\tRESTARTS\tSINCE\tWHY")
			for _, s := range reply.Services {
				if s.Stopped != "" {
					fmt.Fprintf(tw, "%s\t%s\t-\t-\tstopped\t-\t-\tby %s\n", s.Name, s.Kind, s.Stopped)
				}
				if len(s.Running) == 0 && s.Stopped == "" {
					fmt.Fprintf(tw, "%s\t%s\t-\t-\tunplaced\t-\t-\tno node can run it\n", s.Name, s.Kind)
				}
				for _, in := range s.Running {
					node, state := "-", in.State
					if in.Node != 0 {
						node = strconv.Itoa(in.Node)
					}
					if in.Releasing {
						state += " (releasing)"
					}
					why := in.Why
					if in.Last != "" && in.State != "running" {
						why += "; " + in.Last
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.Name, s.Kind, in.Instance, node, state, in.Restarts, age(in.Since), why)
				}
			}
			tw.Flush()
			for _, s := range reply.Services {
				for _, f := range s.Failures {
					ban := ""
					if f.Banned {
						ban = ", banned"
					}
					fmt.Fprintf(e.stdout, "%s: %d failure(s) on node %d%s, last %s ago: %s\n", s.Name, f.Count, f.Node, ban, age(f.Last), f.Reason)
				}
			}
			for _, u := range reply.Unreachable {
				fmt.Fprintf(e.stderr, "locus: node %d did not answer: %s\n", u.Node, u.Error)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return c
}

func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(100 * time.Millisecond).String()
}

func newServiceVerbCmd(e *env, verb string) *cobra.Command {
	var to, instance string
	short := map[string]string{
		"start": "Run a stopped service again (its failure counts cleared, as Pacemaker's cleanup)",
		"stop":  "Stop every instance of a service until it is started again",
		"move":  "Move an instance to another node (--to N, or the next by its placement)",
	}[verb]
	c := &cobra.Command{
		Use:     verb + " NAME",
		Short:   short,
		Example: map[string]string{"start": "  locus service start web", "stop": "  locus service stop web", "move": "  locus service move web --to 3\n  locus service move web"}[verb],
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := locusd.ServiceControl{Instance: instance}
			if to != "" {
				n, err := parseNode(to)
				if err != nil || n == 0 {
					return fmt.Errorf("service move: --to %q: want a node number", to)
				}
				body.To = n
			}
			client, err := e.procClient()
			if err != nil {
				return err
			}
			var reply locusd.ServiceControlReply
			if err := client.Post(cmd.Context(), "/v1/services/"+url.PathEscape(args[0])+"/"+verb, body, &reply); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s: %s committed\n", args[0], verb)
			return nil
		},
	}
	if verb == "move" {
		c.Flags().StringVar(&to, "to", "", "the node to move it to")
		c.Flags().StringVar(&instance, "instance", "", "which instance (default 0)")
	}
	return c
}

func newServiceLogsCmd(e *env) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:     "logs NAME",
		Short:   "A service's output and what the daemons did with it, from every node, by time",
		Example: "  locus service logs web\n  locus service logs web --output json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			client, err := e.procClient()
			if err != nil {
				return err
			}
			var reply locusd.ServiceLogsReply
			if err := client.Get(cmd.Context(), "/v1/services/"+url.PathEscape(args[0])+"/logs", &reply); err != nil {
				return err
			}
			if output == "json" {
				return jsonOut(e, reply)
			}
			for _, l := range reply.Lines {
				fmt.Fprintf(e.stdout, "%s node%d %s/%s %s: %s\n", l.At.Local().Format("15:04:05.000"), l.Node, l.Service, l.Instance, l.Stream, strings.TrimRight(l.Text, "\n"))
			}
			for _, u := range reply.Unreachable {
				fmt.Fprintf(e.stderr, "locus: node %d did not answer: %s\n", u.Node, u.Error)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return c
}
