// Package dashboard is locus dashboard: a web view of the whole cluster,
// served on the workstation's loopback (as kubectl proxy is) and fed from
// the cluster with the operator's credential.
//
// One hub follows the cluster for every open page: the membership's
// transitions as a stream (GET /v1/cluster/events), and every second the
// cluster view, the load vectors and the netboot registry (PXE nodes'
// boot stages), every few seconds the services, the cluster IP and the
// busiest processes. What it sees is one View; each page gets the newest
// over server-sent events as soon as it changes, and a transition is
// pushed at once (a killed node turns Down on the page without a reload).
//
// The server answers GETs of its own page and view only: it never passes
// a request on to the cluster, so it controls nothing. Since it holds the
// operator's credential, a page is served only to a browser that came
// with the token the command printed (then kept as a same-site cookie),
// and only under a loopback Host (no DNS rebinding).
package dashboard

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/locus-ssi/locus/netboot"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/ha"
	"github.com/locus-ssi/locus/services/locusd"
	"github.com/locus-ssi/locus/services/lvs"
	"github.com/locus-ssi/locus/services/proc"
)

//go:embed static
var static embed.FS

// Source is how the hub reaches the cluster: a *locusd.Client.
type Source interface {
	Get(ctx context.Context, path string, v any) error
	Open(ctx context.Context, path string) (*http.Response, error)
}

// View is what the page shows: the cluster as the hub last saw it.
type View struct {
	At       time.Time `json:"at"`
	Endpoint string    `json:"endpoint"`
	// Error says why the cluster did not answer the last round.
	Error     string              `json:"error,omitempty"`
	Cluster   *locusd.ClusterView `json:"cluster,omitempty"`
	Loads     []proc.Load         `json:"loads,omitempty"`
	Boot      []netboot.Contact   `json:"boot,omitempty"`
	Services  []ha.ServiceReport  `json:"services,omitempty"`
	ClusterIP *lvs.Report         `json:"clusterip,omitempty"`
	Procs     []proc.Process      `json:"procs,omitempty"`
	ProcCount int                 `json:"proc_count"`
	// Root is the shared root as each Up node's CFS metrics show it:
	// the node that serves it and its clients, the nodes that relay.
	Root     []RootNode `json:"root,omitempty"`
	Timeline []Entry    `json:"timeline"`
	// Missing says which parts did not come the last round, and why
	// (a cluster without netboot on this endpoint, say).
	Missing map[string]string `json:"missing,omitempty"`

	roles    map[string]string    // last seen: master, director, service placements
	seen     map[uint64]time.Time // transition ids in the timeline, with their times
	slowLast time.Time            // when services, cluster IP and processes were last asked
}

// RootNode is one node's part in the shared root (CFS).
type RootNode struct {
	Node int `json:"node"`
	// Clients is how many connections its CFS server has (0: it does
	// not serve).
	Clients int `json:"clients"`
	// Ops is how many 9P requests its server answered.
	Ops uint64 `json:"ops"`
	// RelayConnections is how many upstream connections its relay made
	// (0: it does not relay; more than 1: it failed over).
	RelayConnections int `json:"relay_connections"`
}

// Entry is one line of the timeline: a membership transition, or a
// failover the hub saw (master, cluster IP director, service placement).
type Entry struct {
	At   time.Time `json:"at"`
	Kind string    `json:"kind"` // transition, master, director, service
	Node int       `json:"node,omitempty"`
	// State is a transition's new state.
	State string `json:"state,omitempty"`
	Text  string `json:"text"`
}

// Timeline kinds.
const (
	EntryTransition = "transition"
	EntryMaster     = "master"
	EntryDirector   = "director"
	EntryService    = "service"
)

const (
	keepEntries = 200
	topProcs    = 20
	// pollEvery is the round of the cluster view, loads and boot stages;
	// slowEvery that of services, cluster IP and processes (a whole ps
	// of every node is real work under TCG).
	pollEvery = time.Second
	slowEvery = 3 * time.Second
	heartbeat = 15 * time.Second
)

// Server is the dashboard: its hub and its HTTP handler.
type Server struct {
	src      Source
	endpoint string
	log      *slog.Logger
	token    string
	poke     chan struct{}

	mu   sync.Mutex
	view View
	raw  []byte
	subs map[chan []byte]struct{}
}

// New makes a dashboard fed from src (endpoint names it on the page).
func New(src Source, endpoint string, log *slog.Logger) (*Server, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("dashboard: token: %w", err)
	}
	s := &Server{src: src, endpoint: endpoint, log: log, token: hex.EncodeToString(b),
		poke: make(chan struct{}, 1), subs: map[chan []byte]struct{}{}}
	s.view = View{Endpoint: endpoint, Timeline: []Entry{}, roles: map[string]string{}, seen: map[uint64]time.Time{}}
	s.raw, _ = json.Marshal(s.view)
	return s, nil
}

// Token is what a browser must bring once (?token=) to be served.
func (s *Server) Token() string { return s.token }

// Subscribers is how many pages follow the view now.
func (s *Server) Subscribers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

// Run follows the cluster until ctx ends.
func (s *Server) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.followTransitions(ctx)
	}()
	defer wg.Wait()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		s.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.poke:
		}
	}
}

// followTransitions reads the membership's transitions as they commit,
// the history first, again after the stream breaks (a second later).
func (s *Server) followTransitions(ctx context.Context) {
	for ctx.Err() == nil {
		err := s.readTransitions(ctx)
		if ctx.Err() != nil {
			return
		}
		s.log.Debug("dashboard: transitions stream ended; again in a second", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (s *Server) readTransitions(ctx context.Context) error {
	resp, err := s.src.Open(ctx, "/v1/cluster/events")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var t clms.Transition
		if err := dec.Decode(&t); err != nil {
			return fmt.Errorf("dashboard: transitions: %w", err)
		}
		s.mu.Lock()
		added := s.view.addTransition(t)
		s.mu.Unlock()
		if added {
			select {
			case s.poke <- struct{}{}:
			default:
			}
		}
	}
}

func (v *View) addTransition(t clms.Transition) bool {
	if at, ok := v.seen[t.ID]; ok {
		if at.Equal(t.At) {
			return false // the history again, after a reconnect
		}
		// The same id at another time: another cluster behind the
		// endpoint (rebuilt, its ids from 1 again). Its timeline only.
		v.seen, v.roles, v.Timeline = map[uint64]time.Time{}, map[string]string{}, []Entry{}
	}
	v.seen[t.ID] = t.At
	text := fmt.Sprintf("node %d %s", t.Node, t.State)
	if t.Reason != "" {
		text += " (" + t.Reason + ")"
	}
	if t.Master != 0 {
		text += fmt.Sprintf(", committed by node %d", t.Master)
	}
	v.add(Entry{At: t.At, Kind: EntryTransition, Node: t.Node, State: string(t.State), Text: text})
	return true
}

// add puts e in the timeline, newest first, keeping the last entries.
func (v *View) add(e Entry) {
	i := sort.Search(len(v.Timeline), func(i int) bool { return !v.Timeline[i].At.After(e.At) })
	v.Timeline = slices.Insert(v.Timeline, i, e)
	if len(v.Timeline) > keepEntries {
		v.Timeline = v.Timeline[:keepEntries]
	}
}

// refresh asks the cluster for what the view shows and, if it changed,
// sends it to every page.
func (s *Server) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s.mu.Lock()
	slow := time.Since(s.view.slowLast) >= slowEvery
	s.mu.Unlock()
	var (
		cv    locusd.ClusterView
		loads []proc.Load
		boot  []netboot.Contact
		svcs  locusd.ServicesReply
		cip   lvs.Report
		ps    locusd.PSReply
	)
	missing := map[string]string{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ask := func(name, path string, v any) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.src.Get(ctx, path, v); err != nil {
				mu.Lock()
				missing[name] = err.Error()
				mu.Unlock()
			}
		}()
	}
	ask("cluster", "/v1/cluster", &cv)
	ask("loads", "/v1/proc/loads", &loads)
	ask("boot", "/v1/netboot/nodes", &boot)
	if slow {
		ask("services", "/v1/services", &svcs)
		ask("clusterip", "/v1/clusterip", &cip)
		ask("procs", "/v1/proc/ps", &ps)
	}
	wg.Wait()
	if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) {
		return
	}
	var root []RootNode
	if _, bad := missing["cluster"]; slow && !bad {
		root = s.rootOf(ctx, &cv)
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	v := &s.view
	v.At, v.Error, v.Missing = now, "", nil
	if err, bad := missing["cluster"]; bad {
		v.Error = err
	} else {
		v.Cluster = &cv
		v.note(now, "master", strconv.Itoa(cv.Master), func(was string) string {
			return fmt.Sprintf("master: node %s (was node %s)", dashZero(strconv.Itoa(cv.Master)), dashZero(was))
		})
	}
	if _, bad := missing["loads"]; !bad {
		v.Loads = loads
	}
	if _, bad := missing["boot"]; !bad {
		v.Boot = boot
	}
	if slow {
		v.slowLast = now
		if _, bad := missing["services"]; !bad {
			v.Services = svcs.Services
			for _, sv := range svcs.Services {
				var on []string
				for _, in := range sv.Running {
					if in.Node > 0 {
						on = append(on, strconv.Itoa(in.Node))
					}
				}
				slices.Sort(on)
				where := strings.Join(on, ",")
				v.note(now, "service "+sv.Name, where, func(was string) string {
					return fmt.Sprintf("service %s: on node(s) %s (was %s)", sv.Name, dashZero(where), dashZero(was))
				})
			}
		}
		if _, bad := missing["clusterip"]; !bad {
			v.ClusterIP = &cip
			d := strconv.Itoa(cip.Director.Node)
			v.note(now, "director", d, func(was string) string {
				return fmt.Sprintf("cluster IP %s: director node %s (was node %s)", cip.Address, dashZero(d), dashZero(was))
			})
		}
		v.Root = root
		if _, bad := missing["procs"]; !bad {
			p := ps.Processes
			sort.SliceStable(p, func(i, j int) bool { return p[i].CPU > p[j].CPU })
			v.ProcCount = len(p)
			v.Procs = p[:min(len(p), topProcs)]
		}
	}
	for k, e := range missing {
		if k != "cluster" {
			if v.Missing == nil {
				v.Missing = map[string]string{}
			}
			v.Missing[k] = e
		}
	}
	raw, err := json.Marshal(v)
	if err != nil {
		s.log.Error("dashboard: view", "err", err)
		return
	}
	s.raw = raw
	for ch := range s.subs {
		send(ch, raw)
	}
}

// rootOf asks every Up node for its metrics (through the endpoint, in
// parallel) and reads its CFS part from them: its server's clients and
// requests, its relay's connections. A node that does not answer is left
// out.
func (s *Server) rootOf(ctx context.Context, cv *locusd.ClusterView) []RootNode {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var out []RootNode
	for _, n := range cv.Nodes {
		if n.State != clms.Up {
			continue
		}
		wg.Add(1)
		go func(node int) {
			defer wg.Done()
			resp, err := s.src.Open(ctx, fmt.Sprintf("/v1/metrics?node=%d", node))
			if err != nil {
				return
			}
			defer resp.Body.Close()
			r, err := ParseRoot(resp.Body)
			if err != nil {
				s.log.Debug("dashboard: node metrics", "node", node, "err", err)
				return
			}
			r.Node = node
			mu.Lock()
			out = append(out, r)
			mu.Unlock()
		}(n.Node)
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// ParseRoot reads a node's CFS part from its metrics (Prometheus's text
// format): locus_cfs_clients, the count of locus_cfs_op_seconds, and
// locus_cfs_relay_connections_total.
func ParseRoot(r io.Reader) (RootNode, error) {
	var out RootNode
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(io.LimitReader(r, 4<<20))
	if err != nil {
		return out, fmt.Errorf("dashboard: metrics: %w", err)
	}
	if f := fams["locus_cfs_clients"]; f != nil {
		for _, m := range f.Metric {
			out.Clients += int(m.GetGauge().GetValue())
		}
	}
	if f := fams["locus_cfs_op_seconds"]; f != nil {
		for _, m := range f.Metric {
			out.Ops += m.GetHistogram().GetSampleCount()
		}
	}
	if f := fams["locus_cfs_relay_connections_total"]; f != nil {
		for _, m := range f.Metric {
			out.RelayConnections += int(m.GetCounter().GetValue())
		}
	}
	return out, nil
}

// note adds a timeline entry when what holds role (master, director,
// where a service runs) changed since the last round; the first sight
// of it is not a change.
func (v *View) note(at time.Time, role, now string, text func(was string) string) {
	was, ok := v.roles[role]
	v.roles[role] = now
	if !ok || was == now {
		return
	}
	kind := EntryMaster
	switch {
	case role == "director":
		kind = EntryDirector
	case strings.HasPrefix(role, "service "):
		kind = EntryService
	}
	v.add(Entry{At: at, Kind: kind, Text: text(was)})
}

func dashZero(s string) string {
	if s == "" || s == "0" {
		return "none"
	}
	return s
}

// send gives ch the newest view, dropping one a slow page has not taken.
func send(ch chan []byte, raw []byte) {
	for {
		select {
		case ch <- raw:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

// Handler serves the page, its assets, the view and the stream.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	assets, _ := fs.Sub(static, "static")
	files := http.FileServerFS(assets)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		if t := r.URL.Query().Get("token"); t != "" {
			if !s.tokenOK(t) {
				http.Error(w, "dashboard: wrong token: open the address locus dashboard printed", http.StatusUnauthorized)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: cookieName, Value: s.token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		if !s.authorized(r) {
			http.Error(w, "dashboard: no token: open the address locus dashboard printed", http.StatusUnauthorized)
			return
		}
		files.ServeHTTP(w, r)
	})
	mux.Handle("GET /static/", s.guard(http.StripPrefix("/static/", files)))
	mux.Handle("GET /api/view", s.guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		raw := s.raw
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(raw)
	})))
	mux.Handle("GET /api/stream", s.guard(http.HandlerFunc(s.stream)))
	return s.hostOnly(mux)
}

const cookieName = "locus_dashboard"

func (s *Server) tokenOK(t string) bool {
	return subtle.ConstantTimeCompare([]byte(t), []byte(s.token)) == 1
}

func (s *Server) authorized(r *http.Request) bool {
	c, err := r.Cookie(cookieName)
	if err == nil && s.tokenOK(c.Value) {
		return true
	}
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && s.tokenOK(bearer)
}

func (s *Server) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			http.Error(w, "dashboard: no token: open the address locus dashboard printed", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// hostOnly refuses a request whose Host is not a loopback address or
// localhost (a page of another site that rebinds its name to 127.0.0.1),
// and sets the headers every answer carries.
func (s *Server) hostOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		ip := net.ParseIP(strings.Trim(host, "[]"))
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			http.Error(w, fmt.Sprintf("dashboard: Host %q: served on loopback only", r.Host), http.StatusForbidden)
			return
		}
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// stream sends the view as server-sent events ("view"), the newest at
// once and then each change, until the page goes away.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "dashboard: streaming not supported", http.StatusInternalServerError)
		return
	}
	ch := make(chan []byte, 1)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	raw := s.raw
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, ch)
		s.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	fmt.Fprint(w, "retry: 1000\n\n")
	beat := time.NewTicker(heartbeat)
	defer beat.Stop()
	for {
		if raw != nil {
			if _, err := fmt.Fprintf(w, "event: view\ndata: %s\n\n", raw); err != nil {
				return
			}
			raw = nil
		}
		fl.Flush()
		select {
		case <-r.Context().Done():
			return
		case raw = <-ch:
		case <-beat.C:
			if _, err := fmt.Fprint(w, ": alive\n\n"); err != nil {
				return
			}
		}
	}
}
