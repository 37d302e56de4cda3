package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/pin/tftp/v3"
)

// The boot storm: stormNodes machines of the node table power on at once
// and boot as a BIOS PXE ROM and then iPXE do, against one `locus netboot
// serve`, over a veth shaped to stormRate bits a second (a 10 GbE
// interconnect).
const (
	stormNodes = 256
	stormRate  = 10e9
)

// bootStorm is what the storm measured.
type bootStorm struct {
	nodes             int
	all               time.Duration // power-on of all to the last byte of the last one
	p50, p99          time.Duration // each node's own boot (DHCP to its last byte)
	bytes             int64         // payload served
	wire              time.Duration // bytes at stormRate
	cpu               time.Duration // the server's CPU time (user+system) during the storm
	rss               float64       // the server's peak RSS, MB
	dhcpRetries       int
	dhcpP99, tftpP99  time.Duration
	scripts, failures int
}

// stormMAC is node n's MAC in the storm's node table.
func stormMAC(n int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0xb0, 0, 0, byte(n >> 8), byte(n)}
}

// stormAddr is node n's address (outside the dynamic pool and the
// servers' own addresses).
func stormAddr(n int) netip.Addr { return netip.AddrFrom4([4]byte{10, 77, byte(2 + n>>8), byte(n)}) }

// benchBootStorm runs the storm once: a spec whose node table lists the
// machines, their addresses added to the client side of the veth (each
// node fetches its script and files from its own address, as a real node
// does), the server's egress shaped with tbf.
func (o *opts) benchBootStorm() (bootStorm, error) {
	var r bootStorm
	var spec strings.Builder
	spec.WriteString("cluster: {name: storm}\ninterconnect: {subnet: 10.77.0.0/16}\nnetboot: {admission: deny, pool: 10.77.1.0-10.77.1.250}\nnodes:\n")
	var ipBatch bytes.Buffer
	for i := range stormNodes {
		n := i + 2
		fmt.Fprintf(&spec, "  - {number: %d, mac: %q, addr: %s}\n", n, stormMAC(n), stormAddr(n))
		fmt.Fprintf(&ipBatch, "addr replace %s/32 dev %s\n", stormAddr(n), o.clientIf)
	}
	specFile := filepath.Join(o.work, "storm.yaml")
	if err := os.WriteFile(specFile, []byte(spec.String()), 0o644); err != nil {
		return r, err
	}
	ipc := exec.Command("ip", "-batch", "-")
	ipc.Stdin = &ipBatch
	if out, err := ipc.CombinedOutput(); err != nil {
		return r, fmt.Errorf("add the nodes' addresses: %w: %s", err, out)
	}
	if o.serverNS != "" {
		tc := []string{"ip", "netns", "exec", o.serverNS, "tc", "qdisc"}
		if out, err := exec.Command(tc[0], append(tc[1:], "replace", "dev", o.serverIf, "root", "tbf", "rate", "10gbit", "burst", "4mb", "latency", "50ms")...).CombinedOutput(); err != nil {
			return r, fmt.Errorf("shape %s: %w: %s", o.serverIf, err, out)
		}
		defer exec.Command(tc[0], append(tc[1:], "del", "dev", o.serverIf, "root")...).Run()
	}
	srv, err := o.start("locus-storm", o.locus, "netboot", "serve", "--interface", o.serverIf,
		"--root", filepath.Join(o.work, "root"), "--spec", specFile,
		"--state-dir", filepath.Join(o.work, "locus-storm-state"))
	if err != nil {
		return r, err
	}
	defer srv.stop()
	lg, err := newDHCPLoad(o.clientIf)
	if err != nil {
		return r, err
	}
	defer lg.close()
	cpu0 := procCPU(srv.cmd.Process.Pid)

	type nodeRun struct {
		took, dhcp, tftp time.Duration
		bytes            int64
		retries          int
		script           bool
		err              error
	}
	runs := make([]nodeRun, stormNodes)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	for i := range stormNodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := i + 2
			nr := &runs[i]
			t0 := time.Now()
			nr.err = func() error {
				// The PXE ROM: DORA as a BIOS PXE client, then its boot
				// file over TFTP.
				ack, tries, err := lg.doraKind(ctx, stormMAC(n), false)
				nr.retries += tries
				if err != nil {
					return fmt.Errorf("pxe dhcp: %w", err)
				}
				nr.dhcp = time.Since(t0)
				if ack.BootFileName != "undionly.kpxe" {
					return fmt.Errorf("pxe ack names %q, want undionly.kpxe", ack.BootFileName)
				}
				t1 := time.Now()
				m, err := tftpGet(o.serverIP, ack.BootFileName)
				if err != nil {
					return fmt.Errorf("tftp %s: %w", ack.BootFileName, err)
				}
				nr.tftp = time.Since(t1)
				nr.bytes += m
				// iPXE: DORA again (its user class), then its script and
				// the kernel and initramfs over HTTP, from its address.
				ack, tries, err = lg.doraKind(ctx, stormMAC(n), true)
				nr.retries += tries
				if err != nil {
					return fmt.Errorf("ipxe dhcp: %w", err)
				}
				if got := ack.YourIPAddr.String(); got != stormAddr(n).String() {
					return fmt.Errorf("ipxe ack gives %s, want the table's %s", got, stormAddr(n))
				}
				hc := &http.Client{Timeout: 4 * time.Minute, Transport: &http.Transport{
					DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ack.YourIPAddr}}).DialContext}}
				defer hc.CloseIdleConnections()
				script, err := httpGet(ctx, hc, ack.BootFileName)
				if err != nil {
					return fmt.Errorf("script: %w", err)
				}
				nr.script = bytes.Contains(script, []byte("#!ipxe"))
				nr.bytes += int64(len(script))
				for _, f := range []string{"vmlinuz", "initramfs.cpio.zst"} {
					b, err := httpGetCount(ctx, hc, "http://"+o.serverIP+":8080/"+f)
					if err != nil {
						return fmt.Errorf("%s: %w", f, err)
					}
					nr.bytes += b
				}
				return nil
			}()
			nr.took = time.Since(t0)
		}()
	}
	wg.Wait()
	r.all = time.Since(start)
	r.cpu = procCPU(srv.cmd.Process.Pid) - cpu0
	r.rss = srv.hwm()
	r.nodes = stormNodes
	var took, dh, tf []time.Duration
	for _, nr := range runs {
		if nr.err != nil {
			r.failures++
			if r.failures == 1 {
				fmt.Printf("boot storm: first failure: %v\n", nr.err)
			}
			continue
		}
		took, dh, tf = append(took, nr.took), append(dh, nr.dhcp), append(tf, nr.tftp)
		r.bytes += nr.bytes
		r.dhcpRetries += nr.retries
		if nr.script {
			r.scripts++
		}
	}
	if r.failures > 0 {
		return r, fmt.Errorf("boot storm: %d of %d nodes failed to boot\n%s", r.failures, stormNodes, srv.logTail())
	}
	r.p50, r.p99 = pct(took, 50), pct(took, 99)
	r.dhcpP99, r.tftpP99 = pct(dh, 99), pct(tf, 99)
	r.wire = time.Duration(float64(r.bytes) * 8 / stormRate * float64(time.Second))
	return r, nil
}

func pct(v []time.Duration, p int) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)]
}

// procCPU is a process's user+system CPU time so far.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func tftpGet(server, file string) (int64, error) {
	c, err := tftp.NewClient(server + ":69")
	if err != nil {
		return 0, err
	}
	c.SetBlockSize(1468)
	c.SetTimeout(2 * time.Second)
	c.SetRetries(5)
	wt, err := c.Receive(file, "octet")
	if err != nil {
		return 0, err
	}
	return wt.WriteTo(io.Discard)
}

func httpGet(ctx context.Context, hc *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

func httpGetCount(ctx context.Context, hc *http.Client, url string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("GET %s: %d bytes of %d", url, n, resp.ContentLength)
	}
	return n, err
}

// doraKind runs one DORA as a BIOS PXE ROM (ipxe false) or as iPXE,
// retransmitting as a client does (here after 2 s, three times); it
// returns the ACK and how many retransmissions it took.
func (l *dhcpLoad) doraKind(ctx context.Context, mac net.HardwareAddr, ipxe bool) (*dhcpv4.DHCPv4, int, error) {
	mods := []dhcpv4.Modifier{dhcpv4.WithBroadcast(true)}
	if ipxe {
		mods = append(mods, dhcpv4.WithUserClass("iPXE", false))
	} else {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
			dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)))
	}
	retries := 0
	for {
		ack, err := l.doraOnce(ctx, mac, mods)
		if err == nil || ctx.Err() != nil || retries == 3 {
			return ack, retries, err
		}
		retries++
	}
}

func (l *dhcpLoad) doraOnce(ctx context.Context, mac net.HardwareAddr, mods []dhcpv4.Modifier) (*dhcpv4.DHCPv4, error) {
	disc, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		return nil, err
	}
	offer, err := l.exchange(ctx, disc, dhcpv4.MessageTypeOffer)
	if err != nil {
		return nil, err
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, mods...)
	if err != nil {
		return nil, err
	}
	return l.exchange(ctx, req, dhcpv4.MessageTypeAck)
}

// writeBootStorm is the storm's part of the netboot section.
func writeBootStorm(b *bytes.Buffer, r bootStorm) {
	fmt.Fprintf(b, "\n### Boot storm: %d PXE nodes at once against one `locus netboot serve`\n\n", r.nodes)
	fmt.Fprintf(b, "Every node of a %d-row node table powers on at the same moment and boots as a BIOS PXE ROM and iPXE do: DHCP (PXE client), `undionly.kpxe` over TFTP (blksize 1468), DHCP again (iPXE), its script, the kernel and the initramfs over HTTP from its own address (added to the client side of the veth). The server side of the veth is shaped to 10 Gbit/s (tbf), a cluster interconnect's line rate; the wire time is the payload at that rate.\n\n", r.nodes)
	fmt.Fprintf(b, "| what | measured |\n|---|---|\n")
	fmt.Fprintf(b, "| nodes served (all with their script) | %d of %d (%d scripts) |\n", r.nodes-r.failures, r.nodes, r.scripts)
	fmt.Fprintf(b, "| payload served | %.2f GB |\n", float64(r.bytes)/1e9)
	fmt.Fprintf(b, "| time until all were served | %.2f s |\n", r.all.Seconds())
	fmt.Fprintf(b, "| the wire's time for that payload at 10 Gbit/s | %.2f s |\n", r.wire.Seconds())
	fmt.Fprintf(b, "| time over the wire's | %+.1f %% (goal: at most +10 %%) |\n", 100*(r.all.Seconds()/r.wire.Seconds()-1))
	fmt.Fprintf(b, "| each node's boot (first DISCOVER to last byte), p50 / p99 | %.2f s / %.2f s |\n", r.p50.Seconds(), r.p99.Seconds())
	fmt.Fprintf(b, "| DHCP (PXE) p99; TFTP of undionly.kpxe p99 | %s; %s |\n", fmtDur(r.dhcpP99), fmtDur(r.tftpP99))
	fmt.Fprintf(b, "| DHCP retransmissions | %d |\n", r.dhcpRetries)
	fmt.Fprintf(b, "| server CPU (user+system) | %.2f s (%.0f %% of one core over the storm) |\n", r.cpu.Seconds(), 100*r.cpu.Seconds()/r.all.Seconds())
	fmt.Fprintf(b, "| server peak RSS | %.1f MB (goal < 64 MB) |\n", r.rss)
}
