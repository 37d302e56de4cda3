package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/locusd"
	"github.com/locus-ssi/locus/services/lvs"
)

// fakeCluster answers the paths the hub asks, as a daemon would; its
// transitions stream stays open until the test ends it.
type fakeCluster struct {
	mu          sync.Mutex
	status      locusd.ClusterView
	director    int
	transitions chan clms.Transition
}

func (f *fakeCluster) Get(ctx context.Context, path string, v any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var src any
	switch path {
	case "/v1/cluster":
		src = f.status
	case "/v1/clusterip":
		src = lvs.Report{Address: "10.77.0.100", Director: lvs.Director{Node: f.director}}
	case "/v1/netboot/nodes":
		return fmt.Errorf("netboot service: 404 Not Found")
	default:
		src = map[string]any{}
	}
	b, _ := json.Marshal(src)
	return json.Unmarshal(b, v)
}

func (f *fakeCluster) Open(ctx context.Context, path string) (*http.Response, error) {
	if node, ok := strings.CutPrefix(path, "/v1/metrics?node="); ok {
		text := "# TYPE locus_cfs_clients gauge\nlocus_cfs_clients{node=\"" + node + "\"} 0\n"
		switch node {
		case "1":
			text = "# TYPE locus_cfs_clients gauge\nlocus_cfs_clients{node=\"1\"} 2\n" +
				"# TYPE locus_cfs_op_seconds histogram\nlocus_cfs_op_seconds_bucket{node=\"1\",op=\"walk\",le=\"+Inf\"} 40\nlocus_cfs_op_seconds_sum{node=\"1\",op=\"walk\"} 0.1\nlocus_cfs_op_seconds_count{node=\"1\",op=\"walk\"} 40\n"
		default:
			text += "# TYPE locus_cfs_relay_connections_total counter\nlocus_cfs_relay_connections_total{node=\"" + node + "\"} 1\n"
		}
		return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader(text))}, nil
	}
	pr, pw := io.Pipe()
	go func() {
		enc := json.NewEncoder(pw)
		for {
			select {
			case <-ctx.Done():
				pw.CloseWithError(ctx.Err())
				return
			case t := <-f.transitions:
				enc.Encode(t)
			}
		}
	}()
	return &http.Response{StatusCode: http.StatusOK, Body: pr}, nil
}

func (f *fakeCluster) set(master int, states map[int]clms.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = locusd.ClusterView{Status: clms.Status{Master: master, Quorum: true}}
	for n := 1; n <= len(states); n++ {
		f.status.Nodes = append(f.status.Nodes, locusd.ClusterNode{NodeStatus: clms.NodeStatus{NodeRecord: clms.NodeRecord{Node: n, State: states[n]}}})
	}
}

func newTestServer(t *testing.T) (*fakeCluster, *Server, *httptest.Server) {
	t.Helper()
	f := &fakeCluster{transitions: make(chan clms.Transition), director: 2}
	f.set(1, map[int]clms.State{1: clms.Up, 2: clms.Up, 3: clms.Up})
	s, err := New(f, "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() { hs.Close(); cancel(); <-done })
	return f, s, hs
}

// views reads the SSE stream's views as they come.
func views(t *testing.T, body io.Reader) <-chan View {
	ch := make(chan View, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var v View
				if json.Unmarshal([]byte(d), &v) == nil {
					ch <- v
				}
			}
		}
	}()
	return ch
}

func waitView(t *testing.T, ch <-chan View, what string, ok func(View) bool) View {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case v, open := <-ch:
			if !open {
				t.Fatalf("stream ended before %s", what)
			}
			if ok(v) {
				return v
			}
		case <-timeout:
			t.Fatalf("no view with %s within 10s", what)
		}
	}
}

func nodeState(v View, n int) clms.State {
	if v.Cluster == nil {
		return ""
	}
	for _, r := range v.Cluster.Nodes {
		if r.Node == n {
			return r.State
		}
	}
	return ""
}

// TestStreamPushesTransitionAtOnce: a transition on the cluster's stream
// is on the page's stream without waiting for the next round, with its
// line in the timeline; a director change is a failover line.
func TestStreamPushesTransitionAtOnce(t *testing.T) {
	f, s, hs := newTestServer(t)
	req, _ := http.NewRequest("GET", hs.URL+"/api/stream", nil)
	req.Header.Set("Authorization", "Bearer "+s.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	ch := views(t, resp.Body)
	v := waitView(t, ch, "three nodes Up and the shared root", func(v View) bool { return nodeState(v, 3) == clms.Up && len(v.Root) == 3 })
	if r := v.Root; r[0].Node != 1 || r[0].Clients != 2 || r[0].Ops != 40 || r[1].RelayConnections != 1 || r[2].RelayConnections != 1 {
		t.Errorf("shared root: %+v, want node 1 serving 2 clients (40 requests), nodes 2 and 3 relaying", r)
	}
	if v.Missing["boot"] == "" {
		t.Errorf("a cluster without a netboot registry: missing says nothing: %+v", v.Missing)
	}
	f.set(1, map[int]clms.State{1: clms.Up, 2: clms.Up, 3: clms.Down})
	f.mu.Lock()
	f.director = 3
	f.mu.Unlock()
	sent := time.Now()
	f.transitions <- clms.Transition{ID: 9, Node: 3, State: clms.Down, At: sent, Master: 1, Reason: "failure detected"}
	v = waitView(t, ch, "node 3 Down", func(v View) bool { return nodeState(v, 3) == clms.Down })
	if d := time.Since(sent); d > pollEvery/2 {
		t.Errorf("node 3 Down on the stream %v after the transition: not pushed at once", d)
	}
	if len(v.Timeline) == 0 || v.Timeline[0].Kind != EntryTransition || v.Timeline[0].Node != 3 || v.Timeline[0].State != "Down" || !strings.Contains(v.Timeline[0].Text, "failure detected") {
		t.Errorf("timeline: %+v", v.Timeline)
	}
	v = waitView(t, ch, "the director's change", func(v View) bool {
		for _, e := range v.Timeline {
			if e.Kind == EntryDirector && strings.Contains(e.Text, "director node 3 (was node 2)") {
				return true
			}
		}
		return false
	})
	// The same transition again (the stream after a reconnect) is not
	// a second line.
	f.transitions <- clms.Transition{ID: 9, Node: 3, State: clms.Down, At: sent, Master: 1}
	f.transitions <- clms.Transition{ID: 10, Node: 3, State: clms.ComingUp, At: sent.Add(time.Second), Master: 1}
	v = waitView(t, ch, "node 3's next transition", func(v View) bool {
		for _, e := range v.Timeline {
			if e.State == "ComingUp" {
				return true
			}
		}
		return false
	})
	n := 0
	for _, e := range v.Timeline {
		if e.Kind == EntryTransition && e.Node == 3 && e.State == "Down" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("node 3's Down %d times in the timeline: %+v", n, v.Timeline)
	}
	// Another cluster behind the endpoint (its ids from 1 again): its
	// transitions are not taken for ones already seen.
	f.transitions <- clms.Transition{ID: 9, Node: 1, State: clms.ComingUp, At: sent.Add(time.Hour), Master: 1, Reason: "joined"}
	v = waitView(t, ch, "the new cluster's transition 9", func(v View) bool {
		return len(v.Timeline) > 0 && v.Timeline[len(v.Timeline)-1].State == "ComingUp" && v.Timeline[len(v.Timeline)-1].Node == 1
	})
	for _, e := range v.Timeline {
		if e.Kind == EntryTransition && e.Node == 3 {
			t.Errorf("the old cluster's transitions are still in the new one's timeline: %+v", v.Timeline)
			break
		}
	}
}

// TestRefusesWithoutToken: the page, the view and the stream are served
// only with the token (once in the URL, then the cookie it sets), and
// only under a loopback Host.
func TestRefusesWithoutToken(t *testing.T) {
	_, s, hs := newTestServer(t)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/", "/api/view", "/api/stream", "/static/app.js", "/?token=wrong"} {
		resp, err := noRedirect.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %s, want 401", path, resp.Status)
		}
	}
	resp, err := noRedirect.Get(hs.URL + "/?token=" + s.Token())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == cookieName {
			cookie = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("GET /?token=: %s, cookie %+v: want a redirect setting an HttpOnly, SameSite=Strict cookie", resp.Status, cookie)
	}
	if resp.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("Referrer-Policy %q: the token would leak in a Referer", resp.Header.Get("Referrer-Policy"))
	}
	get := func(path, host string) *http.Response {
		req, _ := http.NewRequest("GET", hs.URL+path, nil)
		req.AddCookie(cookie)
		if host != "" {
			req.Host = host
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for _, path := range []string{"/", "/static/app.js", "/api/view"} {
		if r := get(path, ""); r.StatusCode != http.StatusOK {
			t.Errorf("GET %s with the cookie: %s", path, r.Status)
		}
	}
	if r := get("/api/view", "evil.example:17480"); r.StatusCode != http.StatusForbidden {
		t.Errorf("GET /api/view under Host evil.example: %s, want 403", r.Status)
	}
	if r := get("/api/view", "localhost:17480"); r.StatusCode != http.StatusOK {
		t.Errorf("GET /api/view under Host localhost: %s", r.Status)
	}
	req, _ := http.NewRequest("POST", hs.URL+"/api/view", nil)
	req.AddCookie(cookie)
	if r, err := noRedirect.Do(req); err != nil || r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/view: %v %v, want 405 (the dashboard only reads)", r.Status, err)
	}
}

// TestPageGoneLeavesNothing: a page that goes away mid-stream is
// unsubscribed, and a page that does not read does not hold the hub up.
func TestPageGoneLeavesNothing(t *testing.T) {
	f, s, hs := newTestServer(t)
	open := func() (*http.Response, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+"/api/stream", nil)
		req.Header.Set("Authorization", "Bearer "+s.Token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp, cancel
	}
	stalled, stop := open() // never read
	defer stop()
	defer stalled.Body.Close()
	resp, cancel := open()
	ch := views(t, resp.Body)
	waitView(t, ch, "a view", func(v View) bool { return v.Cluster != nil })
	if n := s.Subscribers(); n != 2 {
		t.Fatalf("%d subscribers, want 2", n)
	}
	// Many changes while one page reads nothing: the other still gets
	// the last one.
	for i := 0; i < 50; i++ {
		f.transitions <- clms.Transition{ID: uint64(100 + i), Node: 2, State: clms.Up, At: time.Now()}
	}
	f.set(1, map[int]clms.State{1: clms.Up, 2: clms.Down, 3: clms.Up})
	f.transitions <- clms.Transition{ID: 200, Node: 2, State: clms.Down, At: time.Now()}
	waitView(t, ch, "node 2 Down", func(v View) bool { return nodeState(v, 2) == clms.Down })
	cancel()
	resp.Body.Close()
	stop()
	stalled.Body.Close()
	for deadline := time.Now().Add(5 * time.Second); s.Subscribers() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers left after both pages went away", s.Subscribers())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FuzzParseRoot: whatever a node's metrics say, ParseRoot answers or
// errs; it does not crash.
func FuzzParseRoot(f *testing.F) {
	f.Add("# TYPE locus_cfs_clients gauge\nlocus_cfs_clients{node=\"1\"} 3\n")
	f.Add("locus_cfs_relay_connections_total 2\n")
	f.Add("# TYPE locus_cfs_op_seconds histogram\nlocus_cfs_op_seconds_count 9\n")
	f.Add("garbage{\n")
	f.Fuzz(func(t *testing.T, text string) {
		ParseRoot(strings.NewReader(text))
	})
}
