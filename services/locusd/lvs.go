package locusd

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/ha"
	"github.com/locus-ssi/locus/services/ics"
	"github.com/locus-ssi/locus/services/lvs"
)

// startLVS makes the cluster IP's service (nil if the spec has none).
// Real servers for a port backed by an HA service are the nodes where
// has runs an instance.
func startLVS(cfg Config, member *atomic.Pointer[clms.Member], icsNode *atomic.Pointer[ics.Node], has *ha.Service) (*lvs.Service, error) {
	if cfg.ICS == nil || cfg.ICS.Spec == nil || !cfg.ICS.Spec.HasClusterIP() {
		return nil, nil
	}
	running := func(string) bool { return false }
	if has != nil {
		running = has.Running
	}
	return lvs.New(lvs.Config{Node: cfg.CLMS.Node, Spec: *cfg.ICS.Spec.ClusterIP, Running: running, Servers: realServerNodes(cfg.ICS.Spec),
		Log: cfg.Log.With("svc", "lvs"),
		Member: func() lvs.Membership {
			if m := member.Load(); m != nil {
				return m
			}
			return nil
		},
		Call: icsCall(icsNode)})
}

// runLVS runs it until ctx ends (the address given up then).
func runLVS(ctx context.Context, s *lvs.Service, m *clms.Member, wg *sync.WaitGroup) {
	m.OnTransition(s.Transition)
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.Run(ctx)
	}()
}

// ClusterIPMove is the body of POST /v1/clusterip/move.
type ClusterIPMove struct {
	To int `json:"to"`
}

// lvsRoutes serve GET /v1/clusterip (the director and its table) and
// POST /v1/clusterip/move (another director, by an operator).
func lvsRoutes(handle func(string, level, http.HandlerFunc), s *lvs.Service, log *slog.Logger) {
	handle("POST /v1/clusterip/move", control, func(w http.ResponseWriter, r *http.Request) {
		var body ClusterIPMove
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body); err != nil || body.To <= 0 {
			http.Error(w, fmt.Sprintf("locusd: cluster IP move: want {\"to\": NODE} (%v)", err), http.StatusBadRequest)
			return
		}
		c, _ := r.Context().Value(callerKey{}).(Caller)
		if err := s.Move(r.Context(), body.To, c.String()); err != nil {
			log.Warn("cluster ip move", "to", body.To, "by", c.String(), "err", err)
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		log.Info("cluster ip move", "to", body.To, "by", c.String())
		writeJSON(w, body)
	})
	handle("GET /v1/clusterip", look, func(w http.ResponseWriter, r *http.Request) {
		rep, err := s.Report(r.Context())
		if err != nil {
			log.Warn("cluster ip", "err", err)
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, rep)
	})
}

// realServerNodes are the nodes that may serve a port of the cluster IP:
// the nodes of each port's HA service (nil, every node, if one names
// none or a port registers listeners).
func realServerNodes(spec *clusterspec.Spec) []int {
	out := []int{}
	for _, p := range spec.ClusterIP.Ports {
		if p.Service == "" {
			return nil
		}
		for _, sv := range spec.HAServices() {
			if sv.Name != p.Service {
				continue
			}
			if len(sv.Nodes) == 0 {
				return nil
			}
			for _, n := range sv.Nodes {
				if !slices.Contains(out, n) {
					out = append(out, n)
				}
			}
		}
	}
	return out
}
