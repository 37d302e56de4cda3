package locusd

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/dlm"
	"github.com/locus-ssi/locus/services/events"
	"github.com/locus-ssi/locus/services/ha"
	"github.com/locus-ssi/locus/services/ics"
	"github.com/locus-ssi/locus/services/lvs"
	"github.com/locus-ssi/locus/services/metrics"
	"github.com/locus-ssi/locus/services/proc"
)

// methodMetrics is the ICS method that answers a node's metrics in
// Prometheus's text format, for GET /v1/metrics?node=N on another node.
const methodMetrics = "metrics"

// newMetrics makes the daemon's registry over the subsystems it runs
// (nil ones are left out).
func newMetrics(cfg Config, feed *events.Feed, member *atomic.Pointer[clms.Member], procs *proc.Service, has *ha.Service, cip *lvs.Service, dlmd *dlm.Daemon) *metrics.Metrics {
	src := metrics.Sources{Feed: feed, Log: cfg.Log.With("svc", "metrics")}
	if cfg.CLMS != nil {
		src.Node = cfg.CLMS.Node
		src.Status = func() clms.Status {
			if m := member.Load(); m != nil {
				return m.Status()
			}
			return clms.Status{Self: cfg.CLMS.Node}
		}
	}
	if procs != nil {
		src.Loads = procs.Loads
		src.Launched = procs.Launched
	}
	if has != nil {
		src.Instances = has.Local
	}
	if cip != nil {
		src.ClusterIP = cip.Local
	}
	if dlmd != nil {
		src.Lockspaces = dlmd.State
	}
	return metrics.New(src)
}

// metricsCall answers methodMetrics: this node's metrics as text.
func metricsCall(m *metrics.Metrics) ics.Handler {
	return func(ctx context.Context, from int, _ []byte) ([]byte, error) {
		return metricsText(m)
	}
}

func metricsText(m *metrics.Metrics) ([]byte, error) {
	families, err := m.Registry().Gather()
	if err != nil {
		return nil, fmt.Errorf("locusd: metrics: %w", err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return nil, fmt.Errorf("locusd: metrics: %w", err)
		}
	}
	return b.Bytes(), nil
}

// metricsRoutes serve GET /v1/metrics: this node's metrics, for
// Prometheus (with a client certificate: nobody without one), or with
// ?node=N another node's, fetched over ICS.
func metricsRoutes(handle func(string, level, http.HandlerFunc), m *metrics.Metrics, member *atomic.Pointer[clms.Member], icsNode *atomic.Pointer[ics.Node], log *slog.Logger) {
	local := promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{ErrorLog: slogPrinter{log}, ErrorHandling: promhttp.ContinueOnError})
	handle("GET /v1/metrics", look, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query().Get("node")
		if q == "" {
			local.ServeHTTP(w, r)
			return
		}
		n, err := strconv.Atoi(q)
		if err != nil || n <= 0 {
			http.Error(w, fmt.Sprintf("locusd: metrics: node=%q: want a node number", q), http.StatusBadRequest)
			return
		}
		if mem := member.Load(); mem != nil && mem.Status().Self == n {
			local.ServeHTTP(w, r)
			return
		}
		in := icsNode.Load()
		if in == nil {
			http.Error(w, "locusd: metrics: "+errNoICS.Error(), http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		b, err := in.Call(ctx, n, methodMetrics, nil)
		if err != nil {
			http.Error(w, fmt.Sprintf("locusd: metrics of node %d: %v", n, err), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
		w.Write(b)
	})
}

// slogPrinter is promhttp's error log, into the daemon's.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn(fmt.Sprint(v...)) }
