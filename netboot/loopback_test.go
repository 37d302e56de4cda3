package netboot

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/mdlayher/ndp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/images/layout"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/pin/tftp/v3"
)

// The loopback test runs the real service and real clients (nclient4,
// pin/tftp's client, net/http) on a veth pair inside a network namespace
// the test creates: the parent makes the namespace and re-runs this test
// binary inside it, then removes the namespace, also on failure.

const childEnv = "LOCUS_NETBOOT_NETNS_CHILD"

func TestLoopbackServer(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		loopbackChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	ns := fmt.Sprintf("locus-nb-%d", os.Getpid())
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	sh("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	sh("-n", ns, "link", "add", "nb0", "type", "veth", "peer", "name", "nb1")
	sh("-n", ns, "addr", "add", "10.77.0.1/24", "dev", "nb0")
	sh("-n", ns, "link", "set", "nb0", "up")
	sh("-n", ns, "link", "set", "nb1", "up")
	sh("-n", ns, "link", "set", "lo", "up")
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run", "^TestLoopbackServer$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in namespace %s:\n%s", ns, out)
	if err != nil {
		t.Fatalf("loopback test in the namespace failed: %v", err)
	}
}

func loopbackChild(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "netboot")
	os.MkdirAll(root, 0o755)
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	for name, data := range map[string][]byte{
		BIOSBootFile: []byte("undionly"), EFIBootFile: []byte("ipxe.efi"), EFISNPBootFile: []byte("snponly"), layout.KernelFile: []byte("kernel"),
		layout.InitramfsFile + ".zst": big,
	} {
		os.WriteFile(filepath.Join(root, name), data, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "secret"), []byte("secret"), 0o644)
	os.Symlink(filepath.Join(dir, "secret"), filepath.Join(root, "escape"))
	spec, err := clusterspec.Parse("t.yaml", []byte(testSpec))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := NewService(Config{Spec: spec, Iface: "nb0", Root: root, StateDir: filepath.Join(dir, "state"),
		HTTPPort: 8080, AdminAddr: "127.0.0.1:7471", Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	time.Sleep(300 * time.Millisecond)

	// DHCP: a real client on the other end of the veth, as node 2.
	c, err := nclient4.New("nb1", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3), nclient4.WithHWAddr(mac2))
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	lease, err := c.Request(rctx, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")))
	rcancel()
	c.Close()
	if err != nil {
		t.Fatalf("DHCP through the real server: %v", err)
	}
	if got := lease.ACK.YourIPAddr.String(); got != "10.77.0.2" || lease.ACK.BootFileName != BIOSBootFile {
		t.Errorf("lease: addr %s file %q, want 10.77.0.2 and %s", got, lease.ACK.BootFileName, BIOSBootFile)
	}
	if out, err := exec.Command("ip", "addr", "add", "10.77.0.2/24", "dev", "nb1").CombinedOutput(); err != nil {
		t.Fatalf("ip addr: %v %s", err, out)
	}

	// TFTP: reads with blksize and tsize; traversal and writes refused.
	tc, err := tftp.NewClient("10.77.0.1:69")
	if err != nil {
		t.Fatal(err)
	}
	tc.SetBlockSize(1468)
	tc.RequestTSize(true)
	wt, err := tc.Receive(layout.InitramfsFile+".zst", "octet")
	if err != nil {
		t.Fatalf("tftp get: %v", err)
	}
	if n, ok := wt.(tftp.IncomingTransfer).Size(); !ok || n != int64(len(big)) {
		t.Errorf("tftp tsize = %d, %v, want %d", n, ok, len(big))
	}
	var got bytes.Buffer
	if _, err := wt.WriteTo(&got); err != nil || !bytes.Equal(got.Bytes(), big) {
		t.Errorf("tftp body: %v, %d bytes", err, got.Len())
	}
	for _, bad := range []string{"../secret", "/../secret", "escape", `..\secret`, "nonexistent"} {
		if wt, err := tc.Receive(bad, "octet"); err == nil {
			var b bytes.Buffer
			if _, err := wt.WriteTo(&b); err == nil {
				t.Errorf("tftp %q served %q", bad, b.String())
			}
		}
	}
	if rf, err := tc.Send("upload", "octet"); err == nil {
		if _, err := rf.ReadFrom(strings.NewReader("data")); err == nil {
			t.Error("tftp write request accepted")
		}
	}
	if _, err := os.Stat(filepath.Join(root, "upload")); err == nil {
		t.Error("a tftp write created a file")
	}

	// iPXE's own DHCP exchange, as node 2 and as a machine not in the
	// node table (pending): each may then fetch its script from the
	// address it was given, and only from there.
	ipxeLease := func(mac net.HardwareAddr) string {
		t.Helper()
		c, err := nclient4.New("nb1", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3), nclient4.WithHWAddr(mac))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		defer rcancel()
		lease, err := c.Request(rctx, dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE")))
		if err != nil {
			t.Fatalf("iPXE DHCP as %s: %v", mac, err)
		}
		return lease.ACK.YourIPAddr.String()
	}
	if a := ipxeLease(mac2); a != "10.77.0.2" {
		t.Fatalf("node 2's iPXE lease: %s", a)
	}
	pendingAddr := ipxeLease(unknown)
	if out, err := exec.Command("ip", "addr", "add", pendingAddr+"/24", "dev", "nb1").CombinedOutput(); err != nil {
		t.Fatalf("ip addr: %v %s", err, out)
	}

	// HTTP: the node's script, Range, traversal refused. The client
	// speaks from node 2's leased address, as the node would.
	from := func(addr string) *http.Client {
		return &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addr)}}).DialContext}}
	}
	hc := from("10.77.0.2")
	getFrom := func(hc *http.Client, path string, hdr ...string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://10.77.0.1:8080"+path, nil)
		if len(hdr) == 2 {
			req.Header.Set(hdr[0], hdr[1])
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	get := func(path string, hdr ...string) (int, string) { return getFrom(hc, path, hdr...) }
	pending := from(pendingAddr)
	// Node 2's address asking for the pending machine's script (a MAC it
	// saw on the wire) gets nothing.
	if code, body := get("/ipxe/52-54-00-00-00-77.ipxe"); code != http.StatusForbidden {
		t.Errorf("another MAC's script from node 2's address: %d %q, want 403", code, body)
	}
	code, script := get("/ipxe/52-54-00-00-00-02.ipxe")
	if code != 200 || !strings.Contains(script, "#!ipxe") || !strings.Contains(script, "locus.node=2 locus.ip=10.77.0.2/24") ||
		!strings.Contains(script, "initrd http://10.77.0.1:8080/initramfs.cpio.zst") {
		t.Errorf("script: %d\n%s", code, script)
	}
	code, body := get("/initramfs.cpio.zst", "Range", "bytes=16-31")
	if code != http.StatusPartialContent || body != "0123456789abcdef" {
		t.Errorf("range: %d %q", code, body)
	}
	for _, bad := range []string{"/../secret", "/%2e%2e/secret", "/escape", "/..%2fsecret", "/ipxe/not-a-mac.ipxe"} {
		if code, body := get(bad); code == 200 || strings.Contains(body, "secret") {
			t.Errorf("GET %s = %d %q", bad, code, body)
		}
	}
	if code, _ := get("/ipxe/52-54-00-00-00-02.ipxe"); code != http.StatusForbidden {
		t.Errorf("node 2's boot script a second time in one exchange: %d, want 403", code)
	}
	code, _ = getFrom(pending, "/ipxe/52-54-00-00-00-77.ipxe")
	if code != 200 {
		t.Errorf("pending node's script: %d", code)
	}

	// The registry saw node 2 through its stages.
	contacts := registry(t)
	stages := map[string]string{}
	for _, c := range contacts {
		stages[c.MAC] = c.Stage + "/" + c.Status
	}
	if stages[mac2.String()] != StageInitramfs+"/known" || stages[unknown.String()] != StageIPXE+"/pending" {
		t.Errorf("registry stages = %v", stages)
	}
	// Accept the waiting node: its script now boots it.
	resp, err := http.Post("http://127.0.0.1:7471/v1/accept?mac="+unknown.String()+"&number=7", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("accept: %v %v", err, resp.Status)
	}
	resp.Body.Close()
	// Its wait script asks DHCP again, which now gives it node 7's
	// address, and fetches its boot script from there.
	if a := ipxeLease(unknown); a != "10.77.0.7" {
		t.Fatalf("accepted node's iPXE lease: %s, want 10.77.0.7", a)
	}
	if out, err := exec.Command("ip", "addr", "add", "10.77.0.7/24", "dev", "nb1").CombinedOutput(); err != nil {
		t.Fatalf("ip addr: %v %s", err, out)
	}
	if _, script := getFrom(from("10.77.0.7"), "/ipxe/52-54-00-00-00-77.ipxe"); !strings.Contains(script, "locus.node=7 locus.ip=10.77.0.7/24") {
		t.Errorf("accepted node's script:\n%s", script)
	}

	floodFromTheWire(t, ctx)
	solicitRouter(t)
	checkMetrics(t, len(big))
}

// floodFromTheWire sends 10,000 DISCOVERs with made-up MACs from the
// client end of the veth, through a real socket, as fast as it can,
// while node 3 (in the node table) asks for its lease with a real
// client: node 3 is answered during the flood, and the flood takes in at
// most the cap of new MACs (registry entries, pool addresses).
func floodFromTheWire(t *testing.T, ctx context.Context) {
	// A raw UDP socket, as a DHCP client's (source 0.0.0.0): from one of
	// the namespace's own addresses the kernel would drop the packets as
	// martians before the server saw them.
	pc, err := nclient4.NewRawUDPConn("nb1", 68)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	const flood = 10000
	sent := make(chan int, 1)
	go func() {
		n := 0
		for i := range flood {
			mac := net.HardwareAddr{0x02, 0xf1, byte(i >> 16), byte(i >> 8), byte(i), 0x01}
			d, err := dhcpv4.NewDiscovery(mac)
			if err != nil {
				continue
			}
			if _, err := pc.WriteTo(d.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67}); err == nil {
				n++
			}
		}
		sent <- n
	}()
	start := time.Now()
	c, err := nclient4.New("nb1", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(5), nclient4.WithHWAddr(mac3))
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 15*time.Second)
	lease, err := c.Request(rctx)
	rcancel()
	c.Close()
	n := <-sent
	if err != nil {
		t.Fatalf("node 3's DHCP during a flood of %d made-up MACs: %v", n, err)
	}
	if got := lease.ACK.YourIPAddr.String(); got != "10.77.0.3" {
		t.Errorf("node 3's lease during the flood: %s, want 10.77.0.3", got)
	}
	t.Logf("node 3 got its lease %v into a flood of %d DISCOVERs from made-up MACs", time.Since(start).Round(time.Millisecond), n)
	time.Sleep(500 * time.Millisecond) // the server drains the rest
	contacts := registry(t)
	flooded := 0
	for _, c := range contacts {
		if strings.HasPrefix(c.MAC, "02:f1:") {
			flooded++
		}
	}
	if flooded > NewMACsPerMinute {
		t.Errorf("the flood left %d made-up MACs in the registry, want at most %d", flooded, NewMACsPerMinute)
	}
	t.Logf("the registry took in %d of the %d made-up MACs", flooded, n)
}

// checkMetrics fetches the 1 MiB initramfs by HTTP, then reads the
// operator API's metrics after the exchanges above: DHCP by type and
// answer, the TFTP and HTTP bytes of the initramfs, refused transfers,
// none left active, leases and the registry's stages.
func checkMetrics(t *testing.T, initramfs int) {
	t.Helper()
	whole, err := http.Get("http://10.77.0.1:8080/initramfs.cpio.zst")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(io.Discard, whole.Body); err != nil || n != int64(initramfs) {
		t.Fatalf("the whole initramfs by HTTP: %d bytes, %v", n, err)
	}
	whole.Body.Close()
	scrape := func() map[string]*dto.MetricFamily {
		resp, err := http.Get("http://127.0.0.1:7471/v1/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatalf("metrics: %v", err)
		}
		return fams
	}
	// The client has the last byte before the server's handler returns,
	// and a request's bytes are counted when it returns: wait (a few
	// seconds at most) until the server has no request under way.
	fams := scrape()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); fams = scrape() {
		if f, ok := fams["locus_netboot_http_active_requests"]; ok && len(f.Metric) == 1 && f.Metric[0].GetGauge().GetValue() == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	value := func(name string, labels map[string]string) float64 {
		f, ok := fams[name]
		if !ok {
			t.Errorf("metrics: no %s", name)
			return 0
		}
		sum := 0.0
	next:
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
		return sum
	}
	if v := value("locus_netboot_dhcp_messages_total", map[string]string{"type": "discover", "reply": "offer"}); v < 1 {
		t.Errorf("DISCOVERs answered with an OFFER: %v", v)
	}
	if v := value("locus_netboot_dhcp_messages_total", map[string]string{"type": "request", "reply": "ack"}); v < 1 {
		t.Errorf("REQUESTs answered with an ACK: %v", v)
	}
	if v := value("locus_netboot_dhcp_messages_total", map[string]string{"type": "discover", "reply": "none"}); v < 1 {
		t.Errorf("the flood's ignored DISCOVERs: %v", v)
	}
	if v := value("locus_netboot_tftp_sent_bytes_total", nil); v < float64(initramfs) {
		t.Errorf("TFTP bytes sent %v, want at least the %d of the initramfs", v, initramfs)
	}
	if v := value("locus_netboot_tftp_transfers_total", map[string]string{"outcome": "refused"}); v < 1 {
		t.Errorf("refused TFTP transfers (the escaping paths): %v", v)
	}
	if v := value("locus_netboot_http_sent_bytes_total", nil); v < float64(initramfs) {
		t.Errorf("HTTP bytes sent %v, want at least the %d of the initramfs", v, initramfs)
	}
	if v := value("locus_netboot_tftp_active_transfers", nil) + value("locus_netboot_http_active_requests", nil); v != 0 {
		t.Errorf("%v transfers still active after all ended", v)
	}
	if v := value("locus_netboot_router_solicitations_total", nil); v < 1 {
		t.Errorf("router solicitations answered: %v", v)
	}
	if v := value("locus_netboot_leases", nil); v < 1 {
		t.Errorf("leases: %v", v)
	}
	if v := value("locus_netboot_machines", nil); v < 1 {
		t.Errorf("machines in the registry: %v", v)
	}
}

// registry reads the service's registry from its operator API.
func registry(t *testing.T) []Contact {
	t.Helper()
	var contacts []Contact
	resp, err := http.Get("http://127.0.0.1:7471/v1/nodes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	jsonDecode(t, resp.Body, &contacts)
	return contacts
}

func jsonDecode(t *testing.T, r io.Reader, v any) {
	t.Helper()
	if err := json.NewDecoder(r).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// solicitRouter sends a router solicitation from the client's side of
// the link, as iPXE does, and wants the service's advertisement: no
// prefix, no managed or other configuration, router lifetime 0.
func solicitRouter(t *testing.T) {
	t.Helper()
	ifi, err := net.InterfaceByName("nb1")
	if err != nil {
		t.Fatal(err)
	}
	var c *ndp.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, _, err = ndp.Listen(ifi, ndp.LinkLocal); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ndp on nb1: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer c.Close()
	rs := &ndp.RouterSolicitation{Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}}}
	// The service's own link-local address may still be tentative: the
	// first solicitations go until its first advertisement comes (as
	// iPXE's retransmissions would); then one more must be answered on
	// its own.
	answered := func(within time.Duration) (*ndp.RouterAdvertisement, time.Duration, bool) {
		start := time.Now()
		if err := c.WriteTo(rs, nil, netip.MustParseAddr("ff02::2")); err != nil {
			t.Fatalf("router solicitation: %v", err)
		}
		c.SetReadDeadline(time.Now().Add(within))
		for {
			m, _, _, err := c.ReadFrom()
			if err != nil {
				return nil, 0, false
			}
			if ra, ok := m.(*ndp.RouterAdvertisement); ok {
				return ra, time.Since(start), true
			}
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, _, ok := answered(250 * time.Millisecond); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no router advertisement within 10s of solicitations")
		}
	}
	ra, took, ok := answered(2 * time.Second)
	if !ok {
		t.Fatal("a router solicitation unanswered for 2s")
	}
	if ra.ManagedConfiguration || ra.OtherConfiguration || ra.RouterLifetime != 0 {
		t.Errorf("advertisement %+v: want no managed/other configuration and lifetime 0", ra)
	}
	for _, o := range ra.Options {
		if _, ok := o.(*ndp.PrefixInformation); ok {
			t.Errorf("advertisement carries a prefix: %+v", o)
		}
	}
	t.Logf("a router solicitation answered in %v", took.Round(time.Microsecond))
}
