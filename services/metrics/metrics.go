// Package metrics is a node daemon's Prometheus metrics
// (prometheus/client_golang): the membership as this node sees it, the
// load vectors of every node, this node's HA instances, lockspaces and
// cluster IP, read at each scrape from the subsystems themselves, and
// counters of what happened, counted from the node's event feed
// (transitions, fencings, master changes, service starts and stops,
// lockspace recoveries). Each daemon has a registry of its own (no
// global one); locusd serves it at GET /v1/metrics to authenticated
// callers only.
package metrics

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/dlm"
	"github.com/locus-ssi/locus/services/events"
	"github.com/locus-ssi/locus/services/ha"
	"github.com/locus-ssi/locus/services/lvs"
	"github.com/locus-ssi/locus/services/proc"
)

// Sources are where the metrics come from; a nil one is a subsystem
// this node does not run, and its metrics are left out.
type Sources struct {
	Node   int
	Status func() clms.Status
	Loads  func() []proc.Load
	// Launched counts the jobs this node started (proc.Service).
	Launched   func() uint64
	Instances  func() []ha.InstanceStatus
	Lockspaces func() dlm.NodeState
	ClusterIP  func() (director bool, table []lvs.VirtualService)
	// Feed is the node's event feed; Run counts it.
	Feed *events.Feed
	Log  *slog.Logger
}

// Metrics is a node's registry and the counters fed from its events.
type Metrics struct {
	src Sources
	reg *prometheus.Registry

	events       *prometheus.CounterVec
	transitions  *prometheus.CounterVec
	fences       *prometheus.CounterVec
	masterTaken  prometheus.Counter
	serviceStart *prometheus.CounterVec
	serviceStop  *prometheus.CounterVec
	lsStarts     *prometheus.CounterVec
	phaseMillis  *prometheus.GaugeVec
	downLatency  *prometheus.HistogramVec
}

// New makes the registry: Go's and the process's own collectors, the
// state collector over src, and the event counters (zero until Run).
func New(src Sources) *Metrics {
	if src.Log == nil {
		src.Log = slog.Default()
	}
	node := prometheus.Labels{"node": strconv.Itoa(src.Node)}
	m := &Metrics{src: src, reg: prometheus.NewRegistry()}
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "locus_events_total", ConstLabels: node,
		Help: "Events on this node's feed, by kind."}, []string{"kind"})
	m.transitions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "locus_membership_transitions_total", ConstLabels: node,
		Help: "Membership transitions this node applied, by the state they put a node in."}, []string{"state"})
	m.fences = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "locus_fence_attempts_total", ConstLabels: node,
		Help: "Fencings this node ran as master, by result (ok, error)."}, []string{"result"})
	m.masterTaken = prometheus.NewCounter(prometheus.CounterOpts{Name: "locus_master_taken_total", ConstLabels: node,
		Help: "Times this node became the membership master."})
	m.serviceStart = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "locus_service_starts_total", ConstLabels: node,
		Help: "Services (run-level, the daemon's own and HA instances) started on this node, by name."}, []string{"service"})
	m.serviceStop = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "locus_service_stops_total", ConstLabels: node,
		Help: "Services stopped on this node, by name."}, []string{"service"})
	m.lsStarts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "locus_dlm_lockspace_starts_total", ConstLabels: node,
		Help: "Times a kernel DLM lockspace started on this node (a join, a recovery after a member's failure, a leave), by lockspace."}, []string{"lockspace"})
	m.phaseMillis = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "locus_boot_phase_seconds", ConstLabels: node,
		Help: "How long each of init's boot phases took on this node's last boot."}, []string{"phase"})
	m.downLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "locus_membership_down_seconds", ConstLabels: node,
		Help:    "On the master: for each failed node it took Down, the time from gossip's loss of the node (the failure detector's verdict) to the Down committed, its fence included when fenced=true.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, []string{"fenced"})
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.events, m.transitions, m.fences, m.masterTaken, m.serviceStart, m.serviceStop, m.lsStarts, m.phaseMillis, m.downLatency,
		&state{src: src})
	if src.Launched != nil {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "locus_proc_launches_total", ConstLabels: node,
			Help: "Jobs this node started for the cluster's process verbs (onnode, onall, fast, rexec)."}, func() float64 { return float64(src.Launched()) }))
	}
	return m
}

// ObserveDown records, on the master, how long a failed node's Down took
// after gossip lost it (clms.Config.FailureDown).
func (m *Metrics) ObserveDown(_ int, d time.Duration, fenced bool) {
	m.downLatency.WithLabelValues(strconv.FormatBool(fenced)).Observe(d.Seconds())
}

// Registry is what GET /v1/metrics serves.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Count adds one event to the counters.
func (m *Metrics) Count(e events.Event) {
	m.events.WithLabelValues(string(e.Kind)).Inc()
	switch e.Kind {
	case events.TransitionApplied:
		m.transitions.WithLabelValues(e.State).Inc()
	case events.Fenced:
		result := "ok"
		if e.Error != "" {
			result = "error"
		}
		m.fences.WithLabelValues(result).Inc()
	case events.RoleTaken:
		if e.Name == events.RoleMaster {
			m.masterTaken.Inc()
		}
	case events.ServiceStarted:
		m.serviceStart.WithLabelValues(e.Name).Inc()
	case events.ServiceStopped:
		m.serviceStop.WithLabelValues(e.Name).Inc()
	case events.LockspaceStarted:
		m.lsStarts.WithLabelValues(e.Name).Inc()
	case events.PhaseDone:
		m.phaseMillis.WithLabelValues(e.Name).Set(float64(e.Millis) / 1000)
	}
}

// Run counts the node's feed, from its first event kept, until ctx
// ends.
func (m *Metrics) Run(ctx context.Context) {
	if m.src.Feed == nil {
		return
	}
	err := m.src.Feed.Stream(ctx, 0, func(e events.Event) error {
		m.Count(e)
		return nil
	})
	if err != nil && ctx.Err() == nil {
		m.src.Log.Warn("metrics: the event feed ended", "err", err)
	}
}

// state reads the subsystems at each scrape.
type state struct{ src Sources }

var (
	descNodeState = prometheus.NewDesc("locus_node_state", "1 for each node's membership state, as this node sees it.", []string{"node", "member", "state"}, nil)
	descMaster    = prometheus.NewDesc("locus_master", "The membership master's node number, as this node sees it (0: none).", []string{"node"}, nil)
	descQuorum    = prometheus.NewDesc("locus_quorum", "1 if this node hears a master with the quorum.", []string{"node"}, nil)
	descTerm      = prometheus.NewDesc("locus_membership_term", "The Raft term of the membership.", []string{"node"}, nil)
	descLastTr    = prometheus.NewDesc("locus_membership_last_transition", "The id of the last transition this node applied.", []string{"node"}, nil)
	descRunLevel  = prometheus.NewDesc("locus_runlevel", "The cluster's run level.", []string{"node"}, nil)
	descLoad      = prometheus.NewDesc("locus_load", "Each Up node's load vector: mean and upper run queue per unit of CPU (damped), the run queue.", []string{"node", "member", "value"}, nil)
	descProcs     = prometheus.NewDesc("locus_node_processes", "Each Up node's process count.", []string{"node", "member"}, nil)
	descMemFree   = prometheus.NewDesc("locus_node_memory_free_bytes", "Each Up node's free memory.", []string{"node", "member"}, nil)
	descMemTotal  = prometheus.NewDesc("locus_node_memory_total_bytes", "Each Up node's memory.", []string{"node", "member"}, nil)
	descInstance  = prometheus.NewDesc("locus_ha_instance", "1 for each HA instance on this node, by its state (starting, running, failed, ...).", []string{"node", "service", "instance", "state"}, nil)
	descRestarts  = prometheus.NewDesc("locus_ha_instance_restarts", "Local restarts of each HA instance on this node since it was placed here.", []string{"node", "service", "instance"}, nil)
	descLSMembers = prometheus.NewDesc("locus_dlm_lockspace_members", "Each kernel DLM lockspace this node is in: its member count (0 while stopped).", []string{"node", "lockspace"}, nil)
	descDirector  = prometheus.NewDesc("locus_clusterip_director", "1 if this node holds the cluster IP.", []string{"node"}, nil)
	descReal      = prometheus.NewDesc("locus_clusterip_real_servers", "On the director: each port's real servers in IPVS.", []string{"node", "port"}, nil)
)

func (s *state) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNodeState, descMaster, descQuorum, descTerm, descLastTr, descRunLevel, descLoad, descProcs,
		descMemFree, descMemTotal, descInstance, descRestarts, descLSMembers, descDirector, descReal} {
		ch <- d
	}
}

func (s *state) Collect(ch chan<- prometheus.Metric) {
	self := strconv.Itoa(s.src.Node)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{self}, labels...)...)
	}
	if s.src.Status != nil {
		st := s.src.Status()
		for _, n := range st.Nodes {
			gauge(descNodeState, 1, strconv.Itoa(n.Node), string(n.State))
		}
		gauge(descMaster, float64(st.Master))
		gauge(descQuorum, b2f(st.Quorum))
		gauge(descTerm, float64(st.Term))
		gauge(descLastTr, float64(st.LastTransition))
		gauge(descRunLevel, float64(st.RunLevel))
	}
	if s.src.Loads != nil {
		for _, l := range s.src.Loads() {
			n := strconv.Itoa(l.Node)
			gauge(descLoad, l.Mean, n, "mean")
			gauge(descLoad, l.Upper, n, "upper")
			gauge(descLoad, l.RunQ, n, "runq")
			gauge(descProcs, float64(l.Procs), n)
			gauge(descMemFree, float64(l.MemFree)*1024, n)
			gauge(descMemTotal, float64(l.MemTotal)*1024, n)
		}
	}
	if s.src.Instances != nil {
		for _, in := range s.src.Instances() {
			gauge(descInstance, 1, in.Service, in.Instance, in.State)
			gauge(descRestarts, float64(in.Restarts), in.Service, in.Instance)
		}
	}
	if s.src.Lockspaces != nil {
		for _, sp := range s.src.Lockspaces().Spaces {
			members := 0
			if sp.Started {
				members = len(sp.Members)
			}
			gauge(descLSMembers, float64(members), sp.Name)
		}
	}
	if s.src.ClusterIP != nil {
		here, table := s.src.ClusterIP()
		gauge(descDirector, b2f(here))
		for _, v := range table {
			gauge(descReal, float64(len(v.Servers)), strings.ToLower(v.Protocol)+"/"+strconv.Itoa(int(v.Port)))
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
