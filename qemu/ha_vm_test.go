//go:build vm

package qemu_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/locus-ssi/locus/qemu"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/events"
	"github.com/locus-ssi/locus/services/ha"
	"github.com/locus-ssi/locus/services/locusd"
	"github.com/locus-ssi/locus/services/lvs"
)

// haSpec is what the GFS2 VM test adds to its spec: busybox's httpd
// serving /etc (each node's own hostname) as two HA services, web on
// nodes 2 and 3 behind the cluster IP 10.87.0.100:8080, and solo, a
// singleton on node 3 or 2, on port 8081; and echo, busybox's nc as a
// line echo server on node 2 only, behind 10.87.0.100:8082 (the real
// server of a held connection). Node 1 is neither a real server nor a
// director: a client of the cluster IP.
const haSpec = `services:
  - name: web
    level: 3
    nodes: [2, 3]
    command: [/usr/local/bin/busybox, httpd, -f, -p, "8080", -h, /etc]
    ha: {instances: all, monitor: {interval: 1s, timeout: 1s, http: "http://127.0.0.1:8080/hostname"}}
  - name: solo
    level: 3
    nodes: [3, 2]
    command: [/usr/local/bin/busybox, httpd, -f, -p, "8081", -h, /etc]
    ha: {monitor: {interval: 1s, timeout: 1s, http: "http://127.0.0.1:8081/hostname"}}
  - name: echo
    level: 3
    nodes: [2]
    command: [/usr/local/bin/busybox, nc, -ll, -p, "8082", -e, /usr/local/bin/busybox, cat]
    ha: {instances: all, monitor: {interval: 1s, timeout: 1s, tcp: "127.0.0.1:8082"}}
cluster_ip:
  address: 10.87.0.100
  directors: [3, 2]
  ports:
    - {port: 8080, scheduler: rr, service: web}
    - {port: 8082, scheduler: rr, service: echo}
`

const clusterIP = "10.87.0.100"

// outsider is a client of the cluster that is none of its nodes: a
// network namespace of the host's plugged into the VMs' segment (a tap
// relayed onto it) at 10.87.0.200, asking with Go's net/http.
type outsider struct {
	ns   string
	http *http.Client
}

func newOutsider(t *testing.T, state string) *outsider {
	t.Helper()
	ns := fmt.Sprintf("locus-cli-%d", os.Getpid())
	ip := ipCmd(t)
	ip("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	tap, err := qemu.AttachSegment(qemu.SegmentFor(state), ns, "cli0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tap.Close() })
	ip("-n", ns, "link", "set", "lo", "up")
	ip("-n", ns, "link", "set", "cli0", "up")
	ip("-n", ns, "addr", "add", "10.87.0.200/24", "dev", "cli0")
	o := &outsider{ns: ns}
	o.http = &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(_ context.Context, network, addr string) (net.Conn, error) {
			return o.dial(network, addr, time.Second)
		}}}
	return o
}

func (o *outsider) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	return qemu.DialIn(o.ns, network, addr, timeout)
}

// get asks addr:port for /hostname and returns who answered.
func (o *outsider) get(addr string, port int) (string, error) {
	resp, err := o.http.Get(fmt.Sprintf("http://%s:%d/hostname", addr, port))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %v %s", resp.Status, err, b)
	}
	return strings.TrimSpace(string(b)), nil
}

// serviceInstance waits until the host sees service running on node
// (0: any) and returns its instance.
func serviceInstance(t *testing.T, host func(...string) (string, error), service string, node int, within time.Duration) ha.InstanceReport {
	t.Helper()
	var last string
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		out, err := host("service", "ls", "--output", "json")
		last = fmt.Sprintf("%v: %s", err, out)
		if err != nil {
			continue
		}
		var reply locusd.ServicesReply
		if json.Unmarshal([]byte(out), &reply) != nil {
			continue
		}
		for _, s := range reply.Services {
			for _, in := range s.Running {
				if s.Name == service && (node == 0 || in.Node == node) && in.State == "running" {
					return in
				}
			}
		}
	}
	t.Fatalf("%s not running on node %d within %v:\n%s", service, node, within, last)
	return ha.InstanceReport{}
}

// fetch asks addr:port for /hostname from node from (busybox-static's
// wget crashes in its resolver; its nc speaks the request) and returns
// the hostname that answered.
func fetch(locus func(...string) (string, error), from, addr string, port int) (string, error) {
	script := fmt.Sprintf(`printf 'GET /hostname HTTP/1.0\r\n\r\n' | /usr/local/bin/busybox nc -w 1 %s %d`, addr, port)
	out, err := locus("qemu", "exec", from, "--", "/usr/local/bin/busybox", "sh", "-c", script)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(out, "HTTP/1.") {
		return "", fmt.Errorf("no HTTP answer: %q", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return strings.TrimSpace(lines[len(lines)-1]), nil
}

// checkServes wants node at's hostname from addr:port, asked from node
// from, within 10 s.
func checkServes(t *testing.T, locus func(...string) (string, error), from, addr string, port, at int) {
	t.Helper()
	var got string
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if got, err = fetch(locus, from, addr, port); err == nil && got == fmt.Sprintf("node%d", at) {
			return
		}
	}
	t.Errorf("node %s fetching http://%s:%d/hostname: %v %q, want node%d", from, addr, port, err, got, at)
}

// waitClusterIP waits until the host sees the cluster IP directed by
// director (0: any node) with port 8080's real servers exactly servers.
func waitClusterIP(t *testing.T, host func(...string) (string, error), director int, servers []string, within time.Duration) lvs.Report {
	t.Helper()
	var last string
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		out, err := host("clusterip", "--output", "json")
		last = fmt.Sprintf("%v: %s", err, out)
		var r lvs.Report
		if err != nil || json.Unmarshal([]byte(out), &r) != nil {
			continue
		}
		if (director == 0 && r.Director.Node != 0 || r.Director.Node == director) && !r.Director.Releasing {
			for _, v := range r.Table {
				if v.Port != 8080 {
					continue
				}
				var got []string
				for _, a := range v.Servers {
					got = append(got, a.String())
				}
				if slices.Equal(got, servers) {
					return r
				}
			}
		}
	}
	t.Fatalf("cluster IP not directed by node %d with real servers %v within %v:\n%s", director, servers, within, last)
	return lvs.Report{}
}

// clientLoop asks the cluster IP from the outsider again and again
// until stop is closed, and returns when each ask began and ended and who
// answered.
type probe struct {
	start, at time.Time
	from      string // "" for no answer
}

// longestGap is the longest time around t without an answer: from the
// end of an answered probe to the end of the next answered one, over
// the answered probes that ended after t (and the last one before).
func longestGap(ps []probe, t time.Time) (gap time.Duration, firstAfter time.Time) {
	var last time.Time
	for _, p := range ps {
		if p.from == "" {
			continue
		}
		if p.at.After(t) && !last.IsZero() {
			gap = max(gap, p.at.Sub(last))
		}
		if p.start.After(t) && firstAfter.IsZero() {
			firstAfter = p.at
		}
		last = p.at
	}
	return gap, firstAfter
}

func clientLoop(o *outsider, stop <-chan struct{}) (get func() []probe) {
	var mu sync.Mutex
	var probes []probe
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			got, err := o.get(clusterIP, 8080)
			if err != nil {
				got = ""
			}
			mu.Lock()
			probes = append(probes, probe{start, time.Now(), got})
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return func() []probe {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return probes
	}
}

// moveDirector moves the cluster IP to node to with locus clusterip
// move while the outsider holds a TCP connection through it to the
// echo server on node 2, and wants the connection to go on after the
// move: when to is node 3, it reaches node 2 only by the connection
// node 2's IPVS synchronised to node 3 while it directed (a new
// director with no entry for it answers its packets with a reset). It
// returns the longest time the web port went unanswered across the
// move.
func moveDirector(t *testing.T, locus, host func(...string) (string, error), o *outsider, to int) time.Duration {
	t.Helper()
	c, err := o.dial("tcp", clusterIP+":8082", 5*time.Second)
	if err != nil {
		t.Fatalf("the outsider's connection to %s:8082: %v", clusterIP, err)
	}
	defer c.Close()
	echo := func(line string) {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, line+"\n"); err != nil {
			t.Fatalf("the held connection through the cluster IP: send %q: %v", line, err)
		}
		buf := make([]byte, len(line)+1)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != line+"\n" {
			t.Fatalf("the held connection through the cluster IP: echo of %q: %q %v", line, buf, err)
		}
	}
	echo("one")
	// The connection is in node to's IPVS table before it directs: the
	// director's sync daemon sent it to the backups.
	conn := fmt.Sprintf("%08X %04X", ipv4Hex(clusterIP), 8082)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(300 * time.Millisecond) {
		out, err := locus("qemu", "exec", fmt.Sprint(to), "--", "/usr/local/bin/busybox", "cat", "/proc/net/ip_vs_conn")
		if err == nil && strings.Contains(out, conn) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d's IPVS has no synchronised connection to %s:8082 (%s): %v\n%s", to, clusterIP, conn, err, out)
		}
	}
	stop := make(chan struct{})
	probes := clientLoop(o, stop)
	time.Sleep(time.Second)
	asked := time.Now()
	if out, err := host("clusterip", "move", fmt.Sprint(to)); err != nil {
		t.Fatalf("clusterip move %d: %v\n%s", to, err, out)
	}
	rep := waitClusterIP(t, host, to, []string{"10.87.0.2", "10.87.0.3"}, 30*time.Second)
	t.Logf("cluster IP moved to node %d: seen %v after the move was asked (%s)", to, time.Since(asked).Round(time.Millisecond), rep.Director.Why)
	echo("two")
	time.Sleep(time.Second)
	close(stop)
	gap, _ := longestGap(probes(), asked)
	t.Logf("the connection held from outside to node 2's echo server went on through the move; the web port's longest gap: %v", gap.Round(time.Millisecond))
	return gap
}

// ipv4Hex is a dotted IPv4 address as one number (how /proc/net/ip_vs_conn
// prints addresses).
func ipv4Hex(a string) uint32 {
	var b [4]uint32
	fmt.Sscanf(a, "%d.%d.%d.%d", &b[0], &b[1], &b[2], &b[3])
	return b[0]<<24 | b[1]<<16 | b[2]<<8 | b[3]
}

// checkPartitionedSingleton moves solo to node 3, cuts node 3's link
// (locus qemu link 3 down: it runs on, alone), and wants solo started on
// node 2 only after node 2 applied node 3's Down, which the master
// commits only once node 3 is fenced; node 3 comes back with the
// fence's reboot.
func checkPartitionedSingleton(t *testing.T, locus, host func(...string) (string, error), state string) {
	t.Helper()
	if in := serviceInstance(t, host, "solo", 0, time.Minute); in.Node != 3 {
		if out, err := host("service", "move", "solo", "--to", "3"); err != nil {
			t.Fatalf("service move solo --to 3: %v\n%s", err, out)
		}
	}
	serviceInstance(t, host, "solo", 3, time.Minute)
	mark := map[int]int{}
	for _, n := range []int{2, 3} {
		evs, _ := qemu.ReadEventLog(qemu.EventLog(state, n))
		mark[n] = len(evs)
	}
	cut := time.Now()
	if out, err := locus("qemu", "link", "3", "down"); err != nil {
		t.Fatalf("qemu link 3 down: %v\n%s", err, out)
	}
	in := serviceInstance(t, host, "solo", 2, 2*time.Minute)
	moved := time.Now()
	locus("qemu", "link", "3", "up") // the fence's reboot has most likely brought it up already
	fenced := fenceTime(t, state, 3, cut)
	t.Logf("node 3 cut off: fenced %.1fs later, solo seen on node 2 %.1fs later (%s)", fenced.Sub(cut).Seconds(), moved.Sub(cut).Seconds(), in.Why)
	evs, _ := qemu.ReadEventLog(qemu.EventLog(state, 2))
	evs = evs[min(mark[2], len(evs)):]
	down := slices.IndexFunc(evs, func(e events.Event) bool {
		return e.Kind == events.TransitionApplied && e.Subject == 3 && e.State == string(clms.Down)
	})
	started := slices.IndexFunc(evs, func(e events.Event) bool { return e.Kind == events.ServiceStarted && e.Name == "solo" })
	switch {
	case started < 0:
		t.Errorf("node 2's feed has no start of solo after node 3 was cut off")
	case down < 0 || down > started:
		t.Errorf("node 2 started solo (event %d) before it applied node 3's Down (event %d): on two nodes at once", started, down)
	default:
		t.Logf("node 2 applied node 3's Down, then started solo %v later", evs[started].At.Sub(evs[down].At).Round(time.Millisecond))
	}
	// Node 3 itself: it stopped solo when it lost quorum, or was fenced
	// first; it never started it again while cut off.
	evs3, _ := qemu.ReadEventLog(qemu.EventLog(state, 3))
	evs3 = evs3[min(mark[3], len(evs3)):]
	for i, e := range evs3 {
		if e.Name != "solo" {
			continue
		}
		switch e.Kind {
		case events.ServiceStopped:
			t.Logf("node 3 stopped solo itself, without quorum (%s after the cut, by its clock)", e.At.Sub(cut).Round(100*time.Millisecond))
		case events.ServiceStarted:
			if slices.ContainsFunc(evs3[:i], func(e events.Event) bool { return e.Kind == events.PhaseStarted }) {
				continue // after the fence's reboot
			}
			t.Errorf("node 3 started solo while cut off: %v", e)
		}
	}
	for deadline := time.Now().Add(4 * time.Minute); ; time.Sleep(2 * time.Second) {
		if st, err := clusterStatus(host); err == nil && stateOf(st, 3) == clms.Up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node 3 not back Up within 4 min of its fence")
		}
	}
}
