//go:build vm

package qemu_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/locus-ssi/locus/services/ha"
	"github.com/locus-ssi/locus/services/locusd"
	"github.com/locus-ssi/locus/services/lvs"
)

// haSpec is what the GFS2 VM test adds to its spec: busybox's httpd
// serving /etc (each node's own hostname) as two HA services, web on
// nodes 2 and 3 behind the cluster IP 10.87.0.100:8080, and solo, a
// singleton on node 3 or 2, on port 8081. Node 1 is neither a real
// server nor a director: a client of the cluster IP.
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
cluster_ip:
  address: 10.87.0.100
  directors: [3, 2]
  ports:
    - {port: 8080, scheduler: rr, service: web}
`

const clusterIP = "10.87.0.100"

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
		if (director == 0 && r.Director.Node != 0 || r.Director.Node == director) && len(r.Table) == 1 {
			var got []string
			for _, a := range r.Table[0].Servers {
				got = append(got, a.String())
			}
			if slices.Equal(got, servers) {
				return r
			}
		}
	}
	t.Fatalf("cluster IP not directed by node %d with real servers %v within %v:\n%s", director, servers, within, last)
	return lvs.Report{}
}

// clientLoop asks the cluster IP from node 1 again and again until
// stop is closed, and returns when each answer came and from whom.
type probe struct {
	at   time.Time
	from string // "" for no answer
}

func clientLoop(locus func(...string) (string, error), stop <-chan struct{}) (get func() []probe) {
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
			got, err := fetch(locus, "1", clusterIP, 8080)
			if err != nil {
				got = ""
			}
			mu.Lock()
			probes = append(probes, probe{time.Now(), got})
			mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return func() []probe {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return probes
	}
}
