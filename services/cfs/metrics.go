package cfs

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a node's CFS metrics, one Prometheus collector: the 9P
// requests its server handled by operation (a latency histogram and
// the errors answered), its connected clients, the upstream
// connections its relay made (more than one: it failed over or the
// server moved), and the times this node took the shared root over.
type Metrics struct {
	ops       *prometheus.HistogramVec
	errs      *prometheus.CounterVec
	clients   prometheus.Gauge
	takeovers prometheus.Counter
	relay     atomic.Pointer[Relay]
}

var descRelayConns = prometheus.NewDesc("locus_cfs_relay_connections_total",
	"Upstream connections this node's CFS relay made to the server: 1, plus one for each failover or reconnect.", nil, nil)

// NewMetrics makes the collector; node labels every series.
func NewMetrics(node int) *Metrics {
	l := prometheus.Labels{"node": strconv.Itoa(node)}
	return &Metrics{
		ops: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "locus_cfs_op_seconds", ConstLabels: l,
			Help:    "9P requests this node's CFS server answered, by operation (walk, read, write, lopen, ...): time from receipt to answer.",
			Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1}}, []string{"op"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "locus_cfs_op_errors_total", ConstLabels: l,
			Help: "9P requests answered with an error (Rlerror: ENOENT, EACCES, ...), by operation."}, []string{"op"}),
		clients: prometheus.NewGauge(prometheus.GaugeOpts{Name: "locus_cfs_clients", ConstLabels: l,
			Help: "Connections to this node's CFS server (kernel clients and relays)."}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "locus_cfs_takeovers_total", ConstLabels: l,
			Help: "Times this node (the standby) took the shared root over from a fenced server."}),
	}
}

func (m *Metrics) observe(op string, d time.Duration, failed bool) {
	m.ops.WithLabelValues(op).Observe(d.Seconds())
	if failed {
		m.errs.WithLabelValues(op).Inc()
	}
}

// WatchRelay counts r's upstream connections.
func (m *Metrics) WatchRelay(r *Relay) { m.relay.Store(r) }

// TookOver counts a takeover of the shared root.
func (m *Metrics) TookOver() { m.takeovers.Inc() }

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.ops.Describe(ch)
	m.errs.Describe(ch)
	m.clients.Describe(ch)
	m.takeovers.Describe(ch)
	ch <- descRelayConns
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.ops.Collect(ch)
	m.errs.Collect(ch)
	m.clients.Collect(ch)
	m.takeovers.Collect(ch)
	if r := m.relay.Load(); r != nil {
		ch <- prometheus.MustNewConstMetric(descRelayConns, prometheus.CounterValue, float64(r.Generation()))
	}
}
