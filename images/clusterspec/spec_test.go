package clusterspec

import (
	"errors"
	"io/fs"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParseEmptyGivesDefaults(t *testing.T) {
	for _, in := range []string{"", "\n", "# only a comment\n", "---\n"} {
		s, err := Parse("locus.yaml", []byte(in))
		if err != nil {
			t.Fatalf("Parse(%q) = %v, want nil", in, err)
		}
		if s.Cluster.Name != DefaultClusterName || s.Interconnect.Subnet != DefaultSubnet || s.RunLevel != DefaultRunLevel ||
			s.Kernel.Package != DefaultKernelPackage || s.Root.Source != RootInitramfs || s.Console != DefaultConsole {
			t.Errorf("Parse(%q) = %+v, want defaults", in, s)
		}
	}
}

func TestExamplesParse(t *testing.T) {
	err := fs.WalkDir(Examples, "examples", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := Examples.ReadFile(p)
		if err != nil {
			return err
		}
		if _, err := Parse(p, data); err != nil {
			t.Errorf("example %s: %v", p, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestExampleShowsEveryKey(t *testing.T) {
	ex := string(ExampleSpec())
	for _, key := range []string{"cluster:", "name:", "interconnect:", "subnet:", "addressing:", "gateway:", "dns:",
		"nodes:", "number:", "mac:", "hostname:", "addr:", "kernel:", "package:", "image:", "modules:", "cmdline:",
		"runlevel:", "root:", "source:", "services:", "level:", "command:", "oneshot:", "ha:", "instances:", "placement:", "monitor:", "migration_threshold:", "failure_timeout:", "ocf:", "params:", "console:", "netboot:", "admission:", "pool:", "lease_seconds:", "new_macs_per_minute:"} {
		if !strings.Contains(ex, key) {
			t.Errorf("example spec does not show key %q", key)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		want     []string // substrings of the error
	}{
		{"unknown top key", "cluster:\n  name: a\nnodez: []\n", []string{"locus.yaml:3", `unknown key "nodez"`, `did you mean "nodes"`}},
		{"unknown nested key", "interconnect:\n  subnett: 10.0.0.0/24\n", []string{"locus.yaml:2", `"interconnect.subnett"`, `"subnet"`}},
		{"unknown key in node row", "nodes:\n  - number: 1\n    macc: x\n", []string{"locus.yaml:3", `"nodes[0].macc"`}},
		{"wrong type int", "runlevel: three\n", []string{"locus.yaml:1", `key "runlevel"`, "want an integer", `"three"`}},
		{"wrong type list", "modules: fuse\n", []string{"locus.yaml:1", `key "modules"`, "want a list"}},
		{"wrong type mapping", "cluster: demo\n", []string{"locus.yaml:1", `key "cluster"`, "want a mapping"}},
		{"wrong type bool", "services:\n  - name: a\n    level: 1\n    command: [x]\n    oneshot: maybe\n", []string{"locus.yaml:5", "want true or false"}},
		{"syntax", "cluster:\n  name: [\n", []string{"locus.yaml:"}},
		{"bad subnet", "interconnect:\n  subnet: 10.77.0.0\n", []string{"interconnect.subnet", "CIDR"}},
		{"host bits", "interconnect:\n  subnet: 10.77.0.5/24\n", []string{"host bits", "10.77.0.0/24"}},
		{"dup mac", "nodes:\n  - {number: 1, mac: '52:54:00:00:00:01'}\n  - {number: 2, mac: '52:54:00:00:00:01'}\n", []string{"nodes[1].mac", "nodes[0]"}},
		{"dup number", "nodes:\n  - {number: 1}\n  - {number: 1}\n", []string{"nodes[1].number"}},
		{"bad mac", "nodes:\n  - {number: 1, mac: 'zz'}\n", []string{"nodes[0].mac"}},
		{"addr outside subnet", "nodes:\n  - {number: 1, addr: 10.1.0.1}\n", []string{"nodes[0].addr", "outside"}},
		{"node number beyond subnet", "interconnect: {subnet: 10.0.0.0/29}\nnodes:\n  - {number: 9}\n", []string{"nodes[0].addr", "holds 6 hosts"}},
		{"runlevel range", "runlevel: 9\n", []string{"runlevel", "between 1 and 5"}},
		{"bad module", "modules: ['../evil']\n", []string{"modules[0]"}},
		{"bad root", "root: {source: zfs}\n", []string{"root.source", "zfs"}},
		{"nfs root without server", "root: {source: nfs, nfs: {export: srv}}\n", []string{"root.nfs.server", "root.nfs.export"}},
		{"mount root without fstype", "root: {source: mount, device: /dev/sdb1}\n", []string{"root.fstype"}},
		{"nfs keys on a cfs root", "root: {source: cfs, nfs: {server: 10.0.0.1}}\n", []string{"root.nfs", "applies only"}},
		{"private path leaving the root", "root: {source: cfs, private: [etc/x, /../x, /cluster/node1]}\n", []string{"root.private[0]", "root.private[1]", "root.private[2]"}},
		{"two_node with three nodes", "membership: {two_node: true}\nnodes:\n  - {number: 1}\n  - {number: 2}\n  - {number: 3}\n", []string{"membership.two_node", "has 3"}},
		{"two_node expecting three", "membership: {two_node: true, expected_nodes: 3}\n", []string{"membership.two_node", "expected_nodes is 3"}},
		{"wait_for_all without a count", "membership: {wait_for_all: true}\n", []string{"membership.wait_for_all", "expected_nodes"}},
		{"cfs keys on an nfs root", "root: {source: nfs, nfs: {server: 10.0.0.1, export: /srv}, cfs: {standby: 2}}\n", []string{"root.cfs", "applies only"}},
		{"cfs standby is the server", "root: {source: cfs, cfs: {standby: 1}}\n", []string{"root.cfs.standby", "node 1"}},
		{"cfs address without standby", "root: {source: cfs, cfs: {address: 10.77.0.100}}\n", []string{"root.cfs.address", "standby"}},
		{"cfs address outside subnet", "root: {source: cfs, cfs: {standby: 2, address: 10.1.0.100}}\n", []string{"root.cfs.address", "outside"}},
		{"cfs patience not a duration", "root: {source: cfs, cfs: {standby: 2, patience: soon}}\n", []string{"root.cfs.patience", "soon", "hard"}},
		{"cfs patience too short", "root: {source: cfs, cfs: {standby: 2, patience: 10ms}}\n", []string{"root.cfs.patience", "10ms"}},
		{"private on an initramfs root", "root: {private: [/etc/hostname]}\n", []string{"root.private", "shared root"}},
		{"image without modules", "kernel: {package: '', image: /boot/vmlinuz}\n", []string{"kernel.modules"}},
		{"bad admission", "netboot: {admission: maybe}\n", []string{"netboot.admission"}},
		{"pool outside", "netboot: {pool: 10.1.0.1-10.1.0.9}\n", []string{"netboot.pool"}},
		{"pool backwards", "netboot: {pool: 10.77.0.9-10.77.0.1}\n", []string{"netboot.pool"}},
		{"service without command", "services:\n  - {name: x, level: 2}\n", []string{"services[0].command"}},
		{"ha placement", "services:\n  - {name: x, level: 3, command: [a], ha: {placement: random}}\n", []string{"services[0].ha", "placement", "random"}},
		{"ha instances", "services:\n  - {name: x, level: 3, command: [a], ha: {instances: many}}\n", []string{"services[0].ha", "instances"}},
		{"ha two probes", "services:\n  - {name: x, level: 3, command: [a], ha: {monitor: {tcp: 'h:1', http: 'http://h/'}}}\n", []string{"services[0].ha", "monitor"}},
		{"ha bad duration", "services:\n  - {name: x, level: 3, command: [a], ha: {failure_timeout: soon}}\n", []string{"failure_timeout", "soon"}},
		{"ocf and command", "services:\n  - {name: x, level: 3, command: [a], ocf: heartbeat/Dummy, ha: {}}\n", []string{"services[0].ocf", "not both"}},
		{"ocf bad name", "services:\n  - {name: x, level: 3, ocf: '../evil', ha: {}}\n", []string{"services[0].ocf"}},
		{"ocf without ha", "services:\n  - {name: x, level: 3, command: [a], ocf: heartbeat/Dummy}\n", []string{"services[0].ocf", "HA service"}},
		{"ha param name", "services:\n  - {name: x, level: 3, ocf: heartbeat/Dummy, params: {'a b': 1}, ha: {}}\n", []string{"services[0].params"}},
		{"ha oneshot", "services:\n  - {name: x, level: 3, command: [a], oneshot: true, ha: {}}\n", []string{"services[0].oneshot"}},
		{"ha name", "services:\n  - {name: 'a/b', level: 3, command: [a], ha: {}}\n", []string{"services[0].name"}},
		{"ha params not a map", "services:\n  - {name: x, level: 3, ocf: heartbeat/Dummy, params: [1], ha: {}}\n", []string{"services[0].params", "mapping"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("locus.yaml", []byte(tt.in))
			if err == nil {
				t.Fatalf("Parse(%q) = nil, want an error", tt.in)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse(%q) = %q, want it to contain %q", tt.in, err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") && !strings.Contains(err.Error(), "invalid spec") {
				t.Errorf("syntax error spans lines: %q", err)
			}
		})
	}
}

func TestSyntaxErrorsAreTyped(t *testing.T) {
	_, err := Parse("x.yaml", []byte("bogus: 1\n"))
	if !errors.Is(err, ErrSpecSyntax) {
		t.Errorf("Parse = %v, want errors.Is ErrSpecSyntax", err)
	}
}

// TestCFSService: without a standby the service is node 1's own
// address; with one it is a floating address below the netboot pool, or
// the one the spec gives.
func TestCFSService(t *testing.T) {
	for _, tc := range []struct {
		yaml, want string
		moves      bool
	}{
		{"root: {source: cfs}\n", "10.77.0.1/24", false},
		{"root: {source: cfs, cfs: {standby: 2}}\n", "10.77.0.127/24", true},
		{"root: {source: cfs, cfs: {standby: 3, address: 10.77.0.99}}\n", "10.77.0.99/24", true},
	} {
		s, err := Parse("locus.yaml", []byte(tc.yaml))
		if err != nil {
			t.Fatalf("%s: %v", tc.yaml, err)
		}
		got, moves, err := s.CFSService()
		if err != nil || got.String() != tc.want || moves != tc.moves {
			t.Errorf("%s: CFSService = %s, %v, %v; want %s, %v", tc.yaml, got, moves, err, tc.want, tc.moves)
		}
	}
}

func TestNodeAddressing(t *testing.T) {
	s, err := Parse("t", ImageTestSpec)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		n    int
		want string
	}{{1, "10.9.0.1/24"}, {3, "10.9.0.33/24"}, {7, "10.9.0.7/24"}} {
		got, err := s.NodeAddr(tt.n)
		if err != nil || got.String() != tt.want {
			t.Errorf("NodeAddr(%d) = %v, %v, want %s", tt.n, got, err, tt.want)
		}
	}
	row, ok := s.NodeByMAC(net.HardwareAddr{0x52, 0x54, 0, 0x4c, 0, 2})
	if !ok || row.Number != 2 || row.Hostname != "beta" {
		t.Errorf("NodeByMAC = %+v, %v, want node 2 beta", row, ok)
	}
	if _, ok := s.NodeByMAC(net.HardwareAddr{1, 2, 3, 4, 5, 6}); ok {
		t.Errorf("NodeByMAC(unknown) found a row")
	}
}

// ImageTestSpec is a small spec the tests share.
var ImageTestSpec = []byte(`
cluster: {name: t}
interconnect: {subnet: 10.9.0.0/24}
nodes:
  - {number: 1, mac: "52:54:00:4c:00:01"}
  - {number: 2, mac: "52:54:00:4c:00:02", hostname: beta}
  - {number: 3, mac: "52:54:00:4c:00:03", addr: 10.9.0.33}
`)

func FuzzParse(f *testing.F) {
	f.Add([]byte(""))
	f.Add(ExampleSpec())
	f.Add(ImageTestSpec)
	f.Add([]byte("nodes:\n  - number: 1\n    macc: x\n"))
	f.Add([]byte("runlevel: &a 3\nx: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse("fuzz.yaml", data)
		if err != nil {
			return
		}
		// A spec that parses is valid and usable.
		if err := s.Validate(); err != nil {
			t.Fatalf("Parse accepted a spec that does not validate: %v", err)
		}
		for _, n := range s.Nodes {
			if _, err := s.NodeAddr(n.Number); err != nil {
				t.Fatalf("valid spec, node %d has no address: %v", n.Number, err)
			}
		}
	})
}

func TestFenceAction(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		node int
		want string
	}{
		{"cluster: {name: a}\n", 3, FenceReboot},
		{"cluster: {name: a}\nfencing: {action: off}\n", 3, FenceOff},
		{"cluster: {name: a}\nroot: {source: cfs, cfs: {standby: 2}}\n", 1, FenceOff},
		{"cluster: {name: a}\nroot: {source: cfs, cfs: {standby: 2}}\n", 2, FenceOff},
		{"cluster: {name: a}\nroot: {source: cfs, cfs: {standby: 2}}\n", 3, FenceReboot},
		{"cluster: {name: a}\nroot: {source: cfs, cfs: {standby: 2}}\nfencing: {action: reboot}\n", 1, FenceReboot},
	} {
		s, err := Parse("t.yaml", []byte(tc.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		if got := s.FenceAction(tc.node); got != tc.want {
			t.Errorf("%q: node %d fenced %s, want %s", tc.yaml, tc.node, got, tc.want)
		}
	}
	if _, err := Parse("t.yaml", []byte("cluster: {name: a}\nfencing: {action: cycle}\n")); err == nil || !strings.Contains(err.Error(), "fencing.action") {
		t.Errorf("fencing.action cycle: %v", err)
	}
}

// TestCFSPatience: hard by default and when said, else a duration.
func TestCFSPatience(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "hard": 0, "90s": 90 * time.Second, "2m": 2 * time.Minute} {
		if got, err := (CFSRoot{Patience: in}).Wait(); err != nil || got != want {
			t.Errorf("patience %q: %v, %v; want %v", in, got, err, want)
		}
	}
}

// TestHAService: an HA service's defaults, and that init leaves it to
// the cluster.
func TestHAService(t *testing.T) {
	s, err := Parse("locus.yaml", []byte("services:\n  - {name: web, level: 3, nodes: [2, 3], command: [httpd], ha: {instances: 2, monitor: {http: 'http://127.0.0.1/'}}}\n  - {name: d, level: 3, ocf: 'ocf:heartbeat:Dummy', params: {state: /run/x}, ha: {instances: all}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.ServicesFor(2, 3); len(got) != 0 {
		t.Errorf("init would start HA services itself: %+v", got)
	}
	st, err := s.Services[0].HA.Settings()
	if err != nil || st.Instances != 2 || st.Placement != PlacePrefer || st.MigrationThreshold != 3 || st.FailureTimeout != 10*time.Minute || st.MonitorInterval != 10*time.Second {
		t.Errorf("web's settings: %+v %v", st, err)
	}
	if st, _ := s.Services[1].HA.Settings(); !st.All {
		t.Errorf("instances: all read as %+v", st)
	}
	if len(s.HAServices()) != 2 {
		t.Errorf("HA services: %+v", s.HAServices())
	}
}
