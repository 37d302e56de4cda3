package clusterspec

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"time"
)

// HA makes a service an HA service: the cluster runs its instances on
// the nodes it picks (services/ha), monitors them, restarts a local
// failure and moves an instance when its node fails; init does not
// start it on every node.
type HA struct {
	// Instances is how many run at once: a number (default 1) or "all"
	// (one on every Up node of the service's nodes).
	Instances string `yaml:"instances" json:"instances,omitempty"`
	// Placement picks the node of an instance: prefer (the first Up
	// node of the service's nodes, in order; the default), last_node
	// (where it last ran, then as prefer), round_robin (the node after
	// the one it last ran on) or fast (the least loaded, by the load
	// vector).
	Placement string    `yaml:"placement" json:"placement,omitempty"`
	Monitor   HAMonitor `yaml:"monitor" json:"monitor,omitempty"`
	// MigrationThreshold is how many failures on one node (within
	// FailureTimeout) move the instance off it (Pacemaker's
	// migration-threshold; default 3).
	MigrationThreshold int `yaml:"migration_threshold" json:"migration_threshold,omitempty"`
	// FailureTimeout clears a node's failure count after that long
	// without a failure (Pacemaker's failure-timeout; default 10m).
	FailureTimeout string `yaml:"failure_timeout" json:"failure_timeout,omitempty"`
	// RestartDelay is the pause before a local restart (default 0).
	RestartDelay string `yaml:"restart_delay" json:"restart_delay,omitempty"`
	// StartTimeout and StopTimeout bound an agent's start and stop
	// (default: the agent's meta-data hint, else 20s). A command with a
	// monitor has started once the monitor first passes, within
	// StartTimeout (its first monitors are not failures); a command is
	// stopped with SIGTERM and, after StopTimeout, SIGKILL.
	StartTimeout string `yaml:"start_timeout" json:"start_timeout,omitempty"`
	StopTimeout  string `yaml:"stop_timeout" json:"stop_timeout,omitempty"`
}

// HAMonitor says how an instance is checked: the agent's monitor
// action (an OCF service's default), a command (exit 0: healthy), a
// TCP connect to host:port, or an HTTP GET answered 2xx or 3xx. A
// command service with none is watched as a process (its exit is its
// failure).
type HAMonitor struct {
	Interval string   `yaml:"interval" json:"interval,omitempty"` // default 10s
	Timeout  string   `yaml:"timeout" json:"timeout,omitempty"`   // default 20s
	Command  []string `yaml:"command" json:"command,omitempty"`
	TCP      string   `yaml:"tcp" json:"tcp,omitempty"`
	HTTP     string   `yaml:"http" json:"http,omitempty"`
}

// Placements.
const (
	PlacePrefer     = "prefer"
	PlaceLastNode   = "last_node"
	PlaceRoundRobin = "round_robin"
	PlaceFast       = "fast"
)

// HASettings is an HA block with its defaults applied and its
// durations parsed.
type HASettings struct {
	// Instances is the count; All: one per Up node of the service.
	Instances          int
	All                bool
	Placement          string
	MigrationThreshold int
	FailureTimeout     time.Duration
	RestartDelay       time.Duration
	StartTimeout       time.Duration // 0: the agent's hint, else 20s
	StopTimeout        time.Duration
	MonitorInterval    time.Duration
	MonitorTimeout     time.Duration
	Monitor            HAMonitor
}

var agentName = regexp.MustCompile(`^(ocf:)?[A-Za-z0-9][A-Za-z0-9_.+-]*[/:][A-Za-z0-9][A-Za-z0-9_.+-]*$`)

var paramName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Settings checks the block and applies its defaults.
func (h HA) Settings() (HASettings, error) {
	st := HASettings{Instances: 1, Placement: h.Placement, MigrationThreshold: h.MigrationThreshold, Monitor: h.Monitor}
	switch h.Instances {
	case "":
	case "all":
		st.All, st.Instances = true, 0
	default:
		n, err := strconv.Atoi(h.Instances)
		if err != nil || n < 1 || n > maxHANode {
			return st, fmt.Errorf("instances: %q must be a count 1-%d or \"all\"", h.Instances, maxHANode)
		}
		st.Instances = n
	}
	switch h.Placement {
	case "":
		st.Placement = PlacePrefer
	case PlacePrefer, PlaceLastNode, PlaceRoundRobin, PlaceFast:
	default:
		return st, fmt.Errorf("placement: %q must be prefer, last_node, round_robin or fast", h.Placement)
	}
	if st.MigrationThreshold == 0 {
		st.MigrationThreshold = 3
	}
	if st.MigrationThreshold < 1 {
		return st, fmt.Errorf("migration_threshold: %d must be at least 1", h.MigrationThreshold)
	}
	durations := []struct {
		name string
		s    string
		def  time.Duration
		to   *time.Duration
	}{
		{"failure_timeout", h.FailureTimeout, 10 * time.Minute, &st.FailureTimeout},
		{"restart_delay", h.RestartDelay, 0, &st.RestartDelay},
		{"start_timeout", h.StartTimeout, 0, &st.StartTimeout},
		{"stop_timeout", h.StopTimeout, 0, &st.StopTimeout},
		{"monitor.interval", h.Monitor.Interval, 10 * time.Second, &st.MonitorInterval},
		{"monitor.timeout", h.Monitor.Timeout, 20 * time.Second, &st.MonitorTimeout},
	}
	for _, d := range durations {
		*d.to = d.def
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil || v < 0 || v > 24*time.Hour {
			return st, fmt.Errorf("%s: %q is not a duration like 500ms, 10s or 5m (at most 24h)", d.name, d.s)
		}
		*d.to = v
	}
	if st.MonitorInterval < 100*time.Millisecond {
		return st, fmt.Errorf("monitor.interval: %v is under 100ms", st.MonitorInterval)
	}
	probes := 0
	if len(h.Monitor.Command) > 0 {
		probes++
	}
	if h.Monitor.TCP != "" {
		probes++
		if _, _, err := net.SplitHostPort(h.Monitor.TCP); err != nil {
			return st, fmt.Errorf("monitor.tcp: %q is not host:port", h.Monitor.TCP)
		}
	}
	if h.Monitor.HTTP != "" {
		probes++
		u, err := url.Parse(h.Monitor.HTTP)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return st, fmt.Errorf("monitor.http: %q is not an http:// or https:// URL", h.Monitor.HTTP)
		}
	}
	if probes > 1 {
		return st, fmt.Errorf("monitor: one of command, tcp or http, not %d", probes)
	}
	return st, nil
}

// IsHA says whether the service is run by the cluster's HA service.
func (sv Service) IsHA() bool { return sv.HA != nil }

// HAServices are the spec's HA services.
func (s *Spec) HAServices() []Service {
	var out []Service
	for _, sv := range s.Services {
		if sv.IsHA() {
			out = append(out, sv)
		}
	}
	return out
}

// checkHA checks an HA service's own fields (bad reports under key).
func checkHA(sv Service, key string, bad func(field, format string, args ...any)) {
	if sv.HA == nil {
		if sv.OCF != "" || len(sv.Params) > 0 {
			bad(key+".ocf", "an OCF agent runs only as an HA service (give it an ha: block)")
		}
		return
	}
	if _, err := sv.HA.Settings(); err != nil {
		bad(key+".ha", "%v", err)
	}
	if sv.Oneshot {
		bad(key+".oneshot", "an HA service is kept running, not run once")
	}
	if !serviceName.MatchString(sv.Name) {
		bad(key+".name", "%q: an HA service's name is 1-63 letters, digits, '-', '_' or '.'", sv.Name)
	}
	switch {
	case sv.OCF != "" && len(sv.Command) > 0:
		bad(key+".ocf", "a service is an OCF agent or a command, not both")
	case sv.OCF != "" && !agentName.MatchString(sv.OCF):
		bad(key+".ocf", "%q must be provider/type (heartbeat/Dummy) or ocf:provider:type", sv.OCF)
	}
	for k := range sv.Params {
		if !paramName.MatchString(k) {
			bad(key+".params", "%q is not a parameter name (letters, digits, '_')", k)
		}
	}
	for _, n := range sv.Nodes {
		if n < 1 || n > maxHANode {
			bad(key+".nodes", "node %d is not 1-%d", n, maxHANode)
		}
	}
}

var serviceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// maxHANode bounds the node numbers and counts of an HA service (the
// cluster PID's node field holds 511).
const maxHANode = 511
