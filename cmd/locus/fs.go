package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/locus-ssi/locus/internal/fsconform"
)

func newFSCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fs",
		Short: "Check the filesystem this node sees (the shared root)",
	}
	cmd.AddCommand(newFSConformCmd(e))
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
