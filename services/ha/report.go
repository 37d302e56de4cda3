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
	errs := askNodes(ctx, s, st, methodStatus, nil, func(node int, b []byte) error {
		var sts []InstanceStatus
		if b == nil {
			sts = s.localStatus()
		} else if err := json.Unmarshal(b, &sts); err != nil {
			return err
		}
		byNode[node] = sts
		return nil
	})
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
	req, _ := json.Marshal(service)
	errs := askNodes(ctx, s, m.Status(), methodLogs, req, func(node int, b []byte) error {
		var lines []LogLine
		if b == nil {
			lines = s.localLogs(service)
		} else if err := json.Unmarshal(b, &lines); err != nil {
			return err
		}
		out = append(out, lines...)
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out, errs, nil
}

// IsUnknown says whether err is about a service the spec does not have.
func IsUnknown(err error) bool { return errors.Is(err, errUnknownService) }

// askNodes calls method on every live node of st in parallel and hands
// each answer to take (one at a time; b nil for this node, which take
// answers itself); the nodes that did not answer come back, by node.
func askNodes(ctx context.Context, s *Service, st clms.Status, method string, req []byte, take func(node int, b []byte) error) []NodeError {
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
			var b []byte
			var err error
			if node != s.cfg.Node {
				cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				b, err = s.cfg.Call(cctx, node, method, req)
				cancel()
				if err == nil && b == nil {
					b = []byte("null")
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				err = take(node, b)
			}
			if err != nil {
				errs = append(errs, NodeError{Node: node, Error: err.Error()})
			}
		}(n.Node)
	}
	wg.Wait()
	sort.Slice(errs, func(i, j int) bool { return errs[i].Node < errs[j].Node })
	return errs
}
