package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/netboot"

	"github.com/spf13/cobra"

	"github.com/locus-ssi/locus/services/cfs"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/locusd"
	"github.com/locus-ssi/locus/services/logring"
	"github.com/locus-ssi/locus/services/proc"
)

// nodeSpecPath is the spec the image carries when running on a node, else
// ./locus.yaml when present.
func nodeSpecPath() string {
	if _, err := os.Stat("/" + layout.SpecPath); err == nil {
		return "/" + layout.SpecPath
	}
	return defaultSpec()
}

func newDaemonCmd(e *env) *cobra.Command {
	var cfg locusd.Config
	var mc clms.Config
	var join, specPath, mac, caDir, admitter, identityFile, caPin, logFile string
	cmd := &cobra.Command{
		Use:     "daemon",
		Short:   "Run the node daemon (init starts it on every node)",
		Example: "  locus daemon --listen :7470 --node-file /run/locus/node.json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// Kept in a ring too, for locus logs from any node.
			cfg.LogRing = logring.New(0)
			cfg.Log = slog.New(logring.NewHandler(slog.NewTextHandler(e.stderr, nil), cfg.LogRing)).With("svc", "locusd")
			if logFile != "" {
				// On the state disk: the log outlives a reboot.
				if err := os.MkdirAll(filepath.Dir(logFile), 0o700); err != nil {
					return fmt.Errorf("daemon: --log-file: %w", err)
				}
				if err := cfg.LogRing.Persist(logFile, 0); err != nil {
					return fmt.Errorf("daemon: --log-file: %w", err)
				}
				defer cfg.LogRing.Close()
			}
			if mc.Node > 0 {
				cfg.LogRing.SetNode(mc.Node)
				mc.Log, mc.Console = cfg.Log.With("svc", "clms"), e.stdout
				if join != "" {
					mc.Join = strings.Split(join, ",")
				}
				spec, _, err := clusterspec.Load(specPath)
				if err != nil {
					return err
				}
				o := locusd.NodeOptions{MAC: mac, Secret: os.Getenv("LOCUS_SECRET"), CADir: caDir, Admitter: admitter, IdentityFile: identityFile, CAPin: caPin}
				if err := locusd.ConfigureNode(&cfg, &mc, spec, o, cfg.Log); err != nil {
					return err
				}
			}
			return locusd.Run(ctx, cfg, nil)
		},
	}
	cmd.Flags().StringVar(&cfg.Listen, "listen", ":"+strconv.Itoa(locusd.DefaultPort), "address to serve the node API on")
	cmd.Flags().StringVar(&cfg.NodeFile, "node-file", "/run/locus/node.json", "init's record of this node")
	f := cmd.Flags()
	f.IntVar(&mc.Node, "node", 0, "this node's number: runs the membership service (0: none)")
	f.StringVar(&mc.Addr, "cluster-addr", "127.0.0.1", "interconnect address for membership (Raft and gossip)")
	f.IntVar(&mc.RaftPort, "raft-port", clms.DefaultRaftPort, "membership Raft port")
	f.IntVar(&mc.GossipPort, "gossip-port", clms.DefaultGossipPort, "membership gossip port")
	f.StringVar(&join, "join", "", "comma-separated gossip addresses of members to join through")
	f.BoolVar(&mc.Bootstrap, "bootstrap", false, "found the cluster if there is no membership state yet (node 1)")
	f.StringVar(&mc.DataDir, "data-dir", "", "keep the membership log here (empty: in memory)")
	f.StringVar(&specPath, "spec", nodeSpecPath(), "cluster spec (fencing, node addresses)")
	f.StringVar(&mac, "mac", "", "this node's interconnect MAC (admission)")
	f.StringVar(&identityFile, "identity", "", "this node's credential, given to it (certificate, key, CA, gossip key; see docs/trust.md) rather than redeemed at admission")
	f.BoolVar(&cfg.InsecureClear, "insecure-clear", false, "TESTS ONLY: run membership without a credential (Raft in clear, gossip unsealed)")
	f.StringVar(&caDir, "ca-dir", "", "keep the cluster CA here and admit nodes (the init node)")
	f.StringVar(&logFile, "log-file", "", "also keep the log here, one JSON object a line (the state disk); the previous boot's is FILE.1")
	f.StringVar(&caPin, "ca-pin", "", "the cluster CA (sha256:<hex> of its certificate) the admitter's chain must end at before the secret is sent")
	f.StringVar(&admitter, "admitter", "", "the init node's daemon, where the bootstrap secret ($LOCUS_SECRET) buys a certificate (default: node 1 of the spec)")
	f.BoolVar(&mc.GateUp, "gate-up", false, "stay ComingUp until init has reached the cluster's run level (init passes it)")
	f.StringVar(&mc.Profile, "profile", clms.ProfileAuto, "failure-detection timing: auto, steady, lan, emulated or default")
	f.StringVar(&cfg.CFSExport, "cfs-export", "", "serve this directory to the cluster as its shared root (CFS, 9P2000.L)")
	f.StringVar(&cfg.CFSListen, "cfs-listen", ":"+strconv.Itoa(cfs.DefaultPort), "address to serve CFS on")
	f.StringVar(&cfg.EventSocket, "events", "", "PID 1's event feed socket, to publish on and serve (empty: the daemon keeps its own feed)")
	f.StringVar(&cfg.UserSocket, "user-socket", "", "serve the API to every user of this node at this unix socket, each as who the kernel says it is (init passes "+locusd.UserSocketPath+")")
	f.StringVar(&cfg.ProcSocket, "proc-socket", "", "take init's FUSE mount of the clusterwide /proc at this unix socket (init passes "+proc.ProcSocket+")")
	f.StringVar(&cfg.ProcMount, "proc-mount", "", "mount the clusterwide /proc on this directory (tests; on a node init mounts it)")
	f.StringVar(&cfg.LoadDir, "load-proc", "", "read the load vector's /proc files (loadavg, meminfo, uptime, cpuinfo) from this directory (tests: daemons sharing one host; default /proc)")
	f.BoolVar(&cfg.DLM, "dlm", false, "run the kernel DLM's control daemon (needs the dlm module; one per kernel)")
	f.DurationVar(&cfg.JobGrace, "job-grace", 0, "time between SIGHUP and SIGKILL for a job whose stand-in went away (default 5s)")
	f.StringVar(&cfg.Socket, "socket", "", "serve the API to root on this node at this unix socket too (init passes "+locusd.SocketPath+")")
	cmd.Flags().StringVar(&cfg.NetbootAdmin, "netboot-admin", netboot.AdminSocket, "netboot admin API (socket or loopback host:port): its registry is served at /v1/netboot/nodes, its secrets redeemed at admission (empty: none)")
	return cmd
}

func newProbeCmd(e *env) *cobra.Command {
	var output, specPath string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "probe [NODE|ADDR...]",
		Short: "Ask nodes' daemons who they are, over TLS on the interconnect",
		Long: `Probe opens a TLS connection to each node daemon (port 7470 unless given)
and prints the node's identity and state with the round-trip time. With a
credential (the context in use) it reads each node's whole info; without
one (on a node, say) only what every daemon answers anybody, its health:
node, state and run level. A bare number is a node number, its address
taken from the cluster spec (on a node, the spec the image carries). It
exits non-zero if any node does not answer.`,
		Example: "  locus probe                 # the saved endpoint (node 1 of `locus qemu up`)\n  locus probe 1 2 3\n  locus probe 10.77.0.2 10.77.0.3\n  locus probe 10.77.0.2:7470 --output json",
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			// With a context, its credential: the nodes' whole info;
			// without (on a node, say), their health.
			var tc *tls.Config
			if cfg, _, err := loadConfig(); err == nil {
				if c, _, err := cfg.Current(e.context); err == nil {
					if tc, err = c.TLS(); err != nil {
						return err
					}
					if len(args) == 0 && e.endpoint == "" && len(c.Endpoints) > 0 {
						args = c.Endpoints[:1]
					}
				}
			}
			if len(args) == 0 && e.endpoint != "" {
				args = []string{e.endpoint}
			}
			if len(args) == 0 {
				return errors.New("no nodes to probe: name them (numbers or addresses), or run `locus qemu up` for a context")
			}
			var spec *clusterspec.Spec
			loadSpec := func() (*clusterspec.Spec, error) {
				var err error
				if spec == nil {
					spec, _, err = clusterspec.Load(specPath)
				}
				return spec, err
			}
			addrs := make([]string, len(args))
			for i, a := range args {
				var err error
				if addrs[i], err = locusd.ProbeTarget(a, loadSpec); err != nil {
					return err
				}
			}
			rows, failed := locusd.Probe(cmd.Context(), addrs, timeout, tc)
			if output == "json" {
				if err := jsonOut(e, rows); err != nil {
					return err
				}
			} else {
				w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "ADDR\tNODE\tHOSTNAME\tSTATE\tRUNLEVEL\tRTT")
				for _, r := range rows {
					if r.Info == nil {
						fmt.Fprintf(w, "%s\t-\t-\tunreachable\t-\t%s\n", r.Addr, strings.TrimPrefix(r.Error, "locusd: "))
						continue
					}
					fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%d\t%.1fms\n", r.Addr, r.Info.Node, dash(r.Info.Hostname), r.Info.State, r.Info.RunLevel, r.RTTms)
				}
				w.Flush()
			}
			return locusd.ProbeError(failed, len(args))
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "per-node timeout")
	cmd.Flags().StringVar(&specPath, "spec", nodeSpecPath(), "cluster spec for node numbers")
	addOutputFlag(cmd, &output)
	return cmd
}
