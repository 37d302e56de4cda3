package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
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
	"github.com/locus-ssi/locus/internal/privsock"

	"github.com/spf13/cobra"

	"github.com/locus-ssi/locus/netboot"
)

func newNetbootCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "netboot",
		Short: "Serve DHCP, TFTP and HTTP so new nodes PXE-boot the cluster image",
		Example: `  locus netboot serve --interface eth1
  locus node list`,
	}
	// The registry's machines are nodes: listed by locus node list. The
	// old spelling stays, unlisted.
	nodes := newNodeListCmd(e)
	nodes.Use, nodes.Aliases, nodes.Hidden = "nodes", nil, true
	nodes.Short = "Alias of locus node list"
	nodes.Example = "  locus netboot nodes   # the same as locus node list"
	cmd.AddCommand(newNetbootServeCmd(e), nodes)
	return cmd
}

func newNetbootServeCmd(e *env) *cobra.Command {
	var cfg netboot.Config
	var specPath string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the netboot service on the interconnect interface",
		Long: `Serve answers DHCP on the interface (or, with --proxy, only the boot part of
it, for networks whose DHCP server is not ours), serves iPXE over TFTP, and
the kernel, initramfs and each node's iPXE script over HTTP. Nodes in the
spec's node table boot; others as the spec's netboot.admission says.`,
		Example: `  locus netboot serve --interface eth1
  locus netboot serve --interface eth1 --proxy --root out/netboot`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Iface == "" {
				return fmt.Errorf("--interface is required (the interconnect interface)")
			}
			if specPath == "" {
				specPath = filepath.Join(filepath.Dir(cfg.Root), layout.SpecFile)
			}
			spec, _, err := clusterspec.Load(specPath)
			if err != nil {
				return err
			}
			cfg.Spec = spec
			cfg.Log = slog.New(slog.NewTextHandler(e.stderr, nil))
			svc, err := netboot.NewService(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return svc.Serve(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Iface, "interface", "", "interconnect interface to serve on")
	f.StringVar(&specPath, "spec", "", "cluster spec (default: the one next to --root, as image build wrote it)")
	f.StringVar(&cfg.Root, "root", "out/netboot", "boot tree (locus image build writes it)")
	f.StringVar(&cfg.StateDir, "state-dir", "/var/lib/locus/netboot", "where leases and the registry are kept")
	f.BoolVar(&cfg.Proxy, "proxy", false, "proxyDHCP: boot information only, no addresses")
	f.IntVar(&cfg.HTTPPort, "http-port", 8080, "HTTP port")
	f.IntVar(&cfg.TFTPPort, "tftp-port", 69, "TFTP port")
	f.IntVar(&cfg.DHCPPort, "dhcp-port", 67, "DHCP port")
	f.StringVar(&cfg.AdminAddr, "admin", netboot.AdminSocket, "operator API: a unix socket (made in a root-only directory), or a loopback host:port")
	f.StringVar(&cfg.CAFile, "ca", "", "cluster CA certificate that node scripts pin (locus.ca=); the init node passes its own")
	f.StringVar(&cfg.Join, "join", "", "cluster endpoint written into node scripts as locus.join=")
	f.StringVar(&cfg.CaptureDir, "capture", "", "write every DHCP request received to this directory (raw packets)")
	return cmd
}

func adminGet(ctx context.Context, admin, path string, v any) error {
	client, base := privsock.HTTPClient(admin, 0)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("netboot service not reachable on %s (is `locus netboot serve` running?)", admin)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("netboot service: %s", resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func newNodeListCmd(e *env) *cobra.Command {
	var admin, output string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List every machine that contacted the netboot service, with its boot stage and admission",
		Long: `List shows the init node's netboot registry: every machine that asked for an
address or a boot script, by MAC, with the node number it has (or will
have), how far its last boot got (dhcp, tftp, ipxe, kernel, initramfs) and
whether it is admitted (known, accepted) or waiting for locus node accept.
On the netboot server it asks the service's operator socket; elsewhere, the
cluster's endpoint, whose init node serves the registry.`,
		Example: "  locus node list\n  locus node list --output json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			var cs []netboot.Contact
			err := adminGet(ctx, admin, "/v1/nodes", &cs)
			if err != nil && !cmd.Flags().Changed("admin") {
				// Not on the netboot server: ask the cluster, whose init
				// node's daemon serves the registry.
				ep, eerr := resolveEndpoint(e.endpoint, e.context)
				if eerr != nil {
					return fmt.Errorf("%w; %w", err, eerr)
				}
				defer ep.client.Close()
				err = ep.client.Get(ctx, "/v1/netboot/nodes", &cs)
			}
			if err != nil {
				return err
			}
			if output == "json" {
				return jsonOut(e, cs)
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "MAC\tNODE\tHOSTNAME\tADDR\tCLIENT\tSTAGE\tSTATUS\tLAST SEEN")
			for _, c := range cs {
				node := "-"
				if c.Node > 0 {
					node = strconv.Itoa(c.Node)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s ago\n", c.MAC, node, dash(c.Hostname), dash(c.Addr), dash(c.Client), c.Stage, c.Status, time.Since(c.Last).Round(time.Second))
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&admin, "admin", netboot.AdminSocket, "the netboot service's operator API (socket or loopback host:port)")
	addOutputFlag(cmd, &output)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newNodeCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "The machines: which contacted the netboot service, and admitting new ones",
		Example: `  locus node list
  locus node accept 52:54:00:12:34:56 --number 5`,
	}
	var admin string
	var number int
	accept := &cobra.Command{
		Use:   "accept MAC",
		Short: "Admit a waiting machine as a node (admission: discover)",
		Example: `  locus node accept 52:54:00:12:34:56
  locus node accept 52:54:00:12:34:56 --number 5`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mac, err := net.ParseMAC(args[0])
			if err != nil || len(mac) != 6 {
				return fmt.Errorf("%q is not an Ethernet MAC like 52:54:00:12:34:56", args[0])
			}
			q := url.Values{"mac": {mac.String()}}
			if number > 0 {
				q.Set("number", strconv.Itoa(number))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			client, base := privsock.HTTPClient(admin, 0)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/accept?"+q.Encode(), nil)
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("netboot service not reachable on %s (is `locus netboot serve` running?)", admin)
			}
			defer resp.Body.Close()
			var out struct {
				Node int `json:"node"`
			}
			if resp.StatusCode != http.StatusOK {
				var b [512]byte
				n, _ := resp.Body.Read(b[:])
				return fmt.Errorf("accept %s: %s", mac, strings.TrimSpace(string(b[:n])))
			}
			json.NewDecoder(resp.Body).Decode(&out)
			fmt.Fprintf(e.stdout, "%s accepted as node %d; it boots on its next try\n", mac, out.Node)
			return nil
		},
	}
	accept.Flags().StringVar(&admin, "admin", netboot.AdminSocket, "the netboot service's operator API (socket or loopback host:port)")
	accept.Flags().IntVar(&number, "number", 0, "node number (default: the next free one)")
	cmd.AddCommand(newNodeListCmd(e), accept)
	return cmd
}
