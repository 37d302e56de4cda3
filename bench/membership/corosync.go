package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// corosyncCluster is Debian's corosync 3 (knet transport, its default
// timing: token 3 s plus 650 ms per node beyond two) run as n processes,
// each in a network namespace of its own on one bridge (10.99.0.N/24),
// as n machines on a LAN would be. A process's corosync.log (hires
// timestamps) says when its membership changed: "[QUORUM] Members[k]".
type corosyncCluster struct {
	dir    string
	prefix string // network namespace names: <prefix>br, <prefix>1..n
	n      int
	procs  map[int]*exec.Cmd
	logs   map[int]*logTail
}

// corosyncMissing says why corosync cannot run here ("" if it can).
func corosyncMissing() string {
	for _, tool := range []string{"corosync", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not installed"
		}
	}
	if os.Geteuid() != 0 {
		return "network namespaces need root"
	}
	return ""
}

func newCorosync(n int) (c *corosyncCluster, err error) {
	dir, err := os.MkdirTemp("", "locus-bench-corosync-")
	if err != nil {
		return nil, err
	}
	c = &corosyncCluster{dir: dir, prefix: fmt.Sprintf("lcs%d-", os.Getpid()), n: n, procs: map[int]*exec.Cmd{}, logs: map[int]*logTail{}}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	br := c.prefix + "br"
	cmds := [][]string{{"netns", "add", br}, {"-n", br, "link", "add", "br0", "type", "bridge"}, {"-n", br, "link", "set", "br0", "up"}}
	for i := 1; i <= n; i++ {
		ns, veth, port := fmt.Sprintf("%s%d", c.prefix, i), fmt.Sprintf("cs%d", i), fmt.Sprintf("csb%d", i)
		cmds = append(cmds,
			[]string{"netns", "add", ns},
			[]string{"link", "add", veth, "netns", ns, "type", "veth", "peer", "name", port, "netns", br},
			[]string{"-n", ns, "addr", "add", fmt.Sprintf("10.99.0.%d/24", i), "dev", veth},
			[]string{"-n", ns, "link", "set", veth, "up"},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"-n", br, "link", "set", port, "master", "br0"},
			[]string{"-n", br, "link", "set", port, "up"})
	}
	for _, args := range cmds {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("corosync: ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
	}
	var nodes strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&nodes, "  node {\n    ring0_addr: 10.99.0.%d\n    nodeid: %d\n  }\n", i, i)
	}
	for i := 1; i <= n; i++ {
		nd := filepath.Join(dir, fmt.Sprint(i))
		if err := os.MkdirAll(nd, 0o755); err != nil {
			return nil, err
		}
		conf := fmt.Sprintf("totem {\n  version: 2\n  cluster_name: bench\n  transport: knet\n  crypto_cipher: none\n  crypto_hash: none\n}\n"+
			"nodelist {\n%s}\nquorum {\n  provider: corosync_votequorum\n}\n"+
			"logging {\n  to_logfile: yes\n  logfile: %s\n  to_stderr: no\n  to_syslog: no\n  timestamp: hires\n}\n",
			nodes.String(), filepath.Join(nd, "corosync.log"))
		if err := os.WriteFile(filepath.Join(nd, "corosync.conf"), []byte(conf), 0o644); err != nil {
			return nil, err
		}
		c.logs[i] = &logTail{path: filepath.Join(nd, "corosync.log")}
	}
	for i := 1; i <= n; i++ {
		if err := c.start(i); err != nil {
			return nil, err
		}
	}
	all := make([]int, 0, n)
	for i := 1; i <= n; i++ {
		all = append(all, i)
	}
	if _, err := c.waitMembers(all, n, time.Minute); err != nil {
		return nil, err
	}
	return c, nil
}

// start runs node i's corosync in its namespace, with a /run and
// /var/lib/corosync of its own (ip netns exec gives it a mount
// namespace): each instance takes corosync's pid lock there.
func (c *corosyncCluster) start(i int) error {
	nd := filepath.Join(c.dir, fmt.Sprint(i))
	out, err := os.OpenFile(filepath.Join(nd, "stdout"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command("ip", "netns", "exec", fmt.Sprintf("%s%d", c.prefix, i), "sh", "-c",
		`mount -t tmpfs tmpfs /run && mkdir -p /run/corosync && mount -t tmpfs tmpfs /var/lib/corosync && exec corosync -f -c "$1"`,
		"sh", filepath.Join(nd, "corosync.conf"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("corosync %d: %w", i, err)
	}
	c.procs[i] = cmd
	return nil
}

// waitMembers waits until each of nodes logs a membership of count
// members (after what was already read), and returns when the last did.
func (c *corosyncCluster) waitMembers(nodes []int, count int, timeout time.Duration) (time.Time, error) {
	want := fmt.Sprintf("[QUORUM] Members[%d]:", count)
	seen := map[int]time.Time{}
	var last time.Time
	deadline := time.Now().Add(timeout)
	for len(seen) < len(nodes) {
		for _, i := range nodes {
			if _, ok := seen[i]; ok {
				continue
			}
			for _, l := range c.logs[i].next() {
				if strings.Contains(l, want) {
					seen[i] = time.Now()
					last = seen[i]
					break
				}
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("corosync: %d of %d nodes logged %q within %s (logs in %s)", len(seen), len(nodes), want, timeout, c.dir)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return last, nil
}

// killOne kills node victim's corosync (SIGKILL: no goodbye), returns the
// time until every survivor logged the smaller membership, then starts
// it again and waits until every node sees all n.
func (c *corosyncCluster) killOne(victim int) (time.Duration, error) {
	var survivors, all []int
	for i := 1; i <= c.n; i++ {
		all = append(all, i)
		if i != victim {
			survivors = append(survivors, i)
		}
		c.logs[i].next() // what came before the kill
	}
	start := time.Now()
	c.stop(victim, syscall.SIGKILL)
	last, err := c.waitMembers(survivors, c.n-1, time.Minute)
	if err != nil {
		return 0, err
	}
	if err := c.start(victim); err != nil {
		return 0, err
	}
	if _, err := c.waitMembers(all, c.n, time.Minute); err != nil {
		return 0, err
	}
	return last.Sub(start), nil
}

func (c *corosyncCluster) stop(i int, sig syscall.Signal) {
	cmd := c.procs[i]
	if cmd == nil {
		return
	}
	delete(c.procs, i)
	cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// close stops every corosync this bench started and removes the
// namespaces (the bridge's with them) and the directory.
func (c *corosyncCluster) close() {
	for i := range c.procs {
		c.stop(i, syscall.SIGTERM)
	}
	for i := 1; i <= c.n; i++ {
		exec.Command("ip", "netns", "del", fmt.Sprintf("%s%d", c.prefix, i)).Run()
	}
	exec.Command("ip", "netns", "del", c.prefix+"br").Run()
	os.RemoveAll(c.dir)
}

// logTail reads the lines appended to a file since the last call.
type logTail struct {
	path    string
	off     int64
	partial []byte
}

func (t *logTail) next() []string {
	f, err := os.Open(t.path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(t.off, 0); err != nil {
		return nil
	}
	var buf bytes.Buffer
	n, err := buf.ReadFrom(f)
	if err != nil {
		return nil
	}
	t.off += n
	data := append(t.partial, buf.Bytes()...)
	i := bytes.LastIndexByte(data, '\n')
	if i < 0 {
		t.partial = data
		return nil
	}
	t.partial = append([]byte(nil), data[i+1:]...)
	return strings.Split(string(data[:i]), "\n")
}
