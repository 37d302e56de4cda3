//go:build vm

package qemu_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/services/ha"
	"github.com/locus-ssi/locus/services/locusd"
)

// haWeb is the HA service the VM tests put in their spec: busybox's
// httpd on port 8080 serving /etc (each node's own hostname), on node
// 3 by preference, else node 2, monitored over HTTP.
const haWeb = `services:
  - name: web
    level: 3
    nodes: [3, 2]
    command: [/usr/local/bin/busybox, httpd, -f, -p, "8080", -h, /etc]
    ha: {monitor: {interval: 1s, timeout: 1s, http: "http://127.0.0.1:8080/hostname"}}
`

// webInstance waits until the host sees web running on node (0: any)
// and returns its instance.
func webInstance(t *testing.T, host func(...string) (string, error), node int, within time.Duration) ha.InstanceReport {
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
				if s.Name == "web" && (node == 0 || in.Node == node) && in.State == "running" {
					return in
				}
			}
		}
	}
	t.Fatalf("web not running on node %d within %v:\n%s", node, within, last)
	return ha.InstanceReport{}
}

// checkWebServes fetches the page from node from, at node at's address,
// and wants at's hostname. (busybox-static's wget crashes in its
// resolver; its nc speaks the request.)
func checkWebServes(t *testing.T, locus func(...string) (string, error), from string, at int, subnet string) {
	t.Helper()
	addr := fmt.Sprintf("%s.%d", subnet, at)
	script := fmt.Sprintf(`printf 'GET /hostname HTTP/1.0\r\n\r\n' | /usr/local/bin/busybox nc -w 2 %s 8080`, addr)
	var out string
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		out, err = locus("qemu", "exec", from, "--", "/usr/local/bin/busybox", "sh", "-c", script)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if err == nil && strings.HasPrefix(out, "HTTP/1.") && strings.TrimSpace(lines[len(lines)-1]) == fmt.Sprintf("node%d", at) {
			return
		}
	}
	t.Errorf("node %s fetching http://%s:8080/hostname: %v %q", from, addr, err, out)
}
