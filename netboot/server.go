package netboot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/internal/privsock"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/pin/tftp/v3"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Config configures the netboot service.
type Config struct {
	Spec *clusterspec.Spec
	// Iface is the interface to serve on; its first IPv4 address in the
	// interconnect subnet is the server address.
	Iface string
	// Root is the boot tree (out/netboot).
	Root string
	// StateDir keeps leases.json and registry.json.
	StateDir string
	Proxy    bool
	// Ports; 0 means the standard ones (67, 4011, 69) and 8080 for HTTP.
	DHCPPort, ProxyPort, TFTPPort, HTTPPort int
	// AdminAddr serves the operator API (nodes, leases, accept, admit):
	// a unix socket in a root-only directory (AdminSocket), or, for
	// tests, a loopback host:port.
	AdminAddr string
	// Join is written into node scripts as locus.join= (optional).
	Join string
	// CAFile, if set, is the cluster CA certificate node scripts pin
	// (locus.ca=): a node admits only at a daemon whose chain ends there.
	CAFile string
	// CaptureDir, if set, receives every DHCP request as a raw packet file
	// (for bug reports and the golden-packet tests).
	CaptureDir string
	Log        *slog.Logger
}

// Service is a running netboot service.
type Service struct {
	cfg      Config
	serverIP netip.Addr
	leases   *Leases
	registry *Registry
	dhcp     *DHCP
	root     *os.Root
	httpBase string
	metrics  *Metrics
}

// NewService prepares the service: finds the server address, opens the
// boot tree, the lease table and the registry.
func NewService(cfg Config) (*Service, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.DHCPPort == 0 {
		cfg.DHCPPort = 67
	}
	if cfg.ProxyPort == 0 {
		cfg.ProxyPort = 4011
	}
	if cfg.TFTPPort == 0 {
		cfg.TFTPPort = 69
	}
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = 8080
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = AdminSocket
	}
	ip, err := interfaceAddr(cfg.Iface, cfg.Spec.Prefix())
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("netboot: boot tree %s: %w (run `locus image build`)", cfg.Root, err)
	}
	for _, f := range []string{BIOSBootFile, EFIBootFile, EFISNPBootFile, layout.KernelFile} {
		if _, err := root.Stat(f); err != nil {
			root.Close()
			return nil, fmt.Errorf("netboot: boot tree %s lacks %s (run `locus image build`)", cfg.Root, f)
		}
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		root.Close()
		return nil, fmt.Errorf("netboot: state: %w", err)
	}
	first, last, err := cfg.Spec.Pool()
	if err != nil {
		root.Close()
		return nil, err
	}
	leases, err := OpenLeases(filepath.Join(cfg.StateDir, "leases.json"), first, last, nil)
	if err != nil {
		root.Close()
		return nil, err
	}
	reg, err := OpenRegistry(cfg.Spec, filepath.Join(cfg.StateDir, "registry.json"), nil)
	if err != nil {
		root.Close()
		return nil, err
	}
	reg.SetLogger(cfg.Log)
	reg.Reserve(ip)
	s := &Service{cfg: cfg, serverIP: ip, leases: leases, registry: reg, root: root,
		httpBase: fmt.Sprintf("http://%s:%d", ip, cfg.HTTPPort), metrics: newMetrics(leases, reg)}
	var gw netip.Addr
	if cfg.Spec.Interconnect.Gateway != "" {
		gw, _ = netip.ParseAddr(cfg.Spec.Interconnect.Gateway)
	}
	var dns []netip.Addr
	for _, d := range cfg.Spec.Interconnect.DNS {
		if a, err := netip.ParseAddr(d); err == nil {
			dns = append(dns, a)
		}
	}
	s.dhcp = NewDHCP(DHCPConfig{ServerIP: ip, Prefix: cfg.Spec.Prefix(), Gateway: gw, DNS: dns,
		Lease: time.Duration(cfg.Spec.Netboot.LeaseSeconds) * time.Second, HTTPBase: s.httpBase, Proxy: cfg.Proxy}, leases, reg)
	return s, nil
}

// interfaceAddr returns iface's IPv4 address inside p.
func interfaceAddr(iface string, p netip.Prefix) (netip.Addr, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("netboot: interface %q: %w", iface, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("netboot: interface %s: %w", iface, err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP.To4()); ok && p.Contains(ip) {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("netboot: interface %s has no address in the interconnect %s (add one: ip addr add %s dev %s)", iface, p, p.Addr().Next(), iface)
}

// ServerIP is the address the service answers from.
func (s *Service) ServerIP() netip.Addr { return s.serverIP }

// Registry is the service's node registry.
func (s *Service) Registry() *Registry { return s.registry }

// AdminSocket is where the netboot service's operator API is: root on
// the init node only (its daemon proxies the registry to credentialed
// callers, docs/trust.md).
const AdminSocket = "/run/locus/private/netboot.sock"

// Serve runs DHCP (and proxyDHCP on 4011), TFTP, HTTP and the admin API
// until ctx ends. A failure to bind any of them is returned at once.
func (s *Service) Serve(ctx context.Context) error {
	defer s.root.Close()
	defer func() {
		if err := s.leases.Close(); err != nil {
			s.cfg.Log.Error("netboot: leases not saved at shutdown", "err", err)
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	log := s.cfg.Log

	var closers []func()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	run := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("netboot: %s: %w", name, err)
			}
		}()
	}
	stopAll := func() {
		for _, c := range closers {
			c()
		}
	}

	// DHCP on 0.0.0.0 bound to the interface: broadcast DISCOVERs arrive
	// there, not on the interface's own address.
	dhcpConn, err := server4.NewIPv4UDPConn(s.cfg.Iface, &net.UDPAddr{Port: s.cfg.DHCPPort})
	if err != nil {
		return fmt.Errorf("netboot: dhcp on %s:%d: %w (another DHCP server running? try --proxy, or stop it)", s.cfg.Iface, s.cfg.DHCPPort, err)
	}
	closers = append(closers, func() { dhcpConn.Close() })
	run("dhcp", func() error { return s.serveDHCP(dhcpConn) })
	if s.cfg.Proxy {
		pc, err := server4.NewIPv4UDPConn(s.cfg.Iface, &net.UDPAddr{Port: s.cfg.ProxyPort})
		if err != nil {
			stopAll()
			return fmt.Errorf("netboot: proxyDHCP on port %d: %w", s.cfg.ProxyPort, err)
		}
		closers = append(closers, func() { pc.Close() })
		run("proxydhcp", func() error { return s.serveDHCP(pc) })
	}

	tconn, err := net.ListenPacket("udp4", net.JoinHostPort(s.serverIP.String(), strconv.Itoa(s.cfg.TFTPPort)))
	if err != nil {
		stopAll()
		return fmt.Errorf("netboot: tftp on port %d: %w", s.cfg.TFTPPort, err)
	}
	tsrv := tftp.NewServer(s.tftpRead, nil)
	tsrv.SetTimeout(2 * time.Second)
	closers = append(closers, tsrv.Shutdown)
	run("tftp", func() error { return tsrv.Serve(tconn) })

	hln, err := net.Listen("tcp", net.JoinHostPort(s.serverIP.String(), strconv.Itoa(s.cfg.HTTPPort)))
	if err != nil {
		stopAll()
		return fmt.Errorf("netboot: http on port %d: %w", s.cfg.HTTPPort, err)
	}
	hsrv := &http.Server{Handler: s.metrics.countHTTP(HTTPHandler(HTTPConfig{
		Spec: s.cfg.Spec, Root: s.root, HTTPBase: s.httpBase, Kernel: layout.KernelFile, Initramfs: s.initramfsName(),
		Join: s.cfg.Join, Registry: s.registry, Leases: s.leases, CAFile: s.cfg.CAFile, Log: log,
	})), ReadHeaderTimeout: 10 * time.Second}
	closers = append(closers, func() { hsrv.Close() })
	run("http", func() error {
		if err := hsrv.Serve(hln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})

	aln, err := privsock.ListenAddr(s.cfg.AdminAddr)
	if err != nil {
		stopAll()
		return fmt.Errorf("netboot: admin API on %s: %w", s.cfg.AdminAddr, err)
	}
	asrv := &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	closers = append(closers, func() { asrv.Close() })
	run("admin", func() error {
		if err := asrv.Serve(aln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})

	run("router advertisements", func() error {
		// Not fatal: DHCPv4 boots work without it, only slower.
		if err := s.advertiseRouter(ctx); err != nil {
			log.Warn("netboot: no router advertisements: iPXE will wait for them before it boots", "err", err)
		}
		return nil
	})

	run("registry", func() error {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return s.registry.Save()
			case <-t.C:
				if err := s.registry.Save(); err != nil {
					log.Warn("registry save", "err", err)
				}
			}
		}
	})
	log.Info("netboot serving", "iface", s.cfg.Iface, "server", s.serverIP, "proxy", s.cfg.Proxy, "http", s.httpBase, "admin", s.cfg.AdminAddr)
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	cancel()
	stopAll()
	wg.Wait()
	return serveErr
}

// initramfsName finds the initramfs in the boot tree.
func (s *Service) initramfsName() string {
	for _, n := range []string{layout.InitramfsFile + ".zst", layout.InitramfsFile + ".gz"} {
		if _, err := s.root.Stat(n); err == nil {
			return n
		}
	}
	return layout.InitramfsFile + ".zst"
}

// dhcpReadBuffer is the DHCP socket's receive buffer: a storm's burst of
// DISCOVERs waits there while a batch's leases are synced (the system's
// default, about 200 KiB, overflowed at 256 clients in flight).
const dhcpReadBuffer = 4 << 20

// GrowReadBuffer sets conn's receive buffer to n bytes, past the system's
// limit (net.core.rmem_max) when the process may (CAP_NET_ADMIN, which a
// DHCP server on port 67 has), else as far as the limit allows.
func GrowReadBuffer(conn net.PacketConn, n int) error {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
		if serr != nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		}
	}); err != nil {
		return err
	}
	return serr
}

// dhcpBatch is how many packets one pass of the DHCP loop takes at most.
const dhcpBatch = 64

// serveDHCP answers DHCP packets on conn until it is closed. Each pass
// takes what has arrived, up to dhcpBatch packets in one recvmmsg, answers
// them one after another (the responder takes about 10 µs a packet, less
// than a goroutine per packet and the lease table's lock contended),
// makes the batch's lease changes durable with one Sync, and only then
// sends the replies, in one sendmmsg. A failed Sync sends no ACK: the
// clients ask again, and the changes are written with the next batch.
func (s *Service) serveDHCP(conn net.PacketConn) error {
	if err := GrowReadBuffer(conn, dhcpReadBuffer); err != nil {
		s.cfg.Log.Warn("dhcp: receive buffer left at the system's default: a boot storm may lose packets", "err", err)
	}
	pc := ipv4.NewPacketConn(conn)
	in := make([]ipv4.Message, dhcpBatch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, 4096)}
	}
	type reply struct {
		req, resp *dhcpv4.DHCPv4
		kind      ClientKind
		renewal   bool // an ACK of the binding the client already held
	}
	var replies []reply
	var out []ipv4.Message
	for {
		n, err := pc.ReadBatch(in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		replies, out = replies[:0], out[:0]
		for _, m := range in[:n] {
			req, err := dhcpv4.FromBytes(m.Buffers[0][:m.N])
			if err != nil {
				s.cfg.Log.Debug("dhcp: malformed packet", "from", m.Addr, "err", err)
				continue
			}
			var held Lease
			var had bool
			if req.MessageType() == dhcpv4.MessageTypeRequest {
				held, had = s.leases.Lookup(req.ClientHWAddr)
			}
			resp, kind, ok := s.handleDHCP(req)
			if !ok {
				continue
			}
			renewal := had && resp.MessageType() == dhcpv4.MessageTypeAck && exchangeAddr(req, resp) == held.Addr
			replies = append(replies, reply{req, resp, kind, renewal})
			out = append(out, ipv4.Message{Buffers: [][]byte{resp.ToBytes()}, Addr: replyAddr(m.Addr, req, resp)})
		}
		if err := s.leases.Sync(); err != nil {
			s.cfg.Log.Error("dhcp: leases not saved: no ACK sent for them", "err", err)
			keep := out[:0]
			for i, r := range replies {
				if r.resp.MessageType() != dhcpv4.MessageTypeAck {
					keep = append(keep, out[i])
				}
			}
			out, replies = keep, nil
		}
		for sent := 0; sent < len(out); {
			k, err := pc.WriteBatch(out[sent:], 0)
			if err != nil {
				s.cfg.Log.Warn("dhcp: send", "to", out[sent].Addr, "err", err)
				k = 1 // skip the packet that failed
			}
			sent += k
		}
		// A new or changed binding is news for the operator; a renewal of
		// the one the client held (each client, every half lease time) is
		// logged at debug level (dnsmasq's --quiet-dhcp, which the
		// benchmark gives it, logs neither).
		for _, r := range replies {
			if r.resp.MessageType() == dhcpv4.MessageTypeAck && !r.renewal {
				s.cfg.Log.Info("dhcp: ACK", "mac", r.req.ClientHWAddr.String(), "client", r.kind, "addr", r.resp.YourIPAddr, "boot", r.resp.BootFileName)
			} else {
				s.cfg.Log.Debug("dhcp: "+r.resp.MessageType().String(), "mac", r.req.ClientHWAddr.String(), "client", r.kind, "addr", r.resp.YourIPAddr, "boot", r.resp.BootFileName)
			}
		}
	}
}

// handleDHCP answers one request; ok false means no answer.
func (s *Service) handleDHCP(req *dhcpv4.DHCPv4) (resp *dhcpv4.DHCPv4, kind ClientKind, ok bool) {
	if s.cfg.CaptureDir != "" {
		name := fmt.Sprintf("%s-%s-%s.bin", time.Now().UTC().Format("150405.000000"), strings.ReplaceAll(req.ClientHWAddr.String(), ":", ""), req.MessageType())
		os.WriteFile(filepath.Join(s.cfg.CaptureDir, name), req.ToBytes(), 0o644)
	}
	resp, kind, err := s.dhcp.Reply(req)
	log := s.cfg.Log
	reply := "none"
	if err == nil {
		reply = strings.ToLower(strings.TrimPrefix(resp.MessageType().String(), "DHCP"))
	}
	s.metrics.dhcp.WithLabelValues(strings.ToLower(strings.TrimPrefix(req.MessageType().String(), "DHCP")), reply).Inc()
	if err != nil {
		if errors.Is(err, ErrIgnore) {
			log.Debug("dhcp: no answer", "mac", req.ClientHWAddr.String(), "type", req.MessageType(), "client", kind, "why", err)
		} else {
			log.Warn("dhcp: refused", "mac", req.ClientHWAddr.String(), "type", req.MessageType(), "client", kind, "err", err)
		}
		return nil, kind, false
	}
	if a, ok := netip.AddrFromSlice(resp.YourIPAddr.To4()); ok && !a.IsUnspecified() {
		s.registry.Record(req.ClientHWAddr, StageDHCP, a)
	}
	if kind == ClientIPXE && resp.MessageType() == dhcpv4.MessageTypeAck {
		// Before the ACK leaves: the address it gives (or, from a proxy,
		// the one the client took from the site's server) may now fetch
		// this MAC's script, once.
		if a := exchangeAddr(req, resp); a.IsValid() {
			s.registry.Exchanged(req.ClientHWAddr, a)
		}
	}
	return resp, kind, true
}

// exchangeAddr is the address a DHCP exchange leaves the client with: the
// one the ACK gives or, for a proxy's ACK (which gives none), the one the
// client asked for or already has.
func exchangeAddr(req, resp *dhcpv4.DHCPv4) netip.Addr {
	for _, ip := range []net.IP{resp.YourIPAddr, req.RequestedIPAddress(), req.ClientIPAddr} {
		if a, ok := netip.AddrFromSlice(ip.To4()); ok && !a.IsUnspecified() {
			return a
		}
	}
	return netip.Addr{}
}

// replyAddr is where a reply goes (RFC 2131 4.1): to the relay, to a
// client that has an address, else broadcast.
func replyAddr(peer net.Addr, req, resp *dhcpv4.DHCPv4) net.Addr {
	up, ok := peer.(*net.UDPAddr)
	if !ok {
		return peer
	}
	switch {
	case !req.GatewayIPAddr.IsUnspecified():
		return &net.UDPAddr{IP: req.GatewayIPAddr, Port: dhcpv4.ServerPort}
	case !req.ClientIPAddr.IsUnspecified() && !up.IP.IsUnspecified():
		return up
	case up.Port == 4011 || (up.Port != dhcpv4.ClientPort && !up.IP.IsUnspecified() && !up.IP.Equal(net.IPv4bcast)):
		return up // proxyDHCP on 4011 answers the client directly
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
}

// tftpRead serves one read-only TFTP transfer from the boot tree.
func (s *Service) tftpRead(name string, rf io.ReaderFrom) error {
	var remote string
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ra := ot.RemoteAddr()
		remote = ra.String()
	}
	clean, err := CleanPath(name)
	if err != nil {
		s.metrics.tftpDone.WithLabelValues("refused").Inc()
		s.cfg.Log.Warn("tftp refused", "file", name, "from", remote, "err", err)
		return err
	}
	f, err := s.root.Open(clean)
	if err != nil {
		s.metrics.tftpDone.WithLabelValues("refused").Inc()
		s.cfg.Log.Warn("tftp: not found", "file", clean, "from", remote)
		return fmt.Errorf("netboot: tftp %q: not found", clean)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return fmt.Errorf("netboot: tftp %q: not a file", clean)
	}
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ot.SetSize(st.Size())
		ra := ot.RemoteAddr()
		if a, ok := netip.AddrFromSlice(ra.IP.To4()); ok {
			for _, le := range s.leases.All() {
				if le.Addr == a {
					if mac, err := net.ParseMAC(le.MAC); err == nil {
						s.registry.Record(mac, StageTFTP, a)
					}
				}
			}
		}
	}
	s.metrics.tftpActive.Inc()
	n, err := rf.ReadFrom(f)
	s.metrics.tftpActive.Dec()
	s.metrics.tftpBytes.Add(float64(n))
	if err != nil {
		// A client that asked only for the size (UEFI firmware does) ends
		// the transfer early: normal, not worth a warning.
		s.metrics.tftpDone.WithLabelValues("ended").Inc()
		s.cfg.Log.Debug("tftp: transfer ended", "file", clean, "from", remote, "bytes", n, "err", err)
		return nil
	}
	s.metrics.tftpDone.WithLabelValues("sent").Inc()
	s.cfg.Log.Info("tftp: sent", "file", clean, "to", remote, "bytes", n)
	return nil
}

// adminHandler is the operator API, on loopback: GET /v1/nodes, GET
// /v1/leases, POST /v1/accept?mac=M&number=N.
func (s *Service) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.registry.Contacts())
	})
	mux.Handle("GET /v1/metrics", s.metrics.Handler())
	mux.HandleFunc("GET /v1/leases", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.leases.All())
	})
	mux.HandleFunc("POST /v1/admit", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			MAC    string `json:"mac"`
			Secret string `json:"secret"`
			// From is the address the node presented the secret from.
			From string `json:"from"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
			http.Error(w, "want {\"mac\", \"secret\", \"from\"}", http.StatusBadRequest)
			return
		}
		mac, err := net.ParseMAC(req.MAC)
		if err != nil {
			http.Error(w, "mac: want an Ethernet MAC", http.StatusBadRequest)
			return
		}
		from, err := netip.ParseAddr(req.From)
		if err != nil {
			http.Error(w, "from: want the address the secret was presented from", http.StatusBadRequest)
			return
		}
		n, err := s.registry.RedeemSecret(mac, req.Secret, from.Unmap())
		if err != nil {
			s.cfg.Log.Warn("admission refused", "mac", mac, "from", from, "err", err)
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		s.cfg.Log.Info("admission secret redeemed", "mac", mac, "node", n)
		writeJSON(w, map[string]int{"node": n})
	})
	mux.HandleFunc("POST /v1/accept", func(w http.ResponseWriter, r *http.Request) {
		mac, err := net.ParseMAC(r.URL.Query().Get("mac"))
		if err != nil || len(mac) != 6 {
			http.Error(w, "mac: want an Ethernet MAC", http.StatusBadRequest)
			return
		}
		number := 0
		if v := r.URL.Query().Get("number"); v != "" {
			if number, err = strconv.Atoi(v); err != nil || number < 1 {
				http.Error(w, "number: want a node number", http.StatusBadRequest)
				return
			}
		}
		n, err := s.registry.Accept(mac, number)
		if err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		writeJSON(w, map[string]any{"mac": mac.String(), "node": n})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
