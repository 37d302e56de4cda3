package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/locus-ssi/locus/internal/virtioport"
	"github.com/locus-ssi/locus/services/fence"
)

func newFenceCmd(e *env) *cobra.Command {
	var o fence.Options
	var device string
	cmd := &cobra.Command{
		Use:   "fence",
		Short: "Fence agent of Locus QEMU clusters: power a node off or on through the virtual BMC",
		Long: `Fence is a fence agent in the fence-agents mould, for nodes of a Locus QEMU
cluster: it asks the host's supervisor, through this VM's org.locus.fence
virtio-serial port, to power a node of the cluster off, on, or to report
its power state. Options come as flags or, as Pacemaker passes them, as
key=value lines on standard input (action=off, plug=3). Exit status: 0
done (status: on), 2 status off, 1 failed.

The membership master runs it on a failed node before committing its
Down, when the spec names no other agent and the node has the port.`,
		Example: "  locus fence --action off --plug 3\n  printf 'action=status\\nplug=3\\n' | locus fence",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Action == "" && o.Plug == 0 {
				data, err := io.ReadAll(io.LimitReader(e.stdin, 64<<10))
				if err != nil {
					return err
				}
				if o, err = fence.ParseOptions(data); err != nil {
					return err
				}
			}
			if o.Action == "" || o.Plug < 1 {
				return fmt.Errorf("fence: need an action and a plug (node number)")
			}
			switch o.Action {
			case "monitor", "list", "metadata":
				return nil // the virtual BMC is always there when the port is
			case fence.ActionOff, fence.ActionOn, fence.ActionReboot, fence.ActionStatus:
			default:
				return fmt.Errorf("fence: action %q: want off, on, reboot or status", o.Action)
			}
			if device == "" {
				if device = virtioport.Find(fence.QEMUPortName); device == "" {
					return fmt.Errorf("fence: this machine has no %s port (not a Locus QEMU VM)", fence.QEMUPortName)
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 20*time.Second)
			defer cancel()
			reply, err := fence.QEMU(ctx, device, o.Action, o.Plug)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "node %d: %s\n", o.Plug, reply)
			if o.Action == fence.ActionStatus && reply == "off" {
				return exitCodeError{code: fence.ExitOff}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Action, "action", "", "off, on, reboot or status")
	cmd.Flags().IntVar(&o.Plug, "plug", 0, "the node number")
	cmd.Flags().StringVar(&device, "device", "", "the virtual BMC port (default: found by name)")
	return cmd
}
