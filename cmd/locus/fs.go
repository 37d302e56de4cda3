package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/locus-ssi/locus/internal/fsconform"
)

func newFSCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "fs",
		Short:   "Check the filesystem this node sees (the shared root)",
		Example: "  locus fs conform /var/tmp\n  locus fs bench /var/tmp\n  locus fs lock /srv/state -- app --update",
	}
	cmd.AddCommand(newFSConformCmd(e), newFSBenchCmd(e), newFSLockCmd(e))
	return cmd
}

func newFSBenchCmd(e *env) *cobra.Command {
	var output string
	var n int
	cmd := &cobra.Command{
		Use:   "bench DIR",
		Short: "Measure what a user waits for in DIR: lookups, creates, listings, writes, starting a program",
		Long: `Runs each operation N times in a new directory under DIR and prints the
median and 90th percentile: lstat of a path four levels deep, open and
close, create and unlink, mkdir and rmdir, a 100-entry listing, a
64 KiB write with fsync, and starting this locus binary (locus
version), which on a node is read from the shared root.`,
		Example: "  locus fs bench /var/tmp\n  locus fs bench -n 50 --output json /home",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			costs, err := fsconform.Bench(cmd.Context(), args[0], n, exe, "version")
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(costs)
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "OPERATION\tN\tMEDIAN\tP90")
			for _, c := range costs {
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", c.Op, c.N, c.Median.Round(time.Microsecond), c.P90.Round(time.Microsecond))
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.Flags().IntVarP(&n, "n", "n", 20, "times each operation runs")
	return cmd
}

func newFSConformCmd(e *env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "conform DIR",
		Short: "Run POSIX conformance checks in DIR as root and as other users",
		Long: `Runs checks of ownership, modes, chmod, chown, open, mkdir, mkfifo, mknod,
link, rename, rmdir, symlink, truncate, write and utimensat in a new
directory under DIR, as root and as uids 65533 and 65534 with given
groups, and lists every check whose result is not what a local Linux
filesystem gives. Run it on a node's shared root and on the server's own
disk to compare them. Needs root; exits 1 when a check fails.`,
		Example: "  locus fs conform /var/tmp\n  locus fs conform --output json /var/tmp",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := fsconform.Run(cmd.Context(), args[0], func(group string) {
				if output != "json" {
					fmt.Fprintf(e.stderr, "checking %s\n", group)
				}
			})
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				if r.Failures > 0 {
					fmt.Fprintln(w, "CHECK\tCALL\tWANT\tGOT")
				}
				for _, c := range r.Checks {
					if !c.OK {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", c.Name, c.What, c.Want, c.Got)
					}
				}
				w.Flush()
				fmt.Fprintf(e.stdout, "%d checks in %s, %d failed\n", len(r.Checks), r.Dir, r.Failures)
			}
			if r.Failures > 0 {
				return exitCodeError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}
