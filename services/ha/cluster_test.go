package ha_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/locus-ssi/locus/internal/testutil"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/ha"
	"github.com/locus-ssi/locus/services/locusd"
)

// haCluster is four real daemons on loopback with HA services in their
// spec.
type haCluster struct {
	*testutil.Daemons
	state string // the Dummy agent's state file
}

const spec = `cluster: {name: loop}
interconnect: {subnet: 127.0.79.0/24}
services:
  - name: single
    level: 3
    nodes: [2, 3, 4]
    command: [sh, -c, 'exec sleep 1000']
    ha: {}
  - name: flaky
    level: 3
    nodes: [3, 4]
    command: [sh, -c, 'sleep 0.2; exit 3']
    ha: {migration_threshold: 2}
  - name: dummy
    level: 3
    nodes: [3, 4]
    ocf: heartbeat/Dummy
    params: {state: STATE}
    ha: {monitor: {interval: 500ms}}
`

func startHACluster(t *testing.T) *haCluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("HA instances and OCF agents run as root")
	}
	if _, err := os.Stat(ha.DefaultOCFRoot + "/resource.d/heartbeat/Dummy"); err != nil {
		t.Fatalf("Debian's resource-agents is not installed (make deps): %v", err)
	}
	os.MkdirAll("/run/resource-agents", 0o1755)
	bin, err := testutil.LocusBinary(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &testutil.Daemons{T: t, Bin: bin, Dir: t.TempDir(), Procs: map[int]*exec.Cmd{}, Net: "127.0.79", Extra: map[int][]string{}}
	c := &haCluster{Daemons: d, state: filepath.Join(d.Dir, "dummy.state")}
	if err := os.WriteFile(filepath.Join(d.Dir, "locus.yaml"), []byte(strings.Replace(spec, "STATE", c.state, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for n := range d.Procs {
			d.Kill(n)
		}
		killService(t, "single")
		os.Remove(c.state)
	})
	for n := 1; n <= 4; n++ {
		d.Start(n)
	}
	d.Wait("four daemons Up", map[int]clms.State{1: clms.Up, 2: clms.Up, 3: clms.Up, 4: clms.Up})
	return c
}

// locus runs the CLI against node n's daemon as root on the node.
func (c *haCluster) locus(t *testing.T, n int, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(c.Bin, args...)
	cmd.Env = append(os.Environ(), "LOCUS_ENDPOINT="+c.Socket(n), "LOCUS_CONTEXT=", "HOME="+c.Dir)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), fmt.Errorf("locus %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (c *haCluster) services(t *testing.T, n int) map[string]ha.ServiceReport {
	t.Helper()
	out, err := c.locus(t, n, "service", "ls", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var reply locusd.ServicesReply
	if err := json.Unmarshal([]byte(out), &reply); err != nil {
		t.Fatalf("service ls: %v\n%s", err, out)
	}
	m := map[string]ha.ServiceReport{}
	for _, s := range reply.Services {
		m[s.Name] = s
	}
	return m
}

// waitInstance waits until instance 0 of svc is in state on node
// (node 0: any node) and returns it.
func (c *haCluster) waitInstance(t *testing.T, from int, svc string, node int, state string, within time.Duration) ha.InstanceReport {
	t.Helper()
	deadline := time.Now().Add(within)
	var last ha.ServiceReport
	for time.Now().Before(deadline) {
		last = c.services(t, from)[svc]
		for _, in := range last.Running {
			if in.Instance == "0" && (node == 0 || in.Node == node) && in.State == state {
				return in
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s never %s on node %d within %v: %+v", svc, state, node, within, last)
	return ha.InstanceReport{}
}

// servicePIDs are the processes of this machine started as instances
// of svc (by their LOCUS_SERVICE).
func servicePIDs(svc string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/environ")
		if bytes.Contains(b, []byte("LOCUS_SERVICE="+svc+"\x00")) && !bytes.Contains(b, []byte("LOCUS_TEST_PROBE")) {
			if st, _ := os.ReadFile("/proc/" + e.Name() + "/stat"); !bytes.Contains(st, []byte(") Z ")) {
				out = append(out, pid)
			}
		}
	}
	return out
}

func killService(t *testing.T, svc string) {
	for _, p := range servicePIDs(svc) {
		syscall.Kill(p, syscall.SIGKILL)
	}
}

// watchTwice samples the machine's processes until stop is closed and
// reports the most instances of svc seen at once.
func watchTwice(svc string, stop <-chan struct{}) <-chan int {
	most := make(chan int, 1)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				most <- n
				return
			case <-time.After(20 * time.Millisecond):
			}
			n = max(n, len(servicePIDs(svc)))
		}
	}()
	return most
}

func TestHAServicesOnFourDaemons(t *testing.T) {
	c := startHACluster(t)
	stop := make(chan struct{})
	most := watchTwice("single", stop)
	var once sync.Once
	var seen int
	endWatch := func() int { once.Do(func() { close(stop); seen = <-most }); return seen }
	defer endWatch()

	t.Run("a singleton runs on the first node of its list", func(t *testing.T) {
		in := c.waitInstance(t, 1, "single", 2, "running", 20*time.Second)
		if pids := servicePIDs("single"); len(pids) != 1 || pids[0] != in.PID {
			t.Fatalf("instance PID %d, processes of the service %v", in.PID, pids)
		}
	})

	t.Run("a local crash is restarted in place within a second", func(t *testing.T) {
		before := c.waitInstance(t, 3, "single", 2, "running", 5*time.Second)
		killed := time.Now()
		syscall.Kill(before.PID, syscall.SIGKILL)
		deadline := killed.Add(5 * time.Second)
		for {
			in := c.services(t, 3)["single"].Running[0]
			if in.Node == 2 && in.State == "running" && in.PID != before.PID {
				took := time.Since(killed)
				t.Logf("restarted on node 2 %v after the kill (restarts %d)", took.Round(time.Millisecond), in.Restarts)
				if took > time.Second || in.Restarts != before.Restarts+1 {
					t.Errorf("restart took %v (goal ≤ 1s), restarts %d", took, in.Restarts)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("not restarted: %+v", in)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("a node's fenced Down moves its instance within 2s", func(t *testing.T) {
		c.Kill(2)
		c.Wait("node 2 Down", map[int]clms.State{1: clms.Up, 2: clms.Down, 3: clms.Up, 4: clms.Up})
		in := c.waitInstance(t, 1, "single", 3, "running", 10*time.Second)
		st, err := c.Status(1)
		if err != nil {
			t.Fatal(err)
		}
		var down time.Time
		for _, n := range st.Nodes {
			if n.Node == 2 {
				down = n.Since
			}
		}
		gap := in.Since.Sub(down)
		t.Logf("node 2 Down at %s; single running on node 3 %v later (%s)", down.Format("15:04:05.000"), gap.Round(time.Millisecond), in.Why)
		if gap > 2*time.Second {
			t.Errorf("started elsewhere %v after the Down (goal ≤ 2s)", gap)
		}
	})

	t.Run("never on two nodes at once", func(t *testing.T) {
		if n := endWatch(); n != 1 {
			t.Errorf("at one moment %d processes of the singleton ran", n)
		}
	})

	t.Run("failures past migration_threshold move it, then ban every node", func(t *testing.T) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			s := c.services(t, 4)["flaky"]
			banned := 0
			for _, f := range s.Failures {
				if f.Banned || f.Count >= 2 {
					banned++
				}
			}
			if banned == 2 && len(s.Running) == 1 && s.Running[0].Node == 0 {
				t.Logf("flaky: %+v", s.Failures)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("flaky not banned from nodes 3 and 4: %+v", s)
			}
			time.Sleep(200 * time.Millisecond)
		}
		out, err := c.locus(t, 3, "service", "ls")
		if err != nil || !strings.Contains(out, "flaky") || !strings.Contains(out, "unplaced") {
			t.Errorf("service ls: %v\n%s", err, out)
		}
		t.Logf("locus service ls:\n%s", out)
	})

	t.Run("an OCF agent from resource-agents, moved by the operator", func(t *testing.T) {
		c.waitInstance(t, 1, "dummy", 3, "running", 20*time.Second)
		if _, err := os.Stat(c.state); err != nil {
			t.Fatalf("Dummy running, but its state file: %v", err)
		}
		if out, err := c.locus(t, 4, "service", "move", "dummy", "--to", "4"); err != nil {
			t.Fatalf("move: %v\n%s", err, out)
		}
		in := c.waitInstance(t, 1, "dummy", 4, "running", 20*time.Second)
		t.Logf("dummy on node 4: %s", in.Why)
		out, err := c.locus(t, 1, "service", "logs", "dummy")
		if err != nil || !strings.Contains(out, "node3 dummy/0 ocf: stop: OCF_SUCCESS") || !strings.Contains(out, "node4 dummy/0 ocf: start: OCF_SUCCESS") {
			t.Errorf("logs of the move: %v\n%s", err, out)
		}
		t.Logf("locus service logs dummy:\n%s", out)
		// The agent's monitor finds it gone: a local restart.
		os.Remove(c.state)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if in := c.services(t, 1)["dummy"].Running[0]; in.Node == 4 && in.Restarts >= 1 && in.State == "running" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a failed monitor did not restart dummy: %+v", c.services(t, 1)["dummy"])
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := c.locus(t, 2, "service", "stop", "dummy"); err == nil {
			t.Error("a stop through node 2's daemon, which is dead, worked")
		}
		if _, err := c.locus(t, 3, "service", "stop", "dummy"); err != nil {
			t.Fatal(err)
		}
		deadline = time.Now().Add(10 * time.Second)
		for {
			s := c.services(t, 1)["dummy"]
			if s.Stopped != "" && len(s.Running) == 0 {
				if _, err := os.Stat(c.state); err == nil {
					t.Error("stopped, but Dummy's state file is there")
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("dummy not stopped: %+v", s)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("bad verbs and names are refused", func(t *testing.T) {
		for _, args := range [][]string{{"service", "move", "nosuch"}, {"service", "move", "single", "--to", "9"}, {"service", "status", "nosuch"}} {
			if out, err := c.locus(t, 1, args...); err == nil {
				t.Errorf("%v worked: %s", args, out)
			}
		}
	})
}
