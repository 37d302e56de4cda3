package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/locus-ssi/locus/internal/locusconfig"
	"github.com/locus-ssi/locus/services/ics"
	"github.com/locus-ssi/locus/services/locusd"
)

func newConfigCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "The client configuration: contexts (a cluster's endpoints and your credential)",
		Long: `The client configuration holds contexts, as talosctl's talosconfig does:
each names a cluster, its endpoints, the cluster CA that its nodes'
certificates must chain to, and your operator certificate and key.
` + "`locus qemu up`" + ` saves one with the first admin's credential. It lives at
$LOCUSCONFIG, else $XDG_CONFIG_HOME/locus/config, else
~/.config/locus/config (mode 0600).`,
		Example: "  locus config contexts\n  locus config use demo\n  locus config info\n  locus config endpoint 10.77.0.1 10.77.0.2",
	}
	cmd.AddCommand(newConfigContextsCmd(e), newConfigUseCmd(e), newConfigInfoCmd(e), newConfigEndpointCmd(e), newConfigRemoveCmd(e))
	return cmd
}

// configVerb is a `locus config` verb: it gets the client configuration
// and its path (and, with withOutput, a checked --output).
type configVerb struct {
	use, short, example string
	args                cobra.PositionalArgs
	withOutput          bool
	run                 func(ctx context.Context, c *locusconfig.Config, path string, args []string, output string) error
}

func (v configVerb) command() *cobra.Command {
	var output string
	cmd := &cobra.Command{Use: v.use, Short: v.short, Example: v.example, Args: v.args,
		RunE: func(cmd *cobra.Command, args []string) error {
			if v.withOutput {
				if err := checkOutput(output); err != nil {
					return err
				}
			}
			c, p, err := loadConfig()
			if err != nil {
				return err
			}
			return v.run(cmd.Context(), c, p, args, output)
		}}
	if v.withOutput {
		addOutputFlag(cmd, &output)
	}
	return cmd
}

func newConfigContextsCmd(e *env) *cobra.Command {
	return configVerb{use: "contexts", short: "List the contexts",
		example: "  locus config contexts\n  locus config contexts --output json", args: cobra.NoArgs, withOutput: true,
		run: func(_ context.Context, c *locusconfig.Config, p string, _ []string, output string) error {
			type row struct {
				Name      string   `json:"name"`
				Current   bool     `json:"current"`
				Cluster   string   `json:"cluster"`
				Endpoints []string `json:"endpoints"`
				StateDir  string   `json:"state_dir,omitempty"`
			}
			var rows []row
			for _, n := range c.Names() {
				x := c.Contexts[n]
				rows = append(rows, row{Name: n, Current: n == c.Context, Cluster: x.Cluster, Endpoints: x.Endpoints, StateDir: x.StateDir})
			}
			if output == "json" {
				return jsonOut(e, map[string]any{"file": p, "contexts": rows})
			}
			if len(rows) == 0 {
				fmt.Fprintf(e.stdout, "no contexts in %s (locus qemu up makes one)\n", p)
				return nil
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "CURRENT\tNAME\tCLUSTER\tENDPOINTS")
			for _, r := range rows {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", map[bool]string{true: "*"}[r.Current], r.Name, r.Cluster, strings.Join(r.Endpoints, ","))
			}
			return w.Flush()
		}}.command()
}

func newConfigUseCmd(e *env) *cobra.Command {
	return configVerb{use: "use NAME", short: "Use context NAME from now on",
		example: "  locus config use demo", args: cobra.ExactArgs(1),
		run: func(_ context.Context, c *locusconfig.Config, p string, args []string, _ string) error {
			if _, _, err := c.Current(args[0]); err != nil {
				return err
			}
			c.Context = args[0]
			if err := c.Save(p); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "using context %q\n", args[0])
			return nil
		}}.command()
}

func newConfigInfoCmd(e *env) *cobra.Command {
	return configVerb{use: "info", short: "Show the context in use: its credential, and who the cluster takes you for",
		example: "  locus config info\n  locus config info --context alice@demo --output json", args: cobra.NoArgs, withOutput: true,
		run: func(ctx context.Context, c *locusconfig.Config, p string, _ []string, output string) error {
			cur, name, err := c.Current(e.context)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			cert, err := ics.ParseCertPEM([]byte(cur.Crt))
			if err != nil {
				return fmt.Errorf("%s: context %q: %w", p, name, err)
			}
			info := map[string]any{"context": name, "cluster": cur.Cluster, "endpoints": cur.Endpoints,
				"name": cert.Subject.CommonName, "roles": cert.Subject.OrganizationalUnit, "not_after": cert.NotAfter}
			ep, err := resolveEndpoint(e.endpoint, name)
			if err == nil {
				defer ep.client.Close()
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				var who locusd.Caller
				if err = ep.client.Get(wctx, "/v1/whoami", &who); err == nil {
					info["seen_as"] = who.String()
				}
				cancel()
			}
			if err != nil {
				info["error"] = err.Error()
			}
			if output == "json" {
				return jsonOut(e, info)
			}
			fmt.Fprintf(e.stdout, "context:   %s (%s)\ncluster:   %s\nendpoints: %s\nidentity:  %s, roles %s, valid until %s\n",
				name, p, cur.Cluster, strings.Join(cur.Endpoints, ","), cert.Subject.CommonName, strings.Join(cert.Subject.OrganizationalUnit, ","), cert.NotAfter.Format(time.RFC3339))
			if err != nil {
				fmt.Fprintf(e.stdout, "cluster:   not reached: %v\n", err)
			} else {
				fmt.Fprintf(e.stdout, "seen as:   %s\n", info["seen_as"])
			}
			return nil
		}}.command()
}

func newAdminCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "admin",
		Short:   "Credentials for operators and tools",
		Example: "  locus admin issue alice --roles locus:operator -o alice.config",
	}
	cmd.AddCommand(newAdminIssueCmd(e))
	return cmd
}

func newAdminIssueCmd(e *env) *cobra.Command {
	var roles []string
	var ttl time.Duration
	var out string
	var merge bool
	cmd := &cobra.Command{
		Use:   "issue NAME",
		Short: "Issue an operator credential (admins only) as a client configuration",
		Long: `Issue asks the init node's daemon for a certificate for operator NAME with
the given roles, signed by the cluster's operators' CA, for a key made
here (the key never leaves this machine). Roles: locus:admin (everything),
locus:operator (also run level and shutdown), locus:reader (look only).
The result is a client configuration with one context, NAME@CLUSTER,
written to -o FILE (mode 0600) or merged into yours with --merge.`,
		Example: "  locus admin issue alice --roles locus:operator -o alice.config\n  locus admin issue ci --roles locus:reader --ttl 24h --merge",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if (out == "") == !merge {
				return errors.New("say where the credential goes: -o FILE, or --merge into your client configuration")
			}
			if err := ics.ValidOperatorName(name); err != nil {
				return err
			}
			for _, r := range roles {
				if !ics.ValidRole(r) {
					return fmt.Errorf("role %q: want one of %s", r, strings.Join(ics.Roles, ", "))
				}
			}
			ep, err := resolveEndpoint(e.endpoint, e.context)
			if err != nil {
				return err
			}
			defer ep.client.Close()
			key, csr, err := ics.NewKeyFor(name)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			var rep locusd.IssueReply
			if err := ep.client.Post(ctx, "/v1/admin/issue", locusd.IssueRequest{Name: name, Roles: roles, TTL: ttl.String(), CSR: csr}, &rep); err != nil {
				return fmt.Errorf("issue through %s (%s): %w", ep.API, ep.From, err)
			}
			var endpoints []string
			if c, _, err := loadConfig(); err == nil {
				if cur, _, err := c.Current(e.context); err == nil {
					endpoints = cur.Endpoints
				}
			}
			if len(endpoints) == 0 && ep.client != nil && ep.Context != "" {
				endpoints = []string{ep.API}
			}
			ctxName := name + "@" + rep.Cluster
			nc := &locusconfig.Context{Cluster: rep.Cluster, Endpoints: endpoints, CA: string(rep.CA), Crt: string(rep.Cert), Key: string(key)}
			if merge {
				c, p, err := loadConfig()
				if err != nil {
					return err
				}
				keep := c.Context
				c.Set(ctxName, nc)
				if keep != "" {
					c.Context = keep
				}
				if err := c.Save(p); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "context %q added to %s (valid until %s); use it with --context %s or locus config use %s\n", ctxName, p, rep.NotAfter.Format(time.RFC3339), ctxName, ctxName)
				return nil
			}
			var c locusconfig.Config
			c.Set(ctxName, nc)
			if _, err := os.Stat(out); err == nil {
				return fmt.Errorf("%s exists: not overwritten", out)
			}
			if err := c.Save(out); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "credential of %s (%s, valid until %s) written to %s; use it with LOCUSCONFIG=%s\n", name, strings.Join(roles, ","), rep.NotAfter.Format(time.RFC3339), out, out)
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&roles, "roles", []string{ics.RoleReader}, "roles: locus:admin, locus:operator, locus:reader")
	cmd.Flags().DurationVar(&ttl, "ttl", 365*24*time.Hour, "how long the certificate lasts")
	cmd.Flags().StringVarP(&out, "output-file", "o", "", "write the client configuration here")
	cmd.Flags().BoolVar(&merge, "merge", false, "add the context to your client configuration instead")
	return cmd
}

func newConfigEndpointCmd(e *env) *cobra.Command {
	return configVerb{use: "endpoint HOST[:PORT]...", short: "Set the endpoints of the context in use (or --context): node daemons, the first one asked",
		example: "  locus config endpoint 10.77.0.1 10.77.0.2\n  locus config endpoint 127.0.0.1:17470 --context demo", args: cobra.MinimumNArgs(1),
		run: func(_ context.Context, c *locusconfig.Config, p string, args []string, _ string) error {
			cur, name, err := c.Current(e.context)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			var eps []string
			for _, a := range args {
				if _, _, err := net.SplitHostPort(a); err != nil {
					a = net.JoinHostPort(a, strconv.Itoa(locusd.DefaultPort))
				}
				eps = append(eps, a)
			}
			cur.Endpoints = eps
			if err := c.Save(p); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "context %q: endpoints %s\n", name, strings.Join(eps, ", "))
			return nil
		}}.command()
}

func newConfigRemoveCmd(e *env) *cobra.Command {
	return configVerb{use: "remove NAME", short: "Remove context NAME (its credential with it)",
		example: "  locus config remove alice@demo", args: cobra.ExactArgs(1),
		run: func(_ context.Context, c *locusconfig.Config, p string, args []string, _ string) error {
			if _, _, err := c.Current(args[0]); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			delete(c.Contexts, args[0])
			if c.Context == args[0] {
				c.Context = ""
			}
			if err := c.Save(p); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "context %q removed from %s\n", args[0], p)
			return nil
		}}.command()
}
