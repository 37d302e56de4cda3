package locusd

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/services/clms"
)

func TestServeNodeInfoOnLoopback(t *testing.T) {
	dir := t.TempDir()
	nodeFile := filepath.Join(dir, "node.json")
	os.WriteFile(nodeFile, []byte(`{"node":2,"hostname":"beta","cluster":"t","addr":"10.9.0.2/24","runlevel":3,"state":"Up"}`), 0o644)
	proc := filepath.Join(dir, "proc")
	os.Mkdir(proc, 0o755)
	os.WriteFile(filepath.Join(proc, "uptime"), []byte("12.50 20.00\n"), 0o644)
	os.WriteFile(filepath.Join(proc, "loadavg"), []byte("0.25 0.10 0.05 1/80 123\n"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	sock := filepath.Join(dir, "private", "api.sock")
	go func() {
		done <- Run(ctx, Config{Listen: "127.0.0.1:0", NodeFile: nodeFile, ProcDir: proc, Socket: sock}, ready)
	}()
	addr := (<-ready).String()
	fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
	defer fcancel()
	local := LocalClient(sock)
	defer local.Close()
	info, err := local.Fetch(fctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Node != 2 || info.Hostname != "beta" || info.State != "Up" || info.Uptime != 12.5 || info.Load1 != 0.25 {
		t.Errorf("Fetch = %+v", info)
	}
	// Over TCP, without a credential: the health, and nothing else.
	if h, err := FetchHealth(fctx, addr); err != nil || *h != (Health{Node: 2, Cluster: "t", State: "Up", RunLevel: 3}) {
		t.Errorf("health = %+v, %v", h, err)
	}
	anon := anonymous(addr)
	defer anon.Close()
	if _, err := anon.Fetch(fctx); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("node info without a credential = %v, want 401", err)
	}
	// A node file that init has not written yet is an error, not a crash.
	os.Remove(nodeFile)
	if _, err := local.Fetch(fctx); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("Fetch without a node file = %v, want 503", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v after cancel, want nil", err)
	}
}

func TestFetchRefusesGarbage(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := newAPITLS()
	if err != nil {
		t.Fatal(err)
	}
	ln := tls.NewListener(tl, a.config())
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Read the request first: a reply to an unread request can
			// reach the client as a reset instead.
			http.ReadRequest(bufio.NewReader(c))
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{{{{{"))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := FetchHealth(ctx, ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "bad reply") {
		t.Errorf("Fetch(garbage) = %v, want 'bad reply'", err)
	}
}

func TestNetbootRegistryThroughTheDaemon(t *testing.T) {
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/nodes" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`[{"mac":"52:54:00:00:00:02","stage":"ipxe"}]`))
	}))
	defer admin.Close()
	dir := t.TempDir()
	for name, adminAddr := range map[string]string{"serving": strings.TrimPrefix(admin.URL, "http://"), "not serving": "127.0.0.1:1"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ready := make(chan net.Addr, 1)
			done := make(chan error, 1)
			go func() {
				done <- Run(ctx, Config{Listen: "127.0.0.1:0", NodeFile: filepath.Join(dir, "none"), NetbootAdmin: adminAddr, Socket: filepath.Join(dir, "s", "api.sock")}, ready)
			}()
			addr := (<-ready).String()
			// MACs are not for anybody.
			anon := anonymous(addr)
			defer anon.Close()
			var got []struct{ MAC, Stage string }
			if err := anon.Get(ctx, "/v1/netboot/nodes", &got); err == nil || !strings.Contains(err.Error(), "401") {
				t.Errorf("registry without a credential = %+v %v, want 401", got, err)
			}
			local := LocalClient(filepath.Join(dir, "s", "api.sock"))
			defer local.Close()
			err := local.Get(ctx, "/v1/netboot/nodes", &got)
			if name == "serving" {
				if err != nil || len(got) != 1 || got[0].Stage != "ipxe" {
					t.Errorf("registry through locusd = %+v, %v", got, err)
				}
			} else if err == nil || !strings.Contains(err.Error(), "404") {
				t.Errorf("a node without netboot answered %v, want 404", err)
			}
			if err := local.Get(ctx, "/v1/netboot/accept", &got); err == nil {
				t.Error("the proxy forwarded a path other than nodes and leases")
			}
			cancel()
			<-done
		})
	}
}

func TestAdmittedAddr(t *testing.T) {
	st := clms.Status{Nodes: []clms.NodeStatus{
		{NodeRecord: clms.NodeRecord{Node: 1, State: clms.Up, Addr: "10.77.0.1"}},
		{NodeRecord: clms.NodeRecord{Node: 2, State: clms.ComingUp, Addr: "10.77.0.2:7473"}},
		{NodeRecord: clms.NodeRecord{Node: 3, State: clms.Down, Addr: "10.77.0.3"}},
	}}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"10.77.0.1", true},
		{"10.77.0.2", true},  // joining: it mounts the root before it is Up
		{"10.77.0.3", false}, // Down: fenced, its connections refused
		{"10.77.0.9", false}, // never admitted
	} {
		if got := admittedAddr(st, netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("admittedAddr(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}
