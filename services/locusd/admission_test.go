package locusd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/internal/locusconfig"

	"github.com/locus-ssi/locus/netboot"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/ics"
	"github.com/locus-ssi/locus/services/logring"
)

// TestAdmissionAndICS runs an init node and a joining node in this
// process on 127.0.80.N: the joining node redeems the secret its boot
// script carried for a certificate from the init node's CA, and the
// cluster view is then gathered over ICS (mutual TLS). A wrong secret, a
// reused one, and a secret for another node number are refused.
func TestAdmissionAndICS(t *testing.T) {
	spec, err := clusterspec.Parse("locus.yaml", []byte("cluster: {name: adm}\ninterconnect: {subnet: 127.0.80.0/24}\n"))
	if err != nil {
		t.Fatal(err)
	}
	// The netboot service's secrets: a real registry behind its admin
	// API's /v1/admit.
	reg, _ := netboot.OpenRegistry(spec, "", nil)
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ MAC, Secret, From string }
		json.NewDecoder(r.Body).Decode(&req)
		mac, _ := net.ParseMAC(req.MAC)
		from, _ := netip.ParseAddr(req.From)
		n, err := reg.RedeemSecret(mac, req.Secret, from)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		json.NewEncoder(w).Encode(map[string]int{"node": n})
	}))
	defer admin.Close()
	mac2, _ := net.ParseMAC("52:54:00:00:00:02")
	node2Addr := netip.MustParseAddr("127.0.80.2")
	secret := reg.IssueSecret(mac2, 2, node2Addr)

	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := func(n int, ic ICSConfig) chan error {
		nodeFile := filepath.Join(dir, fmt.Sprintf("node%d.json", n))
		os.WriteFile(nodeFile, []byte(fmt.Sprintf(`{"node":%d,"hostname":"n%d","runlevel":3}`, n, n)), 0o644)
		addr := fmt.Sprintf("127.0.80.%d", n)
		ic.Node, ic.Addr, ic.Spec = n, addr, spec
		ring := logring.New(0)
		cfg := Config{Listen: addr + ":7470", NodeFile: nodeFile, ICS: &ic, LogRing: ring,
			Log: slog.New(logring.NewHandler(slog.NewTextHandler(io.Discard, nil), ring)).With("svc", "locusd"),
			CLMS: &clms.Config{Node: n, Addr: addr, RaftPort: clms.DefaultRaftPort, GossipPort: clms.DefaultGossipPort,
				Bootstrap: n == 1, Join: []string{"127.0.80.1:7473"}}}
		done := make(chan error, 1)
		go func() { done <- Run(ctx, cfg, nil) }()
		return done
	}
	// The CA node 1 keeps (made here first, as at its first boot), and
	// the pin node 2's script carries.
	ca, err := ics.LoadOrCreateCA(filepath.Join(dir, "ca"), "adm")
	if err != nil {
		t.Fatal(err)
	}
	pin := ics.Pin(ca.Cert)
	d1 := start(1, ICSConfig{CADir: filepath.Join(dir, "ca"), NetbootAdmin: strings.TrimPrefix(admin.URL, "http://")})
	d2 := start(2, ICSConfig{MAC: mac2.String(), Secret: secret, Admitter: "127.0.80.1:7470", CAPin: pin})

	// The first admin's credential, made by node 1 at first boot, asks
	// node 2 (whose API took the operators' CA from admission).
	var adminCtx *locusconfig.Context
	deadline := time.Now().Add(20 * time.Second)
	for adminCtx == nil {
		if c, err := locusconfig.Load(filepath.Join(dir, "ca", AdminConfigFile)); err == nil {
			adminCtx, _, _ = c.Current("")
		}
		if time.Now().After(deadline) {
			t.Fatal("node 1 made no admin credential")
		}
		time.Sleep(50 * time.Millisecond)
	}
	adminTLS, err := adminCtx.TLS()
	if err != nil {
		t.Fatal(err)
	}
	node2 := NewClient("127.0.80.2:7470", adminTLS)
	defer node2.Close()
	var view ClusterView
	for {
		err := node2.Get(ctx, "/v1/cluster", &view)
		if err == nil && len(view.Nodes) == 2 && view.Nodes[0].Via == "ics" && view.Nodes[1].RunLevel == 3 && view.Nodes[0].RunLevel == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no cluster view over ICS from node 2: %+v %v", view, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The membership alone, as node 2 sees it, without asking any node.
	var st clms.Status
	if err := node2.Get(ctx, "/v1/cluster/status", &st); err != nil || len(st.Nodes) != 2 || st.RunLevel != view.RunLevel {
		t.Errorf("node 2's /v1/cluster/status: %+v, %v; want its two nodes at run level %d", st, err, view.RunLevel)
	}

	checkAPITrust(t, ctx, filepath.Join(dir, "ca"), adminTLS)

	// Both nodes' logs through node 2's API, merged by time; filtered;
	// a bad filter refused by name.
	resp, err := node2.Open(ctx, "/v1/logs?grep="+url.QueryEscape("membership started"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []logring.Line
	for dec := json.NewDecoder(resp.Body); ; {
		var l logring.Line
		if dec.Decode(&l) != nil {
			break
		}
		lines = append(lines, l)
	}
	resp.Body.Close()
	nodes := map[int]bool{}
	for i, l := range lines {
		nodes[l.Node] = true
		if i > 0 && l.At.Before(lines[i-1].At) {
			t.Errorf("log lines out of order: %+v before %+v", lines[i-1], l)
		}
		if !strings.Contains(l.Msg, "membership started") {
			t.Errorf("grep let through %+v", l)
		}
	}
	if !nodes[1] || !nodes[2] {
		t.Errorf("node 2's /v1/logs has lines of nodes %v, want 1 and 2: %+v", nodes, lines)
	}
	var se *StatusError
	if _, err := node2.Open(ctx, "/v1/logs?level=loud"); !errors.As(err, &se) || se.Code != 400 || !strings.Contains(se.Msg, `level "loud"`) {
		t.Errorf("a bad level: %v", err)
	}

	// Node 1's metrics through node 2's API (over ICS): node 1 labels
	// its series and sees both nodes Up.
	resp, err = node2.Open(ctx, "/v1/metrics?node=1")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`locus_node_state{member="1",node="1",state="Up"} 1`, `locus_node_state{member="2",node="1",state="Up"} 1`, `locus_events_total{kind="transition.applied",node="1"}`} {
		if !strings.Contains(string(text), want) {
			t.Errorf("node 1's metrics through node 2 lack %s:\n%s", want, text)
		}
	}

	// The secret is spent, and others never worked.
	for name, req := range map[string]ICSConfig{
		"reused":     {Node: 2, MAC: mac2.String(), Secret: secret, Admitter: "127.0.80.1:7470"},
		"wrong":      {Node: 3, MAC: "52:54:00:00:00:03", Secret: "00112233445566778899aabbccddeeff", Admitter: "127.0.80.1:7470"},
		"other node": {Node: 4, MAC: mac2.String(), Secret: reg.IssueSecret(mac2, 2, node2Addr), Addr: "127.0.80.2", Admitter: "127.0.80.1:7470"},
		// Node 2's script was seen by another host (on the wire, say):
		// its secret, presented from that host's address, buys nothing.
		"stolen":      {Node: 2, MAC: mac2.String(), Secret: reg.IssueSecret(mac2, 2, node2Addr), Addr: "127.0.80.6", Admitter: "127.0.80.1:7470"},
		"not hex mac": {Node: 5, MAC: "zz", Secret: "x", Admitter: "127.0.80.1:7470"},
	} {
		_, err := requestIdentity(ctx, req)
		if !errors.Is(err, errRefused) {
			t.Errorf("%s secret: %v, want refused", name, err)
		}
		if name == "stolen" && (err == nil || !strings.Contains(err.Error(), "served to another address")) {
			t.Errorf("stolen secret: %v, want refused for its address", err)
		}
	}
	// A pin of another CA: the admitter is refused before the secret
	// is sent, so the secret still buys node 2 its certificate after.
	other, _ := ics.LoadOrCreateCA(t.TempDir(), "adm")
	otherPin := ics.Pin(other.Cert)
	fresh := reg.IssueSecret(mac2, 2, node2Addr)
	pinned := ICSConfig{Node: 2, MAC: mac2.String(), Secret: fresh, Addr: "127.0.80.2", Admitter: "127.0.80.1:7470", CAPin: otherPin}
	if _, err := requestIdentity(ctx, pinned); err == nil || !strings.Contains(err.Error(), "pinned") {
		t.Errorf("admission at a daemon without the pinned CA: %v, want refused for the pin", err)
	}
	pinned.CAPin = pin
	if id, err := requestIdentity(ctx, pinned); err != nil || id.Node != 2 {
		t.Errorf("the same secret, at the pinned CA: %v, want a certificate (the refused try did not spend it)", err)
	}

	cancel()
	for _, d := range []chan error{d1, d2} {
		if err := <-d; err != nil {
			t.Errorf("daemon: %v", err)
		}
	}
}

// TestAdmissionIsRateLimited: one address gets a burst of five, then two
// a second; another address is not held up by it.
func TestAdmissionIsRateLimited(t *testing.T) {
	l := newAdmissionLimiter()
	ok := 0
	for range 20 {
		if l.allow("10.77.0.66:4000") {
			ok++
		}
	}
	if ok != 5 {
		t.Errorf("%d of 20 requests from one address at once allowed, want the burst of 5", ok)
	}
	if !l.allow("10.77.0.2:4000") {
		t.Error("another address was held up by the first one's flood")
	}
}
