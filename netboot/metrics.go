package netboot

import (
	"io"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the netboot service's Prometheus metrics, served on its
// operator API at GET /v1/metrics (and through the init node's daemon at
// GET /v1/netboot/metrics): DHCP exchanges by message type and answer,
// leases, TFTP and HTTP bytes, transfers and active transfers, and the
// registry's machines by boot stage and admission.
type Metrics struct {
	reg        *prometheus.Registry
	dhcp       *prometheus.CounterVec
	tftpBytes  prometheus.Counter
	tftpActive prometheus.Gauge
	tftpDone   *prometheus.CounterVec
	httpBytes  prometheus.Counter
	httpActive prometheus.Gauge
	httpDone   *prometheus.CounterVec
	solicits   prometheus.Counter
}

var (
	descLeases = prometheus.NewDesc("locus_netboot_leases", "Addresses leased (bound) in the pool.", nil, nil)
	descStage  = prometheus.NewDesc("locus_netboot_machines", "Machines in the registry by how far their last boot got and their admission.", []string{"stage", "status"}, nil)
)

func newMetrics(leases *Leases, reg *Registry) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.dhcp = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "locus_netboot_dhcp_messages_total",
		Help: "DHCP messages by type (discover, request, ...) and what they got (offer, ack, nak, none: ignored or refused)."}, []string{"type", "reply"})
	m.tftpBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "locus_netboot_tftp_sent_bytes_total", Help: "Bytes sent by TFTP."})
	m.tftpActive = prometheus.NewGauge(prometheus.GaugeOpts{Name: "locus_netboot_tftp_active_transfers", Help: "TFTP transfers under way."})
	m.tftpDone = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "locus_netboot_tftp_transfers_total",
		Help: "TFTP transfers by outcome (sent, ended: the client stopped, as firmware asking only the size does; refused)."}, []string{"outcome"})
	m.httpBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "locus_netboot_http_sent_bytes_total", Help: "Bytes of HTTP bodies sent (kernel, initramfs, scripts)."})
	m.httpActive = prometheus.NewGauge(prometheus.GaugeOpts{Name: "locus_netboot_http_active_requests", Help: "HTTP requests under way."})
	m.httpDone = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "locus_netboot_http_requests_total", Help: "HTTP requests by status code."}, []string{"code"})
	m.solicits = prometheus.NewCounter(prometheus.CounterOpts{Name: "locus_netboot_router_solicitations_total",
		Help: "IPv6 router solicitations answered (iPXE's: the advertisement ends its wait for IPv6)."})
	m.reg.MustRegister(m.solicits, m.dhcp, m.tftpBytes, m.tftpActive, m.tftpDone, m.httpBytes, m.httpActive, m.httpDone,
		collector{leases: leases, registry: reg}, prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// collector reads the leases and the registry when scraped.
type collector struct {
	leases   *Leases
	registry *Registry
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLeases
	ch <- descStage
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descLeases, prometheus.GaugeValue, float64(len(c.leases.All())))
	type key struct{ stage, status string }
	n := map[key]int{}
	for _, ct := range c.registry.Contacts() {
		n[key{ct.Stage, ct.Status}]++
	}
	for k, v := range n {
		ch <- prometheus.MustNewConstMetric(descStage, prometheus.GaugeValue, float64(v), k.stage, k.status)
	}
}

// countHTTP wraps the boot tree's handler with the HTTP metrics.
func (m *Metrics) countHTTP(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.httpActive.Inc()
		defer m.httpActive.Dec()
		cw := &countingWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(cw, r)
		m.httpBytes.Add(float64(cw.n.Load()))
		m.httpDone.WithLabelValues(strconv.Itoa(cw.code)).Inc()
	})
}

type countingWriter struct {
	http.ResponseWriter
	code int
	n    atomic.Int64
}

func (w *countingWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n.Add(int64(n))
	return n, err
}

// ReadFrom keeps http.ServeContent's sendfile path (the kernel copies the
// file to the socket) while counting what it sent.
func (w *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := io.Copy(w.ResponseWriter, r)
	w.n.Add(n)
	return n, err
}
