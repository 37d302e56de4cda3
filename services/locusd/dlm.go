package locusd

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/dlm"
	"github.com/locus-ssi/locus/services/ics"
)

// errNoICS: the node has no ICS endpoint yet (it is being admitted).
var errNoICS = errors.New("locusd: no ICS on this node yet")

// startDLM brings the kernel DLM's control daemon up on this node (the
// kernel configured, the monitor held) before ICS serves, so its methods
// are there from the first call; it follows the membership once that
// runs.
func startDLM(cfg Config, member *atomic.Pointer[clms.Member], icsNode *atomic.Pointer[ics.Node]) (*dlm.Daemon, error) {
	addr, err := netip.ParseAddr(cfg.CLMS.Addr)
	if err != nil {
		return nil, err
	}
	cluster := "locus"
	if cfg.ICS != nil && cfg.ICS.Spec != nil && cfg.ICS.Spec.Cluster.Name != "" {
		cluster = cfg.ICS.Spec.Cluster.Name
	}
	log := cfg.Log.With("svc", "dlm")
	return dlm.Start(dlm.Config{Node: cfg.CLMS.Node, Cluster: cluster, Addr: addr, Log: log, Events: cfg.events,
		Status: func() clms.Status {
			if m := member.Load(); m != nil {
				return m.Status()
			}
			return clms.Status{Self: cfg.CLMS.Node}
		},
		Call: icsCall(icsNode)})
}

// icsCall calls a method on a node over this node's ICS endpoint, once
// it has one.
func icsCall(icsNode *atomic.Pointer[ics.Node]) func(ctx context.Context, node int, method string, req []byte) ([]byte, error) {
	return func(ctx context.Context, node int, method string, req []byte) ([]byte, error) {
		n := icsNode.Load()
		if n == nil {
			return nil, errNoICS
		}
		return n.Call(ctx, node, method, req)
	}
}

// runDLM runs the daemon until ctx ends (then it leaves its lockspaces);
// wg is done once it has.
func runDLM(ctx context.Context, d *dlm.Daemon, m *clms.Member, wg *sync.WaitGroup) {
	m.OnTransition(d.Transition)
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.Run(ctx)
	}()
}

// dlmRoutes serve the DLM's view: GET /v1/dlm/lockspaces (each node's
// lockspaces, members and epochs) and GET /v1/dlm/locks?lockspace=NAME.
func dlmRoutes(handle func(string, level, http.HandlerFunc), d *dlm.Daemon, log *slog.Logger) {
	handle("GET /v1/dlm/lockspaces", look, func(w http.ResponseWriter, r *http.Request) {
		nodes, err := d.Nodes(r.Context())
		if err != nil {
			log.Warn("lockspaces", "err", err)
		}
		writeJSON(w, DLMReply{Nodes: nodes, Unreachable: errText(err)})
	})
	handle("GET /v1/dlm/locks", look, func(w http.ResponseWriter, r *http.Request) {
		ls := r.URL.Query().Get("lockspace")
		if ls == "" {
			ls = dlm.DefaultLockspace
		}
		locks, err := d.Locks(r.Context(), ls)
		if locks == nil && err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, DLMReply{Locks: locks, Unreachable: errText(err)})
	})
}

// DLMReply is the answer of the DLM's routes.
type DLMReply struct {
	Nodes []dlm.NodeState `json:"nodes,omitempty"`
	Locks []dlm.LockInfo  `json:"locks,omitempty"`
	// Unreachable says which nodes did not answer, and why.
	Unreachable string `json:"unreachable,omitempty"`
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
