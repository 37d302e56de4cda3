// Package locusd is the node daemon that init starts in its join phase.
//
// It serves the node's identity and boot state over HTTP on the
// interconnect (GET /v1/node) and, with the spec's roles (ConfigureNode:
// fencing, membership options, admission, the node's part in an HA-CFS
// root), runs the node's subsystems: membership (services/clms), ICS
// (services/ics), admission of new nodes on the init node, and the CFS
// server, relay and standby (services/cfs). What they do is published on
// the node's event feed (services/events: through PID 1's socket when
// init started the daemon), served at GET /v1/events.
package locusd

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"

	"github.com/locus-ssi/locus/internal/fusefd"
	"github.com/locus-ssi/locus/internal/privsock"
	"github.com/locus-ssi/locus/services/events"

	"github.com/locus-ssi/locus/services/cfs"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/dlm"
	"github.com/locus-ssi/locus/services/ha"
	"github.com/locus-ssi/locus/services/ics"
	"github.com/locus-ssi/locus/services/logring"
	"github.com/locus-ssi/locus/services/lvs"
	"github.com/locus-ssi/locus/services/proc"
)

// DefaultPort is the node API port on the interconnect.
const DefaultPort = 7470

// NodeInfo is the body of GET /v1/node.
type NodeInfo struct {
	Node     int    `json:"node"`
	Hostname string `json:"hostname"`
	Cluster  string `json:"cluster"`
	Iface    string `json:"iface"`
	Addr     string `json:"addr"`
	RunLevel int    `json:"runlevel"`
	State    string `json:"state"`
	// Root is where the node's processes run chrooted: the shared root
	// once init mounted it ("" : the initramfs).
	Root   string  `json:"root,omitempty"`
	Uptime float64 `json:"uptime"`
	Load1  float64 `json:"load1"`
}

// Config configures the daemon.
type Config struct {
	// Listen is the TCP address to serve on.
	Listen string
	// LogRing, if set, keeps the daemon's log (Log writes into it) for
	// GET /v1/logs and the other nodes' locus logs.
	LogRing *logring.Ring
	// NodeFile is init's record of the node (JSON), read on each request.
	NodeFile string
	// ProcDir is /proc (a test may point elsewhere).
	ProcDir string
	// LoadDir is where the process service reads the load (proc.Config).
	LoadDir string
	// NetbootAdmin is the netboot service's admin API (its socket); on the
	// init node its registry is served read-only at GET /v1/netboot/nodes
	// (how the host follows PXE boots through the forwarded API port).
	NetbootAdmin string
	// CLMS, if set, runs this node's membership service; its view is
	// served at GET /v1/cluster and its transitions at GET
	// /v1/cluster/events.
	CLMS *clms.Config
	// ICS, if set, gives this node its ICS identity and endpoint.
	ICS *ICSConfig
	// CFSExport, if set, is the directory this node serves to the cluster
	// as its shared root (CFS, 9P2000.L) on CFSListen; only addresses of
	// nodes the membership knows and has not taken Down may connect.
	CFSExport string
	CFSListen string
	// CFSService, for a CFS with a standby (HA-CFS), is the service
	// address the other nodes reach the shared root at; it lives on
	// CFSIface of whichever node serves. Its server claims it.
	CFSService netip.Prefix
	CFSIface   string
	// CFSRelay, if set, is the unix socket where this node's CFS relay
	// takes init's FUSE mount of the shared root; the relay reaches the
	// service at CFSService from this node's address CFSLocal, and dials
	// again when the serving node goes Down.
	CFSRelay string
	// CFSPatience is how long the relay's calls wait for the CFS server
	// to come back before failing (0: as long as it takes).
	CFSPatience time.Duration
	CFSLocal    netip.Addr
	// CFSServer is the node that serves CFS at boot (node 1).
	CFSServer int
	// cfsMetrics counts this node's CFS server's requests, its relay's
	// connections and takeovers (set by Run).
	cfsMetrics *cfs.Metrics
	// CFSTakeover, on the standby, is the GPT name of the shared root's
	// partition on the disk it shares with CFSServer: when CFSServer is
	// fenced and Down, this node mounts it on CFSTakeoverDir, serves it
	// and claims the service address.
	CFSTakeover    string
	CFSTakeoverDir string
	// EventSocket, if set, is PID 1's event feed socket: the daemon
	// publishes there and serves a copy of the node's whole feed at GET
	// /v1/events. Without it the daemon keeps a feed of its own.
	EventSocket string
	// InsecureClear lets membership run without a credential: Raft in
	// clear, gossip unsealed, any host on the segment a voter. For tests
	// of the membership itself only; without it a node with no
	// credential does not start.
	InsecureClear bool
	// Socket, if set, is the API's unix socket for root on this node
	// (SocketPath); it serves every route to local root.
	Socket string
	// UserSocket, if set, is the API's unix socket for every user of
	// this node (UserSocketPath): each may read the cluster and run jobs
	// and send signals as itself.
	UserSocket string
	// ProcSocket, if set, is where init hands this daemon its FUSE mount
	// of the clusterwide /proc (proc.ProcSocket); ProcMount, if set, is
	// a directory the daemon mounts it on itself (tests).
	ProcSocket string
	ProcMount  string
	// DLM runs the kernel DLM's control daemon (services/dlm) with the
	// membership: on a node whose kernel has the dlm module.
	DLM bool
	// JobGrace is how long a job whose stand-in went away has between
	// SIGHUP and SIGKILL (0: proc.DefaultGrace).
	JobGrace time.Duration
	Log      *slog.Logger

	// events is where the daemon's subsystems publish.
	events events.Publisher
}

// Run serves until ctx ends. It returns once the listener is closed.
func Run(ctx context.Context, cfg Config, ready chan<- net.Addr) error {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.ProcDir == "" {
		cfg.ProcDir = "/proc"
	}
	cfg.cfsMetrics = cfs.NewMetrics(cfg.Node())
	feed, err := openFeed(ctx, &cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("locusd: listen on %s: %w", cfg.Listen, err)
	}
	ln = netutil.LimitListener(ln, maxConns)
	auth, err := newAPITLS()
	if err != nil {
		ln.Close()
		return fmt.Errorf("locusd: %w", err)
	}
	ln = tls.NewListener(ln, auth.config())
	var local net.Listener
	if cfg.Socket != "" {
		ul, err := privsock.Listen(cfg.Socket)
		if err != nil {
			ln.Close()
			return fmt.Errorf("locusd: API socket: %w", err)
		}
		local = peerListener{Listener: ul, log: cfg.Log, what: "API socket", admit: rootOnly}
	}
	var users net.Listener
	if cfg.UserSocket != "" {
		if users, err = listenUsers(cfg.UserSocket, cfg.Log); err != nil {
			ln.Close()
			if local != nil {
				local.Close()
			}
			return fmt.Errorf("locusd: %w", err)
		}
	}
	closeAll := func() {
		ln.Close()
		if local != nil {
			local.Close()
		}
		if users != nil {
			users.Close()
		}
	}
	streams := newStreamLimit()
	mux := http.NewServeMux()
	handle := func(pattern string, l level, h http.HandlerFunc) { mux.HandleFunc(pattern, auth.guard(l, cfg.Log, h)) }
	handle("GET /healthz", public, func(w http.ResponseWriter, r *http.Request) {
		info, err := ReadNodeInfo(cfg.NodeFile, cfg.ProcDir)
		if err != nil {
			http.Error(w, "locusd: not ready", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(Health{Node: info.Node, Cluster: info.Cluster, State: info.State, RunLevel: info.RunLevel})
	})
	handle("GET /v1/whoami", look, func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Context().Value(callerKey{}).(Caller)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(c)
	})
	handle("GET /v1/events", look, func(w http.ResponseWriter, r *http.Request) {
		if follow, _ := strconv.ParseBool(r.URL.Query().Get("follow")); follow {
			streams.wrap(func(w http.ResponseWriter, r *http.Request) { serveEvents(w, r, feed) })(w, r)
			return
		}
		serveEvents(w, r, feed)
	})
	handle("GET /v1/node", look, func(w http.ResponseWriter, r *http.Request) {
		info, err := ReadNodeInfo(cfg.NodeFile, cfg.ProcDir)
		if err != nil {
			cfg.Log.Warn("node info", "err", err)
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(info)
	})
	var icsNode atomic.Pointer[ics.Node]
	var memberRef atomic.Pointer[clms.Member]
	var nodeRoot atomic.Pointer[string] // the node file's root, as followNode last read it
	var mc clms.Config
	var procs *proc.Service
	var has *ha.Service
	var cip *lvs.Service
	var dlmd *dlm.Daemon
	if cfg.CLMS != nil && cfg.DLM {
		if dlmd, err = startDLM(cfg, &memberRef, &icsNode); err != nil {
			closeAll()
			return fmt.Errorf("locusd: %w", err)
		}
	}
	if cfg.CLMS != nil {
		mc = *cfg.CLMS
		if procs, err = startProc(cfg, &memberRef, &icsNode, &nodeRoot); err != nil {
			closeAll()
			return fmt.Errorf("locusd: %w", err)
		}
		if has, err = startHA(cfg, &memberRef, &icsNode, &nodeRoot, procs); err != nil {
			closeAll()
			return fmt.Errorf("locusd: %w", err)
		}
		if cip, err = startLVS(cfg, &memberRef, &icsNode, has); err != nil {
			closeAll()
			return fmt.Errorf("locusd: %w", err)
		}
		// Served from the start (this node's processes until the
		// membership has others): init mounts it in its root phase.
		if err := serveClusterProc(ctx, cfg, procs); err != nil {
			closeAll()
			return err
		}
	}
	if cfg.LogRing != nil {
		self := 0
		if cfg.CLMS != nil {
			self = cfg.CLMS.Node
		}
		cfg.LogRing.SetNode(self)
		logsRoutes(handle, streams, cfg.LogRing, self, &memberRef, &icsNode)
	}
	met := newMetrics(cfg, feed, &memberRef, procs, has, cip, dlmd)
	met.Registry().MustRegister(cfg.cfsMetrics)
	go met.Run(ctx)
	metricsRoutes(handle, met, &memberRef, &icsNode, cfg.Log.With("svc", "metrics"))
	if cfg.ICS != nil {
		var ca *cas
		var gossipKey []byte
		if cfg.ICS.CADir != "" {
			if ca, err = loadCAs(*cfg.ICS); err != nil {
				closeAll()
				return fmt.Errorf("locusd: %w", err)
			}
			if gossipKey, err = ics.LoadOrCreateGossipKey(cfg.ICS.CADir); err != nil {
				closeAll()
				return fmt.Errorf("locusd: %w", err)
			}
			handle("POST /v1/admission", public, admissionHandler(ca, *cfg.ICS, cfg.Log))
			handle("POST /v1/admin/issue", admin, issueHandler(ca, cfg.Log))
		}
		if cfg.ICS.IdentityFile != "" {
			f, err := ReadIdentityFile(cfg.ICS.IdentityFile)
			if err != nil {
				closeAll()
				return err
			}
			gossipKey = f.GossipKey
		}
		haveIdentity := func(id ics.Identity) error {
			if err := auth.setIdentity(id, cfg.ICS.Spec.Cluster.Name); err != nil {
				return err
			}
			cfg.Log.Info("API serving with the node's certificate: operators and nodes authenticate with theirs")
			return nil
		}
		setup := func(n *ics.Node) {
			n.Handle("shutdown", shutdownCall(cfg.NodeFile, cfg.Log))
			n.Handle("runlevel", func(ctx context.Context, from int, req []byte) ([]byte, error) {
				m := memberRef.Load()
				if m == nil {
					return nil, errors.New("locusd: no membership on this node")
				}
				return runLevelCall(m)(ctx, from, req)
			})
			n.Handle("node", func(ctx context.Context, from int, req []byte) ([]byte, error) {
				info, err := ReadNodeInfo(cfg.NodeFile, cfg.ProcDir)
				if err != nil {
					return nil, err
				}
				return json.Marshal(info)
			})
			if procs != nil {
				procs.Register(n)
			}
			if has != nil {
				has.Register(n)
			}
			if cip != nil {
				cip.Register(n)
			}
			if dlmd != nil {
				dlmd.Register(n)
			}
			n.Handle(methodMetrics, metricsCall(met))
			if cfg.LogRing != nil {
				n.Handle(methodLogs, logsCall(cfg.LogRing))
			}
			if gossipKey != nil {
				// Only to a caller with a certificate from the CA.
				n.Handle(gossipKeyMethod, func(context.Context, int, []byte) ([]byte, error) { return gossipKey, nil })
			}
		}
		if cfg.CLMS != nil {
			// Membership runs on this node's identity: Raft over mutual
			// TLS with its certificate, gossip sealed with the key that
			// only admitted nodes get. So it waits for admission.
			id, err := identity(ctx, *cfg.ICS, ca, cfg.Log)
			switch {
			case errors.Is(err, errNoSecret) && cfg.InsecureClear:
				cfg.Log.Warn("ICS: " + err.Error() + "; --insecure-clear: membership runs without TLS and an unsealed gossip (tests only)")
			case err != nil:
				closeAll()
				return fmt.Errorf("locusd: this node cannot join the cluster: %w", err)
			default:
				if err := haveIdentity(id); err != nil {
					closeAll()
					return err
				}
				n, err := serveICS(*cfg.ICS, id, cfg.Log, setup)
				if err != nil {
					closeAll()
					return fmt.Errorf("locusd: %w", err)
				}
				defer n.Close()
				icsNode.Store(n)
				if gossipKey == nil {
					if gossipKey, err = fetchGossipKey(ctx, n, cfg.Log); err != nil {
						closeAll()
						return fmt.Errorf("locusd: %w", err)
					}
				}
				server, client, err := id.MutualTLS()
				if err != nil {
					closeAll()
					return fmt.Errorf("locusd: %w", err)
				}
				mc.TLS, mc.GossipKey = &clms.TLS{Server: server, Client: client}, gossipKey
				// Certificates name each node's spec address: gossip
				// claims count only at that address.
				spec := cfg.ICS.Spec
				mc.CertAddr = func(n int) (netip.Addr, bool) {
					p, err := spec.NodeAddr(n)
					return p.Addr(), err == nil
				}
			}
		} else {
			ictx, cancel := context.WithCancel(ctx)
			defer cancel()
			go func() {
				id, err := identity(ictx, *cfg.ICS, ca, cfg.Log)
				if err != nil {
					cfg.Log.Error("ICS: this node runs without ICS", "err", err)
					return
				}
				if err := haveIdentity(id); err != nil {
					cfg.Log.Error("API", "err", err)
				}
				n, err := serveICS(*cfg.ICS, id, cfg.Log, setup)
				if err != nil {
					cfg.Log.Error("ICS", "err", err)
					return
				}
				icsNode.Store(n)
				<-ictx.Done()
				n.Close()
			}()
		}
	}
	var member *clms.Member
	if cfg.CLMS != nil {
		publishMembership(&mc, cfg.events)
		mc.FailureDown = met.ObserveDown
		m, err := clms.Start(mc)
		if err != nil {
			closeAll()
			return fmt.Errorf("locusd: %w", err)
		}
		defer m.Close()
		member = m
		memberRef.Store(m)
		publishTransitions(m, cfg.events)
		go followNode(ctx, cfg.NodeFile, cfg.ProcDir, m, &nodeRoot, cfg.Log)
		handle("POST /v1/runlevel", control, runLevelHandler(m, icsNode.Load, cfg.Log))
		handle("POST /v1/shutdown", control, shutdownHandler(cfg, m, icsNode.Load))
		// Calls in flight to a node end the moment it is Down.
		m.OnTransition(func(t clms.Transition) {
			if n := icsNode.Load(); n != nil && t.State == clms.Down {
				n.NodeDown(t.Node)
			}
		})
		cfg.publish(events.Event{Source: events.SourceLocusd, Kind: events.ServiceStarted, Name: events.ServiceMembership,
			Detail: m.GossipAddr(), Attrs: map[string]string{events.AttrTLS: strconv.FormatBool(mc.TLS != nil)}})
		cfg.Log.Info("membership started", "node", cfg.CLMS.Node, "gossip", m.GossipAddr(), "bootstrap", cfg.CLMS.Bootstrap, "tls", mc.TLS != nil)
		views := &viewCache{gather: func(ctx context.Context) ClusterView {
			return clusterView(ctx, m.Status(), cfg.Listen, icsNode.Load())
		}}
		handle("GET /v1/cluster", look, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(views.get(r.Context()))
		})
		// The membership alone, as this node sees it: no call to any other
		// node (init asks it every second for the cluster's run level).
		handle("GET /v1/cluster/status", look, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(m.Status())
		})
		handle("GET /v1/cluster/events", look, streams.wrap(func(w http.ResponseWriter, r *http.Request) {
			streamTransitions(w, r, m)
		}))
		go procs.Run(ctx)
		procRoutes(ctx, handle, procs, cfg.Log.With("svc", "proc"))
		if cip != nil {
			// The address is given up before the membership closes.
			var lvsDone sync.WaitGroup
			defer lvsDone.Wait()
			runLVS(ctx, cip, m, &lvsDone)
			lvsRoutes(handle, cip, cfg.Log.With("svc", "lvs"))
		}
		if has != nil {
			// Its instances stop before the membership closes.
			var haDone sync.WaitGroup
			defer haDone.Wait()
			runHA(ctx, has, m, &haDone)
			haRoutes(handle, has, cfg.Log.With("svc", "ha"))
		}
		if dlmd != nil {
			// Its lockspaces are left before the membership closes
			// (defers run last first): a clean leave, not a failure.
			var dlmDone sync.WaitGroup
			defer dlmDone.Wait()
			runDLM(ctx, dlmd, m, &dlmDone)
			dlmRoutes(handle, dlmd, cfg.Log.With("svc", "dlm"))
			cfg.publish(events.Event{Source: events.SourceLocusd, Kind: events.ServiceStarted, Name: events.ServiceDLM, Detail: dlm.DefaultLockspace})
		}
	}
	// The CFS roles end with the daemon: Run returns only once a
	// taken-over root is unmounted.
	cfsCtx, stopCFS := context.WithCancel(ctx)
	var cfsDone sync.WaitGroup
	defer func() {
		stopCFS()
		cfsDone.Wait()
	}()
	if err := startCFSRoles(cfsCtx, cfg, member, &cfsDone); err != nil {
		closeAll()
		return err
	}
	// Guarded also where no netboot is served, so that nobody learns
	// even which node serves it.
	handle("GET /v1/netboot/{what}", inspect, netbootProxy(cfg.NetbootAdmin).ServeHTTP)
	// No write timeout: event streams last; every other answer is quick.
	newServer := func() *http.Server {
		return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10, ErrorLog: slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn)}
	}
	srv := newServer()
	var localDone sync.WaitGroup
	for _, l := range []net.Listener{local, users} {
		if l == nil {
			continue
		}
		lsrv := newServer()
		lsrv.ConnContext = localCaller
		localDone.Add(1)
		go func() {
			defer localDone.Done()
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			lsrv.Shutdown(sctx)
		}()
		go lsrv.Serve(l) // ends at Shutdown above
	}
	defer localDone.Wait()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	cfg.publish(events.Event{Source: events.SourceLocusd, Kind: events.ServiceStarted, Name: events.ServiceLocusd, Detail: ln.Addr().String()})
	cfg.Log.Info("locusd serving", "addr", ln.Addr().String(), "socket", cfg.Socket, "user_socket", cfg.UserSocket)
	if ready != nil {
		ready <- ln.Addr()
	}
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("locusd: serve: %w", err)
	}
	return nil
}

// serveClusterProc serves the clusterwide /proc: init's mount handed
// over on cfg.ProcSocket, or one the daemon makes on cfg.ProcMount
// (unmounted when ctx ends).
func serveClusterProc(ctx context.Context, cfg Config, procs *proc.Service) error {
	if cfg.ProcSocket != "" {
		ln, err := privsock.Listen(cfg.ProcSocket)
		if err != nil {
			return fmt.Errorf("locusd: clusterwide /proc socket: %w", err)
		}
		go fusefd.Serve(ctx, ln.(*net.UnixListener), procs.ServeProcFD, cfg.Log) // ends with ctx
	}
	if cfg.ProcMount != "" {
		srv, err := procs.MountProc(cfg.ProcMount)
		if err != nil {
			return fmt.Errorf("locusd: %w", err)
		}
		context.AfterFunc(ctx, func() { srv.Unmount() }) // fs.Mount serves it already
	}
	return nil
}

// startProc makes the node's process service: jobs reach the nodes the
// membership has Up, over ICS once the node has it.
func startProc(cfg Config, member *atomic.Pointer[clms.Member], icsNode *atomic.Pointer[ics.Node], nodeRoot *atomic.Pointer[string]) (*proc.Service, error) {
	self := cfg.CLMS.Node
	up := func() []int {
		m := member.Load()
		if m == nil {
			return []int{self}
		}
		out := []int{self}
		for _, n := range m.Up() {
			if n != self {
				out = append(out, n)
			}
		}
		return out
	}
	// Jobs run where init runs the node's own processes: in the shared
	// root once the root phase mounted it (init says so in its node
	// file, which followNode reads each time init rewrites it).
	root := func() string {
		if r := nodeRoot.Load(); r != nil {
			return *r
		}
		return ""
	}
	return proc.New(proc.Config{Node: self, ProcDir: cfg.ProcDir, LoadDir: cfg.LoadDir, Up: up, ICS: icsNode.Load, Root: root, Grace: cfg.JobGrace,
		Log: cfg.Log.With("svc", "proc")})
}

// admittedAddr says whether a is the interconnect address of a node in
// st that is not Down.
func admittedAddr(st clms.Status, a netip.Addr) bool {
	for _, n := range st.Nodes {
		if na, ok := n.IP(); ok && na == a && n.State != clms.Down && n.State != clms.NeverUp {
			return true
		}
	}
	return false
}

// ReadNodeInfo reads init's node file and adds uptime and load.
func ReadNodeInfo(nodeFile, procDir string) (*NodeInfo, error) {
	b, err := os.ReadFile(nodeFile)
	if err != nil {
		return nil, fmt.Errorf("locusd: node file: %w", err)
	}
	var info NodeInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("locusd: node file %s: %w", nodeFile, err)
	}
	if b, err := os.ReadFile(procDir + "/uptime"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			info.Uptime, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	if b, err := os.ReadFile(procDir + "/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			info.Load1, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	return &info, nil
}

// netbootProxy answers GET /v1/netboot/nodes and /v1/netboot/leases from
// the netboot admin API at admin; a node not serving netboot answers 404.
func netbootProxy(admin string) http.Handler {
	client, base := privsock.HTTPClient(admin, 3*time.Second)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		what := r.PathValue("what")
		if admin == "" {
			http.Error(w, "this node does not serve netboot", http.StatusNotFound)
			return
		}
		if what != "nodes" && what != "leases" && what != "metrics" {
			http.NotFound(w, r)
			return
		}
		resp, err := client.Get(base + "/v1/" + what)
		if err != nil {
			http.Error(w, "this node does not serve netboot", http.StatusNotFound)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, io.LimitReader(resp.Body, 16<<20))
	})
}

// streamTransitions writes the transitions this node applied, then each
// new one as it is applied, one JSON object per line, until the client
// goes away.
func streamTransitions(w http.ResponseWriter, r *http.Request, m *clms.Member) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	fl, _ := w.(http.Flusher)
	ch := make(chan clms.Transition, 1024)
	sub := m.Subscribe(ch)
	defer sub()
	enc := json.NewEncoder(w)
	last := uint64(0)
	for _, t := range m.History() {
		enc.Encode(t)
		last = t.ID
	}
	if fl != nil {
		fl.Flush()
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case t := <-ch:
			if t.ID <= last {
				continue
			}
			last = t.ID
			if err := enc.Encode(t); err != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
	}
}

// ClusterView is GET /v1/cluster: this node's membership view, each Up
// node's row completed with what its own daemon says (run level, uptime,
// hostname).
type ClusterView struct {
	clms.Status
	Nodes []ClusterNode `json:"nodes"`
}

// ClusterNode is one row of the cluster view.
type ClusterNode struct {
	clms.NodeStatus
	Hostname string  `json:"hostname,omitempty"`
	RunLevel int     `json:"runlevel,omitempty"`
	Uptime   float64 `json:"uptime,omitempty"`
	// Unreachable says why a node that is Up did not answer.
	Unreachable string `json:"unreachable,omitempty"`
	// Via is how it was asked: "ics" (mutual TLS) or "health" (its
	// daemon's /healthz, in a cluster without TLS).
	Via string `json:"via,omitempty"`
}

// nodeInfo asks node n for its info: over ICS when this node has it, else
// its daemon's HTTP API at addr.
func nodeInfo(ctx context.Context, icsNode *ics.Node, n int, addr string) (*NodeInfo, error) {
	if icsNode == nil {
		// No identity (a cluster without TLS): all another daemon
		// answers is its health.
		h, err := FetchHealth(ctx, addr)
		if err != nil {
			return nil, err
		}
		return h.NodeInfo(), nil
	}
	b, err := icsNode.Call(ctx, n, "node", nil)
	if err != nil {
		return nil, err
	}
	var info NodeInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("locusd: node %d over ICS: %w", n, err)
	}
	return &info, nil
}

// clusterView asks every Up node's daemon (on the port this one listens
// on) for its node info, in parallel, a second at most.
func clusterView(ctx context.Context, st clms.Status, listen string, icsNode *ics.Node) ClusterView {
	_, port, _ := net.SplitHostPort(listen)
	if port == "" {
		port = strconv.Itoa(DefaultPort)
	}
	v := ClusterView{Status: st, Nodes: make([]ClusterNode, len(st.Nodes))}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	done := make(chan struct{}, len(st.Nodes))
	for i, n := range st.Nodes {
		v.Nodes[i].NodeStatus = n
		if n.State != clms.Up || n.Addr == "" {
			done <- struct{}{}
			continue
		}
		host, _, err := net.SplitHostPort(n.Addr)
		if err != nil {
			host = n.Addr
		}
		go func(row *ClusterNode) {
			defer func() { done <- struct{}{} }()
			info, err := nodeInfo(ctx, icsNode, row.Node, net.JoinHostPort(host, port))
			row.Via = "health"
			if icsNode != nil {
				row.Via = "ics"
			}
			if err != nil {
				row.Unreachable = err.Error()
				return
			}
			row.Hostname, row.RunLevel, row.Uptime = info.Hostname, info.RunLevel, info.Uptime
		}(&v.Nodes[i])
	}
	for range st.Nodes {
		<-done
	}
	return v
}
