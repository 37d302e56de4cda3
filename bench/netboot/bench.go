package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/pin/tftp/v3"
)

type opts struct {
	locus, root, results string
	serverIf, clientIf   string
	serverIP             string
	duration             time.Duration
	work                 string
}

type result struct {
	what, unit  string
	locus, peer float64
	peerName    string
	note        string
}

func run(args []string) error {
	var o opts
	fs := flag.NewFlagSet("netboot-bench", flag.ContinueOnError)
	fs.StringVar(&o.locus, "locus", "bin/locus", "locus binary")
	fs.StringVar(&o.root, "root", "out/netboot", "boot tree (for the initramfs)")
	fs.StringVar(&o.results, "results", "bench/RESULTS.md", "results file (the netboot section is replaced)")
	fs.StringVar(&o.serverIf, "server-if", "nb0", "server side of the veth pair")
	fs.StringVar(&o.clientIf, "client-if", "nb1", "client side of the veth pair")
	fs.StringVar(&o.serverIP, "server-ip", "10.77.0.1", "server address on server-if")
	fs.DurationVar(&o.duration, "duration", 8*time.Second, "how long each DHCP run lasts")
	if err := fs.Parse(args); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "netboot-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	o.work = work
	if err := o.prepare(); err != nil {
		return err
	}
	var results []result
	for _, b := range []func() (result, error){o.benchDHCP, o.benchTFTP, o.benchHTTP} {
		r, err := b()
		if err != nil {
			return err
		}
		fmt.Printf("%-40s locus %10.1f  %-10s %10.1f  %s  ratio %.2f\n", r.what, r.locus, r.peerName, r.peer, r.unit, r.locus/r.peer)
		results = append(results, r)
	}
	return writeResults(o.results, results)
}

// prepare lays out the boot tree the servers share: iPXE, kernel and
// initramfs from the built tree, and a 30 MB file for TFTP.
func (o *opts) prepare() error {
	root := filepath.Join(o.work, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	for _, f := range []string{"undionly.kpxe", "ipxe.efi", "snponly.efi", "vmlinuz", "initramfs.cpio.zst"} {
		b, err := os.ReadFile(filepath.Join(o.root, f))
		if err != nil {
			return fmt.Errorf("%w (run `make image` first)", err)
		}
		if err := os.WriteFile(filepath.Join(root, f), b, 0o644); err != nil {
			return err
		}
	}
	big := make([]byte, 30<<20)
	rand.Read(big)
	if err := os.WriteFile(filepath.Join(root, "big.bin"), big, 0o644); err != nil {
		return err
	}
	os.Chmod(o.work, 0o755)
	spec := fmt.Sprintf("cluster: {name: bench}\ninterconnect: {subnet: 10.77.0.0/24}\nnetboot: {admission: discover, pool: 10.77.0.100-10.77.0.250}\n")
	return os.WriteFile(filepath.Join(o.work, "locus.yaml"), []byte(spec), 0o644)
}

// server is a peer or Locus running for one measurement.
type server struct {
	cmd  *exec.Cmd
	name string
}

func (o *opts) start(name string, argv ...string) (*server, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	logf, _ := os.Create(filepath.Join(o.work, name+".log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	time.Sleep(700 * time.Millisecond)
	if cmd.ProcessState != nil {
		return nil, fmt.Errorf("%s exited at once (see %s.log)", name, name)
	}
	return &server{cmd: cmd, name: name}, nil
}

func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

// hwm is the server's peak resident set in MB.
func (s *server) hwm() float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			f := strings.Fields(v)
			kb, _ := strconv.ParseFloat(f[0], 64)
			return kb / 1024
		}
	}
	return 0
}

func (o *opts) startLocus() (*server, error) {
	return o.start("locus", o.locus, "netboot", "serve", "--interface", o.serverIf,
		"--root", filepath.Join(o.work, "root"), "--spec", filepath.Join(o.work, "locus.yaml"),
		"--state-dir", filepath.Join(o.work, "locus-state-"+strconv.FormatInt(time.Now().UnixNano(), 36)))
}

// benchDHCP counts full DISCOVER-OFFER-REQUEST-ACK exchanges per second
// from 4 concurrent clients cycling through 100 MACs, against the same
// pool on both servers.
func (o *opts) benchDHCP() (result, error) {
	r := result{what: "DHCP: full DORA exchanges", unit: "DORA/s", peerName: "dnsmasq"}
	measure := func() (float64, error) {
		const workers, macs = 4, 100
		var done atomic.Int64
		var firstErr atomic.Value
		ctx, cancel := context.WithTimeout(context.Background(), o.duration)
		defer cancel()
		var wg sync.WaitGroup
		for w := range workers {
			c, err := nclient4.New(o.clientIf, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(1))
			if err != nil {
				return 0, err
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
				for i := 0; ctx.Err() == nil; i++ {
					mac := net.HardwareAddr{0x02, 0xbe, 0, 0, byte(w), byte(i % (macs / workers))}
					disc, _ := dhcpv4.NewDiscovery(mac)
					offer, err := c.SendAndRead(ctx, bcast, disc, nclient4.IsMessageType(dhcpv4.MessageTypeOffer))
					if err != nil {
						if ctx.Err() == nil {
							firstErr.CompareAndSwap(nil, err)
						}
						continue
					}
					req, _ := dhcpv4.NewRequestFromOffer(offer)
					if _, err := c.SendAndRead(ctx, bcast, req, nclient4.IsMessageType(dhcpv4.MessageTypeAck)); err != nil {
						if ctx.Err() == nil {
							firstErr.CompareAndSwap(nil, err)
						}
						continue
					}
					done.Add(1)
				}
			}()
		}
		wg.Wait()
		if done.Load() == 0 {
			return 0, fmt.Errorf("no exchange completed: %v", firstErr.Load())
		}
		return float64(done.Load()) / o.duration.Seconds(), nil
	}
	s, err := o.startLocus()
	if err != nil {
		return r, err
	}
	r.locus, err = measure()
	s.stop()
	if err != nil {
		return r, fmt.Errorf("dhcp against locus: %w", err)
	}
	d, err := o.start("dnsmasq", "dnsmasq", "--no-daemon", "--port=0", "--interface="+o.serverIf, "--bind-interfaces",
		"--dhcp-range=10.77.0.100,10.77.0.250,1h", "--dhcp-leasefile="+filepath.Join(o.work, "dnsmasq.leases"),
		"--dhcp-authoritative", "--quiet-dhcp", "--conf-file=/dev/null", "--log-facility=-")
	if err != nil {
		return r, err
	}
	r.peer, err = measure()
	d.stop()
	if err != nil {
		return r, fmt.Errorf("dhcp against dnsmasq: %w", err)
	}
	return r, nil
}

// benchTFTP times downloads of a 30 MB file with blksize 1468 from each.
func (o *opts) benchTFTP() (result, error) {
	r := result{what: "TFTP: 30 MB file, blksize 1468", unit: "MB/s", peerName: "tftpd-hpa"}
	measure := func() (float64, error) {
		c, err := tftp.NewClient(o.serverIP + ":69")
		if err != nil {
			return 0, err
		}
		c.SetBlockSize(1468)
		c.SetTimeout(2 * time.Second)
		const n = 3
		start := time.Now()
		var total int64
		for range n {
			wt, err := c.Receive("big.bin", "octet")
			if err != nil {
				return 0, err
			}
			m, err := wt.WriteTo(io.Discard)
			if err != nil {
				return 0, err
			}
			total += m
		}
		if total != n*30<<20 {
			return 0, fmt.Errorf("received %d bytes, want %d", total, n*30<<20)
		}
		return float64(total) / 1e6 / time.Since(start).Seconds(), nil
	}
	s, err := o.startLocus()
	if err != nil {
		return r, err
	}
	r.locus, err = measure()
	s.stop()
	if err != nil {
		return r, fmt.Errorf("tftp against locus: %w", err)
	}
	t, err := o.start("tftpd-hpa", "in.tftpd", "--foreground", "--listen", "--address", o.serverIP+":69", "--user", "root", "--secure", filepath.Join(o.work, "root"))
	if err != nil {
		return r, err
	}
	r.peer, err = measure()
	t.stop()
	if err != nil {
		return r, fmt.Errorf("tftp against tftpd-hpa: %w", err)
	}
	return r, nil
}

// benchHTTP has 64 concurrent clients fetch the initramfs, 4 times each,
// and reports the aggregate throughput; it also records Locus's peak RSS.
func (o *opts) benchHTTP() (result, error) {
	r := result{what: "HTTP: initramfs, 64 concurrent clients", unit: "MB/s", peerName: "nginx"}
	st, err := os.Stat(filepath.Join(o.work, "root", "initramfs.cpio.zst"))
	if err != nil {
		return r, err
	}
	measure := func(base string) (float64, error) {
		const clients, rounds = 64, 4
		tr := &http.Transport{MaxConnsPerHost: clients, MaxIdleConnsPerHost: clients}
		hc := &http.Client{Transport: tr, Timeout: 2 * time.Minute}
		defer tr.CloseIdleConnections()
		var wg sync.WaitGroup
		var total atomic.Int64
		var firstErr atomic.Value
		start := time.Now()
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					resp, err := hc.Get(base + "/initramfs.cpio.zst")
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					n, _ := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					total.Add(n)
				}
			}()
		}
		wg.Wait()
		if e := firstErr.Load(); e != nil {
			return 0, e.(error)
		}
		if total.Load() != clients*rounds*st.Size() {
			return 0, fmt.Errorf("received %d bytes, want %d", total.Load(), clients*rounds*st.Size())
		}
		return float64(total.Load()) / 1e6 / time.Since(start).Seconds(), nil
	}
	s, err := o.startLocus()
	if err != nil {
		return r, err
	}
	r.locus, err = measure("http://" + o.serverIP + ":8080")
	rss := s.hwm()
	s.stop()
	if err != nil {
		return r, fmt.Errorf("http against locus: %w", err)
	}
	r.note = fmt.Sprintf("Locus peak RSS while serving: %.1f MB (goal < 64 MB)", rss)
	conf := filepath.Join(o.work, "nginx.conf")
	err = os.WriteFile(conf, []byte(fmt.Sprintf(`daemon off;
worker_processes %d;
pid %s/nginx.pid;
error_log stderr;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path %[2]s/nginx-tmp;
  server { listen %s:8081; root %s; }
}
`, runtime.NumCPU(), o.work, o.serverIP, filepath.Join(o.work, "root"))), 0o644)
	if err != nil {
		return r, err
	}
	n, err := o.start("nginx", "nginx", "-c", conf, "-e", "stderr")
	if err != nil {
		return r, err
	}
	r.peer, err = measure("http://" + o.serverIP + ":8081")
	n.stop()
	if err != nil {
		return r, fmt.Errorf("http against nginx: %w", err)
	}
	return r, nil
}

// writeResults replaces the netboot section of the results file.
func writeResults(path string, rs []result) error {
	var b bytes.Buffer
	host, _ := os.Hostname()
	cpu := "unknown CPU"
	if ci, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(ci), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	fmt.Fprintf(&b, "<!-- netboot:begin -->\n## Netboot (make bench-netboot)\n\n")
	fmt.Fprintf(&b, "Run %s on %s: %d cores (%s), Debian 12; client and server on a veth pair in a network namespace, one run, both servers measured the same way. Ratio = Locus / peer (above 1: Locus is faster).\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), cpu)
	fmt.Fprintf(&b, "| what | Locus | peer | ratio |\n|---|---|---|---|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %.1f %s | %s: %.1f %s | **%.2f** |\n", r.what, r.locus, r.unit, r.peerName, r.peer, r.unit, r.locus/r.peer)
	}
	for _, r := range rs {
		if r.note != "" {
			fmt.Fprintf(&b, "\n%s\n", r.note)
		}
	}
	fmt.Fprintf(&b, "<!-- netboot:end -->\n")
	old, _ := os.ReadFile(path)
	s := string(old)
	if s == "" {
		s = "# Benchmark results\n\nEach section is written by its `make bench-*` target; absolute numbers on this machine are noisy, ratios are not.\n\n"
	}
	if i, j := strings.Index(s, "<!-- netboot:begin -->"), strings.Index(s, "<!-- netboot:end -->\n"); i >= 0 && j > i {
		s = s[:i] + b.String() + s[j+len("<!-- netboot:end -->\n"):]
	} else {
		s += b.String()
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
