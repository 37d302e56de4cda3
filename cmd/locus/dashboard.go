package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/locus-ssi/locus/internal/dashboard"
)

func newDashboardCmd(e *env) *cobra.Command {
	var listen, output string
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "A live web view of the whole cluster, served on this machine's loopback",
		Long: `Dashboard serves one page on this machine's loopback (like kubectl proxy),
fed from the cluster with your context's credential: every node's state,
role, run level, uptime and load; PXE nodes' boot stages from the init
node's netboot registry, live during a cluster boot; a timeline of the
membership's transitions and of failovers (master, cluster IP director,
where services run); services, the cluster IP, and the busiest processes
clusterwide. The page updates itself (server-sent events) as the cluster
changes: a node that goes Down turns Down on the page without a reload.

Open the address it prints: the token in it is asked once, then kept as a
cookie; requests without it, or to another Host than loopback, are refused.
The server only reads: nothing on the page controls the cluster. It runs
until interrupted. Started before there is a cluster to talk to (beside
make demo), it waits for one: locus qemu up saves its context as soon as
node 1 is Up.`,
		Example: "  locus dashboard\n  locus dashboard --listen 127.0.0.1:0 --output json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			host, _, err := net.SplitHostPort(listen)
			if err != nil {
				return fmt.Errorf("dashboard: --listen %q: %w", listen, err)
			}
			if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
				return fmt.Errorf("dashboard: --listen %q: loopback only (it holds your credential); from another machine use ssh -L", listen)
			}
			ctx, cancel := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer cancel()
			// Started before the cluster (beside make demo, say), it
			// waits for the context qemu up saves once node 1 is Up.
			ep, err := resolveEndpoint(e.endpoint, e.context)
			for waited := false; err != nil; ep, err = resolveEndpoint(e.endpoint, e.context) {
				if !waited {
					fmt.Fprintf(e.stderr, "dashboard: waiting for a cluster to talk to (%v)\n", err)
					waited = true
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Second):
				}
			}
			defer ep.client.Close()
			log := slog.New(slog.NewTextHandler(e.stderr, nil)).With("svc", "dashboard")
			srv, err := dashboard.New(ep.client, ep.API, log)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("dashboard: %w", err)
			}
			url := fmt.Sprintf("http://%s/?token=%s", ln.Addr(), srv.Token())
			if output == "json" {
				json.NewEncoder(e.stdout).Encode(map[string]string{"url": url, "endpoint": ep.API})
			} else {
				fmt.Fprintf(e.stdout, "Locus dashboard of %s (%s): open %s\n", ep.API, ep.From, url)
			}
			hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
				BaseContext: func(net.Listener) context.Context { return ctx }}
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				srv.Run(ctx)
			}()
			go func() {
				defer wg.Done()
				<-ctx.Done()
				shut, stop := context.WithTimeout(context.Background(), 2*time.Second)
				defer stop()
				hs.Shutdown(shut)
			}()
			err = hs.Serve(ln)
			cancel()
			wg.Wait()
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("dashboard: %w", err)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:17480", "loopback address to serve the page on (port 0: any free one)")
	addOutputFlag(cmd, &output)
	return cmd
}
