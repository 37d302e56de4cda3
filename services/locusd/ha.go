package locusd

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os/exec"
	"sync"
	"sync/atomic"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/ha"
	"github.com/locus-ssi/locus/services/ics"
	"github.com/locus-ssi/locus/services/proc"
)

// haPath is $PATH for HA commands and agents, looked up in the node's
// root.
const haPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// startHA makes the HA service for the spec's HA services (nil if the
// daemon has no spec). Its instances run in the node's root, as jobs
// do; fast placement asks the process service's load table.
func startHA(cfg Config, member *atomic.Pointer[clms.Member], icsNode *atomic.Pointer[ics.Node], nodeRoot *atomic.Pointer[string], procs *proc.Service) (*ha.Service, error) {
	if cfg.ICS == nil || cfg.ICS.Spec == nil || len(cfg.ICS.Spec.HAServices()) == 0 {
		return nil, nil
	}
	spec := cfg.ICS.Spec
	var all []int
	for _, n := range spec.Nodes {
		all = append(all, n.Number)
	}
	root := func() string {
		if r := nodeRoot.Load(); r != nil {
			return *r
		}
		return ""
	}
	return ha.New(ha.Config{Node: cfg.CLMS.Node, Services: spec.Services, AllNodes: all, Log: cfg.Log.With("svc", "ha"), Events: cfg.events,
		Member: func() ha.Membership {
			if m := member.Load(); m != nil {
				return m
			}
			return nil
		},
		Call:  icsCall(icsNode),
		Place: procs.PlaceAmong,
		Command: func(argv []string) (*exec.Cmd, error) {
			return proc.RootCommand(root(), "", argv, haPath)
		}})
}

// runHA runs the service until ctx ends (its instances stopped then);
// wg is done once it has.
func runHA(ctx context.Context, s *ha.Service, m *clms.Member, wg *sync.WaitGroup) {
	m.OnTransition(s.Transition)
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.Run(ctx)
	}()
}

// ServicesReply is the answer of GET /v1/services.
type ServicesReply struct {
	Services    []ha.ServiceReport `json:"services"`
	Unreachable []ha.NodeError     `json:"unreachable,omitempty"`
}

// ServiceLogsReply is the answer of GET /v1/services/{name}/logs.
type ServiceLogsReply struct {
	Lines       []ha.LogLine   `json:"lines"`
	Unreachable []ha.NodeError `json:"unreachable,omitempty"`
}

// ServiceControl is the body of POST /v1/services/{name}/{verb}.
type ServiceControl struct {
	To       int    `json:"to,omitempty"`
	Instance string `json:"instance,omitempty"`
}

// ServiceControlReply says a verb was committed (the instances follow).
type ServiceControlReply struct {
	Service string `json:"service"`
	Verb    string `json:"verb"`
	To      int    `json:"to,omitempty"`
}

// haRoutes serve the HA services: GET /v1/services, GET
// /v1/services/{name}/logs, POST /v1/services/{name}/{start|stop|move}.
func haRoutes(handle func(string, level, http.HandlerFunc), s *ha.Service, log *slog.Logger) {
	handle("GET /v1/services", look, func(w http.ResponseWriter, r *http.Request) {
		svcs, errs, err := s.Report(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, ServicesReply{Services: svcs, Unreachable: errs})
	})
	handle("GET /v1/services/{name}/logs", inspect, func(w http.ResponseWriter, r *http.Request) {
		lines, errs, err := s.Logs(r.Context(), r.PathValue("name"))
		if err != nil {
			http.Error(w, err.Error(), statusOf(err))
			return
		}
		writeJSON(w, ServiceLogsReply{Lines: lines, Unreachable: errs})
	})
	handle("POST /v1/services/{name}/{verb}", control, func(w http.ResponseWriter, r *http.Request) {
		var body ServiceControl
		if r.ContentLength != 0 {
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body); err != nil {
				http.Error(w, "locusd: service control: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		verb := r.PathValue("verb")
		switch verb {
		case "start", "stop", "move":
		default:
			http.Error(w, "locusd: service: unknown verb "+verb+" (start, stop, move)", http.StatusNotFound)
			return
		}
		c, _ := r.Context().Value(callerKey{}).(Caller)
		if err := s.Control(r.Context(), verb, r.PathValue("name"), body.Instance, body.To, c.String()); err != nil {
			log.Warn("service control", "verb", verb, "service", r.PathValue("name"), "by", c.String(), "err", err)
			http.Error(w, err.Error(), statusOf(err))
			return
		}
		log.Info("service control", "verb", verb, "service", r.PathValue("name"), "to", body.To, "by", c.String())
		writeJSON(w, ServiceControlReply{Service: r.PathValue("name"), Verb: verb, To: body.To})
	})
}

func statusOf(err error) int {
	if ha.IsUnknown(err) {
		return http.StatusNotFound
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	return http.StatusConflict
}
