package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"

	"github.com/spf13/cobra"

	"github.com/locus-ssi/locus"
)

// env is what every verb gets: its streams.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// endpoint is the --endpoint flag: the cluster host-side verbs talk to.
	endpoint string
	// context is the --context flag: the client configuration's context
	// (credential and endpoints) to use.
	context string
}

func newRootCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "locus",
		Short: "Locus: a rack of Linux machines that behaves like one machine",
		Long: `Locus builds and runs single-system-image clusters: one image, every node
boots it (from disk, by PXE, or directly under QEMU), joins the cluster
early in boot and climbs to the cluster's run level with the others.`,
		Example: `  locus image build                # kernel, initramfs, install disk into out/
  locus qemu up -n 4               # node 1 from the disk, nodes 2-4 by PXE
  locus cluster status             # every node, its state and run level
  locus qemu exec 2 -- uname -n    # run a command on node 2
  locus qemu down`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&e.endpoint, "endpoint", "", "node daemon to talk to, HOST[:PORT] (default: $LOCUS_ENDPOINT, else the context's first endpoint)")
	root.PersistentFlags().StringVar(&e.context, "context", "", "context of the client configuration to use: its credential and endpoints (default: $LOCUS_CONTEXT, else the one in use; see locus config)")
	cmds := append([]groupedCommand{
		{groupBuild, newInstallCmd(e)}, {groupBuild, newNetbootCmd(e)},
		{groupCluster, newClusterCmd(e)}, {groupCluster, newRunLevelCmd(e)}, {groupCluster, newShutdownCmd(e)}, {groupCluster, newProbeCmd(e)},
		{groupCluster, newConfigCmd(e)}, {groupCluster, newAdminCmd(e)}, {groupCluster, newLockCmd(e)}, {groupCluster, newServiceCmd(e)}, {groupCluster, newClusterIPCmd(e)}, {groupCluster, newMetricsCmd(e)}, {groupCluster, newLogsCmd(e)}, {groupCluster, newDashboardCmd(e)},
		{groupProc, newOnnodeCmd(e)}, {groupProc, newOnallCmd(e)}, {groupProc, newFastCmd(e)}, {groupProc, newFastnodeCmd(e)},
		{groupProc, newPSCmd(e)}, {groupProc, newKillCmd(e)}, {groupProc, newKill3Cmd(e)}, {groupProc, newWhereCmd(e)}, {groupProc, newLoadsCmd(e)}, {groupProc, newTopCmd(e)}, {groupProc, newSSICmd(e)},
		{groupNode, newNodeCmd(e)}, {groupNode, newFSCmd(e)},
	}, hostCommands(e)...)
	// The groups of locus --help, in this order, each shown only when it
	// has a verb (the node build has no QEMU verbs).
	for _, g := range []cobra.Group{
		{ID: groupBuild, Title: "Build and install:"},
		{ID: groupCluster, Title: "The cluster:"},
		{ID: groupProc, Title: "Processes, clusterwide:"},
		{ID: groupNode, Title: "Machines:"},
		{ID: groupQEMU, Title: "QEMU clusters on this machine:"},
	} {
		if slices.ContainsFunc(cmds, func(c groupedCommand) bool { return c.group == g.ID }) {
			root.AddGroup(&g)
		}
	}
	for _, c := range cmds {
		c.cmd.GroupID = c.group
		root.AddCommand(c.cmd)
	}
	// Internal verbs: init and the membership master run them; they are
	// documented (docs/cli.md) but not listed.
	daemon, fence := newDaemonCmd(e), newFenceCmd(e)
	daemon.Hidden, fence.Hidden = true, true
	root.AddCommand(newVersionCmd(e), daemon, fence, newSSIEnterCmd(), newJobEnterCmd(e))
	return root
}

// groupedCommand is a verb and its group in locus --help.
type groupedCommand struct {
	group string
	cmd   *cobra.Command
}

// Command groups of locus --help.
const (
	groupBuild   = "build"
	groupCluster = "cluster"
	groupProc    = "proc"
	groupNode    = "node"
	groupQEMU    = "qemu"
)

func newVersionCmd(e *env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the Locus version",
		Example: "  locus version\n  locus version --output json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if output == "json" {
				return json.NewEncoder(e.stdout).Encode(map[string]string{"version": locus.Version})
			}
			fmt.Fprintln(e.stdout, "locus", locus.Version)
			return nil
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func addOutputFlag(cmd *cobra.Command, output *string) {
	cmd.Flags().StringVarP(output, "output", "o", "table", "output format: table or json")
	cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
}

func checkOutput(o string) error {
	if o != "table" && o != "json" {
		return fmt.Errorf("--output %q: want table or json", o)
	}
	return nil
}

func jsonOut(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
