package ha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/locus-ssi/locus/services/clms"
)

// ServiceReport is one HA service as the cluster sees it.
type ServiceReport struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Instances string `json:"instances"`
	Placement string `json:"placement"`
	Nodes     []int  `json:"nodes"`
	// Stopped says who stopped it (empty: it is meant to run).
	Stopped  string           `json:"stopped,omitempty"`
	Running  []InstanceReport `json:"instances_now"`
	Failures []NodeFailures   `json:"failures,omitempty"`
}

// InstanceReport is an instance: where the master put it, and what its
// node says of it.
type InstanceReport struct {
	Instance  string    `json:"instance"`
	Node      int       `json:"node"`
	Gen       uint64    `json:"gen"`
	Releasing bool      `json:"releasing,omitempty"`
	Why       string    `json:"why,omitempty"`
	Since     time.Time `json:"since"`
	// State is the node's word (starting, running, ...), "unplaced"
	// when no node can run it, "unknown" when its node did not answer.
	State    string `json:"state"`
	PID      int    `json:"pid,omitempty"`
	Restarts int    `json:"restarts"`
	Last     string `json:"last,omitempty"`
}

// NodeFailures is a service's failure count on a node.
type NodeFailures struct {
	Node int `json:"node"`
	Failures
}

// NodeError is a node that did not answer.
type NodeError struct {
	Node  int    `json:"node"`
	Error string `json:"error"`
}

// Report is every HA service, with what each Up node says of the
// instances it runs (asked in parallel).
func (s *Service) Report(ctx context.Context) ([]ServiceReport, []NodeError, error) {
	m := s.member()
	if m == nil {
		return nil, nil, errors.New("ha: no membership on this node yet")
	}
	st := m.Status()
	v := readView(m.Records("ha/"))
	byNode := map[int][]InstanceStatus{}
	var errs []NodeError
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range st.Nodes {
		if n.State != clms.Up && n.State != clms.ComingUp && n.State != clms.ShuttingDown {
			continue
		}
		wg.Add(1)
		go func(node int) {
			defer wg.Done()
			var sts []InstanceStatus
			var err error
			if node == s.cfg.Node {
				sts = s.localStatus()
			} else {
				cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				var b []byte
				if b, err = s.cfg.Call(cctx, node, methodStatus, nil); err == nil {
					err = json.Unmarshal(b, &sts)
				}
				cancel()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, NodeError{Node: node, Error: err.Error()})
				return
			}
			byNode[node] = sts
		}(n.Node)
	}
	wg.Wait()
	sort.Slice(errs, func(i, j int) bool { return errs[i].Node < errs[j].Node })
	var out []ServiceReport
	for _, d := range s.defs {
		r := ServiceReport{Name: d.Name, Kind: d.Kind(), Instances: strconv.Itoa(d.Instances), Placement: d.Placement, Nodes: d.Nodes}
		if d.All {
			r.Instances = "all"
		}
		if x, ok := v.stopped[d.Name]; ok {
			r.Stopped = x.v.By
		}
		ids := make([]string, 0, len(v.assign[d.Name]))
		for id := range v.assign[d.Name] {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			a := v.assign[d.Name][id].v
			ir := InstanceReport{Instance: id, Node: a.Node, Gen: a.Gen, Releasing: a.Releasing, Why: a.Why, Since: a.Since, State: "unplaced"}
			if a.Node != 0 {
				ir.State = "unknown"
				if _, answered := byNode[a.Node]; answered {
					ir.State = "assigned" // not yet started there
				}
				for _, is := range byNode[a.Node] {
					if is.Service == d.Name && is.Instance == id {
						ir.State, ir.PID, ir.Restarts, ir.Last = is.State, is.PID, is.Restarts, is.Last
					}
				}
			}
			r.Running = append(r.Running, ir)
		}
		for n, f := range v.fails[d.Name] {
			r.Failures = append(r.Failures, NodeFailures{Node: n, Failures: f.v})
		}
		sort.Slice(r.Failures, func(i, j int) bool { return r.Failures[i].Node < r.Failures[j].Node })
		out = append(out, r)
	}
	return out, errs, nil
}

// Control runs start, stop or move on a service (through the master).
func (s *Service) Control(ctx context.Context, verb, service, instance string, to int, by string) error {
	if s.byName[service] == nil {
		return fmt.Errorf("ha: %w: %q", errUnknownService, service)
	}
	r := controlRequest{Verb: verb, Service: service, Instance: instance, To: to, By: by}
	m := s.member()
	if m == nil {
		return errors.New("ha: no membership on this node yet")
	}
	if st := m.Status(); st.Master == s.cfg.Node {
		return s.control(r)
	}
	b, _ := json.Marshal(r)
	_, err := s.callMaster(ctx, methodControl, b)
	return err
}

// Logs is the service's lines from every Up node, by time.
func (s *Service) Logs(ctx context.Context, service string) ([]LogLine, []NodeError, error) {
	if s.byName[service] == nil {
		return nil, nil, fmt.Errorf("ha: %w: %q", errUnknownService, service)
	}
	m := s.member()
	if m == nil {
		return nil, nil, errors.New("ha: no membership on this node yet")
	}
	var out []LogLine
	var errs []NodeError
	var mu sync.Mutex
	var wg sync.WaitGroup
	req, _ := json.Marshal(service)
	for _, n := range m.Status().Nodes {
		if n.State != clms.Up && n.State != clms.ComingUp && n.State != clms.ShuttingDown {
			continue
		}
		wg.Add(1)
		go func(node int) {
			defer wg.Done()
			var lines []LogLine
			var err error
			if node == s.cfg.Node {
				lines = s.localLogs(service)
			} else {
				cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				var b []byte
				if b, err = s.cfg.Call(cctx, node, methodLogs, req); err == nil {
					err = json.Unmarshal(b, &lines)
				}
				cancel()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, NodeError{Node: node, Error: err.Error()})
				return
			}
			out = append(out, lines...)
		}(n.Node)
	}
	wg.Wait()
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out, errs, nil
}

// IsUnknown says whether err is about a service the spec does not have.
func IsUnknown(err error) bool { return errors.Is(err, errUnknownService) }
