//go:build !nodeonly

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/images/layout"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/locus-ssi/locus/qemu"
)

// qemuFlags are shared by the qemu verbs: which image, which cluster.
type qemuFlags struct {
	imageDir string
	stateDir string
}

func (q *qemuFlags) add(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&q.imageDir, "image-dir", "out", "directory locus image build wrote")
	cmd.PersistentFlags().StringVar(&q.stateDir, "state-dir", "", "cluster state directory (default: $XDG_STATE_HOME/locus/qemu/<cluster>)")
}

// dir resolves the cluster's state directory.
func (q *qemuFlags) dir() (string, error) {
	if q.stateDir != "" {
		return filepath.Abs(q.stateDir)
	}
	name := clusterspec.DefaultClusterName
	if m, err := layout.ReadManifest(q.imageDir); err == nil && m.Cluster != "" {
		name = m.Cluster
	}
	base := os.Getenv("XDG_STATE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no home directory: give --state-dir")
		}
		base = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(base, "locus", "qemu", name), nil
}

func newQemuCmd(e *env) *cobra.Command {
	q := &qemuFlags{}
	cmd := &cobra.Command{
		Use:   "qemu",
		Short: "Run a Locus cluster in QEMU VMs on this machine",
		Long: `The qemu verbs run a cluster of VMs on one rootless L2 segment (UDP
multicast on loopback, unique per cluster), with a serial log per node,
QMP power control and an exec channel to each node's init.`,
		Example: `  locus qemu up -n 3 --direct
  locus qemu status
  locus qemu exec 2 -- uname -n
  locus qemu logs 1
  locus qemu console 1      # Ctrl-] to detach
  locus qemu down`,
	}
	q.add(cmd)
	cmd.AddCommand(newQemuUpCmd(e, q), newQemuDownCmd(e, q), newQemuStatusCmd(e, q), newQemuConsoleCmd(e, q),
		newQemuLogsCmd(e, q), newQemuEventsCmd(e, q), newQemuExecCmd(e, q), newQemuPowerCmd(e, q, "kill"), newQemuPowerCmd(e, q, "start"), newQemuLinkCmd(e, q),
		newQemuSuperviseCmd(e, q))
	return cmd
}

func newQemuUpCmd(e *env, q *qemuFlags) *cobra.Command {
	var n, memory, apiPort int
	var direct bool
	var timeout time.Duration
	var accel, output, dataDisk string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Boot the cluster and wait until every node is Up",
		Long: `Up boots nodes 1..N and returns once every node printed its run-level line,
with a live table of each node's stage and, at the end, each node's time
to Up.

By default node 1 boots the install disk (out/disk.img) under UEFI
firmware (OVMF), as the first machine of a real cluster would, and serves
netboot; nodes 2..N have no disk and PXE-boot from node 1 over the
cluster's segment. Node 1 also gets a user-mode NIC that forwards
127.0.0.1:--api-port on the host to its node daemon.

With --direct every node boots the built kernel and initramfs directly,
with static addresses from the spec (no firmware, no PXE; fastest).

--shared-disk attaches one raw disk image to every node, as a SAN LUN
every machine sees (for a GFS2 filesystem of your own, made with
mkfs.gfs2 -p lock_dlm -t <cluster>:<name>; the nodes' DLM serves it).`,
		Example: `  locus qemu up -n 4
  locus qemu up -n 3 --shared-disk data.img
  locus qemu up -n 3 --direct
  locus qemu up -n 1 --direct --timeout 3m --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if n < 1 {
				return fmt.Errorf("-n %d: want at least one node", n)
			}
			dir, err := q.dir()
			if err != nil {
				return err
			}
			// Probed once here (auto: a KVM probe takes about 2 s on a
			// host whose /dev/kvm opens), then passed on as decided.
			chosen := qemu.Accel(accel)
			t := qemu.Topology{ImageDir: q.imageDir, StateDir: dir, Nodes: n, Accel: chosen, MemoryMB: memory, APIPort: apiPort, DataDisk: dataDisk}
			var cfg qemu.ClusterConfig
			if direct {
				if dataDisk != "" {
					return fmt.Errorf("--shared-disk: not with --direct")
				}
				cfg, err = qemu.DirectTopology(t)
			} else {
				cfg, err = qemu.InstalledTopology(t)
			}
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			live := output == "table" && isTerminal(e.stdout)
			var progress io.Writer = e.stderr
			if live {
				progress = e.stdout
			}
			fmt.Fprintf(progress, "booting %d node(s) of cluster %q (%s, state in %s)\n", n, cfg.Name, chosen, dir)
			start := time.Now()
			// The context is saved as soon as node 1 is Up, while the
			// others boot: locus dashboard (or cluster status) can
			// watch them come Up.
			type savedContext struct {
				name string
				err  error
			}
			var early chan savedContext // made when node 1 came Up
			upDone := make(chan struct{})
			onUp := func(node int) {
				if node == 1 && !direct {
					early = make(chan savedContext, 1)
					go func() {
						// Node 1 writes its first admin's credential once
						// its membership has a master, which may be seconds
						// after it is Up: asked again every second while
						// the others boot, until it is there or they are.
						for {
							name, err := saveContext(ctx, cfg)
							if err == nil {
								early <- savedContext{name, nil}
								return
							}
							select {
							case <-upDone:
							case <-ctx.Done():
							case <-time.After(time.Second):
								continue
							}
							early <- savedContext{name, err}
							return
						}
					}()
				}
			}
			st, err := qemu.Up(ctx, qemu.UpOptions{Config: cfg, Self: self, Timeout: timeout, Out: progress, Live: live, OnUp: onUp})
			close(upDone)
			saved := ""
			if !direct {
				// Also when not every node came Up: the credential is
				// what the operator looks into it with.
				var sc savedContext
				if early != nil {
					sc = <-early
				}
				if early == nil || sc.err != nil {
					sc.name, sc.err = saveContext(ctx, cfg)
				}
				name, serr := sc.name, sc.err
				switch {
				case serr != nil && err == nil:
					return serr
				case serr != nil:
					fmt.Fprintf(e.stderr, "no credential saved: %v\n", serr)
				default:
					saved = name
				}
			}
			if err != nil {
				return err
			}
			if output == "json" {
				return json.NewEncoder(e.stdout).Encode(map[string]any{"state_dir": dir, "total_s": time.Since(start).Seconds(), "nodes": st})
			}
			if !live {
				fmt.Fprint(e.stdout, qemu.FormatTable(st, time.Now()))
			}
			fmt.Fprintf(e.stdout, "all %d node(s) Up in %.1fs\n", n, time.Since(start).Seconds())
			if saved != "" {
				fmt.Fprintf(e.stdout, "context %q saved (node 1's admin credential, endpoint 127.0.0.1:%d): host-side verbs (locus cluster status, locus node list) use it\n", saved, apiPort)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVarP(&n, "nodes", "n", 4, "number of nodes")
	f.BoolVar(&direct, "direct", false, "boot kernel + initramfs directly (no firmware, no PXE)")
	f.DurationVar(&timeout, "timeout", 10*time.Minute, "give up if not every node is Up by then")
	f.StringVar(&accel, "accel", "auto", "accelerator: auto (kvm when /dev/kvm works, else tcg), kvm or tcg")
	f.IntVar(&memory, "memory", 768, "MiB of memory per node")
	f.IntVar(&apiPort, "api-port", 17470, "host port forwarded to node 1's daemon (disk boot)")
	f.StringVar(&dataDisk, "shared-disk", "", "raw disk image attached to every node (share-rw)")
	addOutputFlag(cmd, &output)
	return cmd
}

// saveContext fetches the first admin's credential from the cluster's
// init node (through its exec channel) and saves it as the context named
// after the cluster, in use from now on.
func saveContext(ctx context.Context, cfg qemu.ClusterConfig) (string, error) {
	cur, err := qemu.FetchCredential(ctx, cfg)
	if err != nil {
		return "", err
	}
	c, p, err := loadConfig()
	if err != nil {
		return "", err
	}
	c.Set(cfg.Name, cur)
	if err := c.Save(p); err != nil {
		return "", err
	}
	return cfg.Name, nil
}

func newQemuDownCmd(e *env, q *qemuFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "down",
		Short:   "Stop every VM of the cluster",
		Example: "  locus qemu down",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := q.dir()
			if err != nil {
				return err
			}
			if err := qemu.Down(cmd.Context(), dir); err != nil {
				return err
			}
			if c, p, err := loadConfig(); err == nil && c.Forget(dir) {
				if err := c.Save(p); err != nil {
					return err
				}
			}
			fmt.Fprintf(e.stdout, "cluster in %s stopped\n", dir)
			return nil
		},
	}
}

func newQemuStatusCmd(e *env, q *qemuFlags) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "status",
		Short:   "Show each VM's boot stage and time to Up",
		Example: "  locus qemu status\n  locus qemu status --output json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			dir, err := q.dir()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			st, err := qemu.RemoteStatus(ctx, dir)
			if err != nil {
				return err
			}
			if output == "json" {
				return json.NewEncoder(e.stdout).Encode(st)
			}
			fmt.Fprint(e.stdout, qemu.FormatTable(st, time.Now()))
			return nil
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// node parses a node argument and resolves the cluster directory.
func (q *qemuFlags) node(arg string) (int, string, error) {
	n, err := nodeArg(arg)
	if err != nil {
		return 0, "", err
	}
	dir, err := q.dir()
	return n, dir, err
}

func nodeArg(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("node %q: want a node number (1, 2, ...)", s)
	}
	return n, nil
}

func newQemuConsoleCmd(e *env, q *qemuFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "console NODE",
		Short:   "Attach to a node's serial console (Ctrl-] detaches)",
		Example: "  locus qemu console 1",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, dir, err := q.node(args[0])
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			in := e.stdin
			if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				old, err := term.MakeRaw(int(f.Fd()))
				if err == nil {
					defer term.Restore(int(f.Fd()), old)
				}
				fmt.Fprintf(e.stderr, "attached to node %d; Ctrl-] detaches\r\n", n)
				in = &detachReader{r: f, cancel: cancel}
			}
			return qemu.RemoteConsole(ctx, dir, n, in, e.stdout)
		},
	}
}

// detachReader passes input through until Ctrl-] (0x1d).
type detachReader struct {
	r      io.Reader
	cancel func()
}

func (d *detachReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	for i := 0; i < n; i++ {
		if p[i] == 0x1d {
			d.cancel()
			return i, io.EOF
		}
	}
	return n, err
}

func newQemuLogsCmd(e *env, q *qemuFlags) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:     "logs NODE",
		Short:   "Print a node's serial log (timestamped)",
		Example: "  locus qemu logs 2\n  locus qemu logs 2 -f",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, dir, err := q.node(args[0])
			if err != nil {
				return err
			}
			f, err := os.Open(qemu.SerialLog(dir, n))
			if err != nil {
				return fmt.Errorf("no serial log for node %d in %s", n, dir)
			}
			defer f.Close()
			return repeat(cmd.Context(), follow, func() error {
				_, err := io.Copy(e.stdout, f)
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing as the log grows")
	return cmd
}

func newQemuEventsCmd(e *env, q *qemuFlags) *cobra.Command {
	var follow bool
	var output string
	var f eventFilter
	cmd := &cobra.Command{
		Use:   "events NODE",
		Short: "Print the events a node's init published on its event channel (every boot)",
		Long: `Events prints what the harness received on a VM's event channel: the
node's event feed (see locus cluster events), straight from its init,
from the first phase of every boot on, even when the node's network or
daemon never came up.`,
		Example: "  locus qemu events 2\n  locus qemu events 2 -f --kind role.taken\n  locus qemu events 1 --output json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if err := f.check(); err != nil {
				return err
			}
			n, dir, err := q.node(args[0])
			if err != nil {
				return err
			}
			print := f.printer(e, output)
			seen := 0
			return repeat(cmd.Context(), follow, func() error {
				evs, err := qemu.ReadEventLog(qemu.EventLog(dir, n))
				if err != nil && seen == 0 && !follow {
					return fmt.Errorf("no events for node %d in %s", n, dir)
				}
				for _, ev := range evs[min(seen, len(evs)):] {
					print(ev)
				}
				seen = max(seen, len(evs))
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing events as they come")
	f.add(cmd)
	addOutputFlag(cmd, &output)
	return cmd
}

// repeat runs step once and, with follow, again every 200 ms until
// interrupted (Ctrl-C) or step fails: what -f does for logs and events.
func repeat(ctx context.Context, follow bool, step func() error) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	for {
		if err := step(); err != nil || !follow {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func newQemuExecCmd(e *env, q *qemuFlags) *cobra.Command {
	var timeout time.Duration
	var initramfs bool
	cmd := &cobra.Command{
		Use:   "exec NODE -- COMMAND [ARG...]",
		Short: "Run a command on a node through its exec channel",
		Long: `Exec runs a command on a node under its init, through the VM's virtio-serial
exec channel (QEMU clusters only; for tests and rescue), and prints its
output. locus exits with the command's exit status.`,
		Example: "  locus qemu exec 2 -- uname -n\n  locus qemu exec 1 -- cat /proc/cmdline\n  locus qemu exec --initramfs 3 -- cat /proc/1/stack",
		Args:    cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, dir, err := q.node(args[0])
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			res, err := qemu.ExecIn(ctx, qemu.ExecPath(dir, n), args[1:], nil, initramfs)
			if err != nil {
				return err
			}
			e.stdout.Write(res.Stdout)
			e.stderr.Write(res.Stderr)
			if res.Exit != 0 {
				return exitCodeError{res.Exit}
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long")
	cmd.Flags().BoolVar(&initramfs, "initramfs", false, "run in init's own root, not the shared root (rescue: the shared root does not answer)")
	return cmd
}

func newQemuPowerCmd(e *env, q *qemuFlags, op string) *cobra.Command {
	short := map[string]string{"kill": "Power a node off hard through QMP (a fault)", "start": "Power a stopped node on again"}[op]
	return &cobra.Command{
		Use:     op + " NODE",
		Short:   short,
		Example: fmt.Sprintf("  locus qemu %s 2", op),
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, dir, err := q.node(args[0])
			if err != nil {
				return err
			}
			if err := qemu.RemoteOp(cmd.Context(), dir, op, n); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "node %d: %s\n", n, strings.TrimSuffix(op, "e")+"ed")
			return nil
		},
	}
}

func newQemuLinkCmd(e *env, q *qemuFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "link NODE up|down",
		Short: "Cut a node off the interconnect, or join it again (a network partition)",
		Long: `link NODE down takes the carrier off the node's interconnect NIC (QMP
set_link): the node runs on but neither sends nor receives on the segment,
as when its switch port dies. The others see it fail and fence it; the node
itself loses quorum. link NODE up joins it again. The management NIC, and
with it the host's view of the node, is not touched; a power cycle (the
fence's reboot) brings the link back up.`,
		Example: "  locus qemu link 3 down\n  locus qemu link 3 up",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, dir, err := q.node(args[0])
			if err != nil {
				return err
			}
			if args[1] != "up" && args[1] != "down" {
				return fmt.Errorf("qemu link: %q: want up or down", args[1])
			}
			if err := qemu.RemoteOp(cmd.Context(), dir, "link-"+args[1], n); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "node %d: link %s\n", n, args[1])
			return nil
		},
	}
}

func newQemuSuperviseCmd(e *env, q *qemuFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "supervise",
		Short: "Run a cluster's VMs (started by `locus qemu up`)",
		Long: `Supervise owns a cluster's VMs for as long as it runs: locus qemu up starts
it detached, and every other qemu verb talks to it on the control socket
in the cluster's state directory. It is internal; run it by hand only to
debug the harness.`,
		Example: "  locus qemu supervise --state-dir ~/.local/state/locus/qemu/locus",
		Hidden:  true,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := q.dir()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
			log := slog.New(slog.NewTextHandler(e.stderr, nil))
			return qemu.Supervise(ctx, dir, log)
		},
	}
}
