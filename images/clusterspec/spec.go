package clusterspec

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Spec is a cluster spec, the contents of locus.yaml.
type Spec struct {
	// Cluster names the cluster.
	Cluster Cluster `yaml:"cluster" json:"cluster"`
	// Interconnect is the private network the nodes share.
	Interconnect Interconnect `yaml:"interconnect" json:"interconnect"`
	// Nodes is the node table: pre-registered nodes by number and MAC.
	Nodes []Node `yaml:"nodes" json:"nodes"`
	// Kernel says where the kernel and its modules come from.
	Kernel Kernel `yaml:"kernel" json:"kernel"`
	// Modules are kernel modules loaded at boot beyond the base set.
	Modules []string `yaml:"modules" json:"modules"`
	// RunLevel is the cluster's target run level (1-5).
	RunLevel int `yaml:"runlevel" json:"runlevel"`
	// Root says where every node's root filesystem comes from.
	Root Root `yaml:"root" json:"root"`
	// Services are started on the way up to the run level.
	Services []Service `yaml:"services" json:"services"`
	// ClusterIP is the cluster's one address for clients (IPVS).
	ClusterIP *ClusterIP `yaml:"cluster_ip" json:"cluster_ip,omitempty"`
	// Console is the kernel console device, ttyS0 by default.
	Console string `yaml:"console" json:"console"`
	// Netboot configures the built-in DHCP/TFTP/HTTP service.
	Netboot Netboot `yaml:"netboot" json:"netboot"`
	// Membership tunes the membership service (CLMS).
	Membership Membership `yaml:"membership" json:"membership"`
	// Fencing says how a failed node is powered off before it is taken
	// Down.
	Fencing Fencing `yaml:"fencing" json:"fencing"`
}

// Fencing configures STONITH.
type Fencing struct {
	// Agent is a fence-agent command (fence-agents style: options on
	// stdin, action=off plug=<node>). Empty: on a Locus QEMU VM, its
	// virtual BMC (locus fence); elsewhere, no fencing.
	Agent []string `yaml:"agent" json:"agent,omitempty"`
	// TimeoutSeconds bounds one agent run (default 30).
	TimeoutSeconds int `yaml:"timeout_seconds" json:"timeout_seconds"`
	// Action is what fencing does to a failed node: "reboot" (power it
	// off, then on: Pacemaker's fencing-action default, so a node that
	// crashed and came straight back costs one more boot, never a dead
	// node) or "off" (it stays off until an operator starts it). Empty:
	// reboot, except off for the nodes that mount an HA-CFS root's disk
	// (node 1 and the standby: see FenceAction).
	Action string `yaml:"action" json:"action,omitempty"`
	// SelfFenceSeconds, if set, powers a node off once it has been
	// without quorum that long and its gossip no longer sees a majority
	// of the voters (0: never).
	SelfFenceSeconds int `yaml:"self_fence_seconds" json:"self_fence_seconds,omitempty"`
}

// Fence actions (fencing.action).
const (
	FenceReboot = "reboot"
	FenceOff    = "off"
)

// FenceAction is what fencing does to node n: fencing.action if set;
// otherwise reboot, except off for a node that mounts the disk of a CFS
// root that fails over (node 1, and the standby): rebooted, it would
// race the node that took the disk over to mount it. (A booting node 1
// also refuses to mount it while another node serves it; off does not
// rely on that check's timing.)
func (s *Spec) FenceAction(n int) string {
	if s.Fencing.Action != "" {
		return s.Fencing.Action
	}
	if s.Root.Source == RootCFS && s.Root.CFS.Standby != 0 && (n == 1 || n == s.Root.CFS.Standby) {
		return FenceOff
	}
	return FenceReboot
}

// Membership tunes the membership service.
type Membership struct {
	// Profile is the failure-detection timing: "auto" (steady, or
	// emulated on an emulated CPU), "steady" (a node that stalls alone
	// for up to a second stays; a silent one is Down in about 1.5 s),
	// "lan" (sub-second detection on real hardware, opt-in: it fences a
	// node that stalls for a few hundred milliseconds),
	// "emulated" (timeouts five to ten times longer, for QEMU without
	// KVM) or "default" (memberlist's own defaults).
	Profile string `yaml:"profile" json:"profile"`
	// WaitForAll is corosync votequorum's wait_for_all: at first start no
	// node is taken Up until ExpectedNodes nodes have been alive at once.
	WaitForAll bool `yaml:"wait_for_all" json:"wait_for_all,omitempty"`
	// ExpectedNodes is how many nodes wait_for_all waits for (default:
	// the rows of the node table).
	ExpectedNodes int `yaml:"expected_nodes" json:"expected_nodes,omitempty"`
	// TwoNode is corosync votequorum's two_node, for a cluster of exactly
	// two nodes: either goes on alone when the other fails, once the
	// fence agent has powered the other off. As in corosync, it turns
	// wait_for_all on: the first start waits for both nodes.
	TwoNode bool `yaml:"two_node" json:"two_node,omitempty"`
}

// WaitForAll returns how many nodes the cluster waits for at first start
// (0: none).
func (s *Spec) WaitForAll() int {
	if s.Membership.TwoNode {
		return 2
	}
	if !s.Membership.WaitForAll {
		return 0
	}
	if s.Membership.ExpectedNodes > 0 {
		return s.Membership.ExpectedNodes
	}
	return len(s.Nodes)
}

// Netboot configures how new nodes boot from the network.
type Netboot struct {
	// Admission is what happens to a MAC not in the node table: "deny"
	// (ignored), "discover" (an address and a boot that waits until an
	// operator runs `locus node accept`), or "accept".
	Admission string `yaml:"admission" json:"admission"`
	// Pool is the dynamic address range for nodes not in the table,
	// "first-last"; default: the upper half of the subnet.
	Pool string `yaml:"pool" json:"pool"`
	// LeaseSeconds is the DHCP lease time.
	LeaseSeconds int `yaml:"lease_seconds" json:"lease_seconds"`
	// NewMACsPerMinute bounds the MACs outside the node table the netboot
	// service takes in a minute, and in one burst (default 64): a rack of
	// new machines powered on together fits, a flood of made-up MACs does
	// not. A site that powers on more unlisted machines at once raises it.
	NewMACsPerMinute int `yaml:"new_macs_per_minute" json:"new_macs_per_minute"`
}

// Admission policies for MACs not in the node table.
const (
	AdmitDeny     = "deny"
	AdmitDiscover = "discover"
	AdmitAccept   = "accept"
)

// Cluster holds the cluster-wide identity.
type Cluster struct {
	Name string `yaml:"name" json:"name"`
}

// Interconnect is the cluster's private network.
type Interconnect struct {
	// Subnet in CIDR form, e.g. 10.77.0.0/24.
	Subnet string `yaml:"subnet" json:"subnet"`
	// Addressing is "static" (node N gets the address in its row, or the
	// N-th host of the subnet) or "dhcp".
	Addressing string `yaml:"addressing" json:"addressing"`
	// Gateway and DNS are handed to nodes; both optional.
	Gateway string   `yaml:"gateway" json:"gateway"`
	DNS     []string `yaml:"dns" json:"dns"`
}

// Node is one row of the node table.
type Node struct {
	Number   int    `yaml:"number" json:"number"`
	MAC      string `yaml:"mac" json:"mac"`
	Hostname string `yaml:"hostname" json:"hostname"`
	// Addr overrides the node's interconnect address (no prefix length).
	Addr string `yaml:"addr" json:"addr"`
}

// Kernel says where the kernel comes from: a Debian package (default
// linux-image-amd64) or the user's own image and module tree.
type Kernel struct {
	Package string `yaml:"package" json:"package"`
	Image   string `yaml:"image" json:"image"`
	Modules string `yaml:"modules" json:"modules"`
	// Cmdline is appended to the kernel command line of every node.
	Cmdline string `yaml:"cmdline" json:"cmdline"`
}

// Root says where the nodes' root filesystem comes from.
type Root struct {
	// Source is where every node's / comes from: "initramfs" (each node
	// runs from its own initramfs, nothing shared), "cfs" (the install
	// disk's root partition, served by the init node to every other over
	// 9P2000.L), "nfs" (a given NFS export) or "mount" (any kernel
	// filesystem: device, type and options, the GFS2/Lustre slot).
	Source string `yaml:"source" json:"source"`
	// CFS is how a cfs root is served: its standby and service address.
	CFS CFSRoot `yaml:"cfs" json:"cfs,omitempty"`
	// NFS is the export of an nfs root.
	NFS NFSRoot `yaml:"nfs" json:"nfs,omitempty"`
	// GFS2 shapes a gfs2 root: one disk every node sees (a SAN LUN; in
	// QEMU one raw image attached to every VM), which every node mounts
	// itself, its caches kept coherent by the kernel's DLM.
	GFS2 GFS2Root `yaml:"gfs2" json:"gfs2,omitempty"`
	// Device, FSType and Options are the mount(2) arguments of a mount
	// root, e.g. /dev/sdb1, gfs2, "".
	Device  string `yaml:"device" json:"device,omitempty"`
	FSType  string `yaml:"fstype" json:"fstype,omitempty"`
	Options string `yaml:"options" json:"options,omitempty"`
	// Private lists the paths of a shared root that differ per node: node
	// N sees /cluster/node<N>/<path> there (default: /etc/hostname).
	Private []string `yaml:"private" json:"private,omitempty"`
	// Content is what the shared root on the install disk holds:
	// "minimal" (the initramfs' own tools), "debootstrap" (a Debian root
	// made from Debian's packages) or "tarball" (a root filesystem tar, or
	// an OCI image archive, given by the user).
	Content string `yaml:"content" json:"content"`
	// Suite, Mirror and Packages shape a debootstrap root: the Debian
	// release, where its packages come from, and packages beyond the
	// minimal base.
	Suite    string   `yaml:"suite" json:"suite,omitempty"`
	Mirror   string   `yaml:"mirror" json:"mirror,omitempty"`
	Packages []string `yaml:"packages" json:"packages,omitempty"`
	// Tarball is the tar (gzip, zstd, xz or bzip2 compressed, or not) of
	// a tarball root; relative paths are from the spec's directory.
	Tarball string `yaml:"tarball" json:"tarball,omitempty"`
}

// GFS2Root configures a gfs2 root.
type GFS2Root struct {
	// Journals is how many nodes may mount it at once (one journal
	// each; more can be added later with gfs2_jadd). Default 8.
	Journals int `yaml:"journals" json:"journals,omitempty"`
	// SizeMB is the size of the disk image the builder makes (for QEMU
	// clusters). Default 1024.
	SizeMB int `yaml:"size_mb" json:"size_mb,omitempty"`
}

// GFS2Table is the lock table of the cluster's gfs2 root:
// "<cluster>:root". Its lockspace is "root".
func (s *Spec) GFS2Table() string { return s.Cluster.Name + ":" + GFS2FSName }

// GFS2FSName is the gfs2 root's filesystem name (its lockspace).
const GFS2FSName = "root"

// CFSRoot configures the CFS server of a cfs root, and its failover
// (HA-CFS): node 1 serves its root partition; Standby, a node that sees
// the same disk (shared storage), takes the service over when node 1 is
// fenced and Down.
type CFSRoot struct {
	// Standby is the node that takes the CFS service over; 0 is none
	// (the cluster's root is lost with node 1).
	Standby int `yaml:"standby" json:"standby,omitempty"`
	// Address is the service address the other nodes mount the root
	// from; it moves to the standby with the service. Default, with a
	// standby: the last address of the interconnect's lower half (below
	// the netboot pool).
	Address string `yaml:"address" json:"address,omitempty"`
	// Patience is how long a node's calls on the shared root wait for
	// the CFS service to come back (its server failing over) before
	// they fail with EIO: "hard" (the default) waits as long as it
	// takes, as an NFS hard mount does, saying so on the console; a
	// duration such as "2m" is a soft mount's limit.
	Patience string `yaml:"patience" json:"patience,omitempty"`
}

// PatienceHard is root.cfs.patience's default: wait for the server.
const PatienceHard = "hard"

// Wait is root.cfs.patience as a duration, 0 for hard.
func (c CFSRoot) Wait() (time.Duration, error) {
	if c.Patience == "" || c.Patience == PatienceHard {
		return 0, nil
	}
	d, err := time.ParseDuration(c.Patience)
	if err != nil || d < time.Second {
		return 0, fmt.Errorf("%q is not %q or a duration of a second or more (e.g. 2m)", c.Patience, PatienceHard)
	}
	return d, nil
}

// NFSRoot is an NFS export used as the shared root.
type NFSRoot struct {
	// Server is the NFS server's IP address.
	Server string `yaml:"server" json:"server,omitempty"`
	// Export is the exported path, e.g. /srv/locus-root.
	Export string `yaml:"export" json:"export,omitempty"`
	// Options are extra mount options (default vers=4.2).
	Options string `yaml:"options" json:"options,omitempty"`
}

// Shared reports whether every node's / is one shared filesystem.
func (r Root) Shared() bool { return r.Source != RootInitramfs }

// Service is started by init on the way up to the cluster's run level.
type Service struct {
	Name string `yaml:"name" json:"name"`
	// Level is the run level at which the service starts (1-5).
	Level int `yaml:"level" json:"level"`
	// Command is the argv to run.
	Command []string `yaml:"command" json:"command"`
	// Nodes lists the node numbers to run on; empty means all.
	Nodes []int `yaml:"nodes" json:"nodes"`
	// Oneshot services must exit 0 before the level counts as reached;
	// others are daemons, restarted when they exit.
	Oneshot bool `yaml:"oneshot" json:"oneshot"`
	// OCF names an OCF resource agent to run instead of a command
	// (heartbeat/Dummy: $OCF_ROOT/resource.d/heartbeat/Dummy), with
	// Params as its OCF_RESKEY_ variables; HA services only.
	OCF    string            `yaml:"ocf" json:"ocf,omitempty"`
	Params map[string]string `yaml:"params" json:"params,omitempty"`
	// HA, if given, makes this an HA service (see HA): from Level on,
	// the cluster keeps its instances running on nodes it picks among
	// Nodes (empty: any).
	HA *HA `yaml:"ha" json:"ha,omitempty"`
}

// Defaults of an empty spec.
const (
	DefaultClusterName   = "locus"
	DefaultSubnet        = "10.77.0.0/24"
	DefaultRunLevel      = 3
	DefaultKernelPackage = "linux-image-amd64"
	DefaultConsole       = "ttyS0"
	RootInitramfs        = "initramfs"
	RootCFS              = "cfs"
	RootNFS              = "nfs"
	RootMount            = "mount"
	RootGFS2             = "gfs2"
	ContentMinimal       = "minimal"
	ContentDebootstrap   = "debootstrap"
	ContentTarball       = "tarball"
	DefaultSuite         = "bookworm"
	DefaultMirror        = "http://deb.debian.org/debian"
	AddressingStatic     = "static"
	AddressingDHCP       = "dhcp"
)

// BaseModules returns the modules loaded on every node: the NICs and virtio
// devices of the machines Locus boots on (QEMU and common servers), the
// entropy source, the exec channel, and ext4 for the install disk's
// partitions (with crc32c, which ext4 asks for at mount time rather than
// as a module dependency), the kernel's DLM (with configfs, its
// configuration), which every node's daemon drives, and FUSE, which
// serves the clusterwide /proc on every node.
func BaseModules() []string {
	return []string{"virtio_pci", "virtio_net", "virtio_blk", "virtio_console", "virtio_rng", "e1000", "e1000e", "crc32c_generic", "ext4", "qemu_fw_cfg", "configfs", "dlm", "fuse"}
}

// DefaultClusterSpec is the cluster `locus image build` makes without a
// spec: every key at its default but the root, which is the install
// disk's, served by node 1 (CFS) with node 2 as its standby. Under
// `locus qemu up` node 2 sees node 1's disk, so the failover can be
// shown without writing a spec.
const DefaultClusterSpec = `# The default cluster: one shared root served by node 1 (CFS); node 2,
# which sees node 1's disk, takes it over if node 1 fails (HA-CFS).
root:
  source: cfs
  cfs: {standby: 2}
`

// LoadForBuild is the spec an image is built from: the one at path, or
// with no path the default cluster (DefaultClusterSpec), which is what
// `locus image build` and `locus image spec` without a file both use.
func LoadForBuild(path string) (*Spec, []byte, error) {
	if path != "" {
		return Load(path)
	}
	s, err := Parse("the default cluster spec", []byte(DefaultClusterSpec))
	return s, []byte(DefaultClusterSpec), err
}

// Load reads and validates the spec at path. An empty path means an empty
// spec (all defaults).
func Load(path string) (*Spec, []byte, error) {
	if path == "" {
		s, err := Parse("locus.yaml", nil)
		return s, nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("images: read spec: %w", err)
	}
	s, err := Parse(path, data)
	return s, data, err
}

// Parse decodes and validates a spec; name is used in error messages.
func Parse(name string, data []byte) (*Spec, error) {
	var s Spec
	if err := decodeStrict(name, data, &s); err != nil {
		return nil, err
	}
	s.applyDefaults()
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("images: %s: %w", name, err)
	}
	return &s, nil
}

func (s *Spec) applyDefaults() {
	if s.Cluster.Name == "" {
		s.Cluster.Name = DefaultClusterName
	}
	if s.Interconnect.Subnet == "" {
		s.Interconnect.Subnet = DefaultSubnet
	}
	if s.Interconnect.Addressing == "" {
		s.Interconnect.Addressing = AddressingStatic
	}
	if s.RunLevel == 0 {
		s.RunLevel = DefaultRunLevel
	}
	if s.Kernel.Package == "" && s.Kernel.Image == "" {
		s.Kernel.Package = DefaultKernelPackage
	}
	if s.Root.Source == "" {
		s.Root.Source = RootInitramfs
	}
	if s.Root.Shared() && len(s.Root.Private) == 0 {
		s.Root.Private = []string{"/etc/hostname"}
	}
	if s.Root.Source == RootGFS2 {
		if s.Root.GFS2.Journals == 0 {
			s.Root.GFS2.Journals = 8
		}
		if s.Root.GFS2.SizeMB == 0 {
			s.Root.GFS2.SizeMB = 1024
		}
	}
	if s.Root.Source == RootNFS && s.Root.NFS.Options == "" {
		s.Root.NFS.Options = "vers=4.2"
	}
	if s.Root.Content == "" {
		s.Root.Content = ContentMinimal
	}
	if s.Root.Content == ContentDebootstrap {
		if s.Root.Suite == "" {
			s.Root.Suite = DefaultSuite
		}
		if s.Root.Mirror == "" {
			s.Root.Mirror = DefaultMirror
		}
	}
	if s.Console == "" {
		s.Console = DefaultConsole
	}
	if s.Netboot.Admission == "" {
		// With no node table nothing is pre-registered: the operator has
		// chosen a first-come cluster (the QEMU demo, a lab). With a
		// table, only its machines boot.
		s.Netboot.Admission = AdmitDeny
		if len(s.Nodes) == 0 {
			s.Netboot.Admission = AdmitAccept
		}
	}
	if s.Fencing.TimeoutSeconds == 0 {
		s.Fencing.TimeoutSeconds = 30
	}
	if s.Membership.Profile == "" {
		s.Membership.Profile = "auto"
	}
	if s.Netboot.NewMACsPerMinute == 0 {
		s.Netboot.NewMACsPerMinute = 64
	}
	if s.Netboot.LeaseSeconds == 0 {
		s.Netboot.LeaseSeconds = 3600
	}
	for i := range s.Nodes {
		if s.Nodes[i].Hostname == "" {
			s.Nodes[i].Hostname = fmt.Sprintf("node%d", s.Nodes[i].Number)
		}
	}
}

var (
	nameRE     = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	moduleRE   = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	consoleRE  = regexp.MustCompile(`^[A-Za-z0-9]+(,[0-9]+[a-z0-9]*)?$`)
	errInvalid = errors.New("invalid spec")
)

// Validate checks a spec after defaults are applied. Errors name the key.
func (s *Spec) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if !nameRE.MatchString(s.Cluster.Name) {
		bad("cluster.name", "%q must be a DNS label (lower-case letters, digits, '-')", s.Cluster.Name)
	}
	prefix, err := netip.ParsePrefix(s.Interconnect.Subnet)
	switch {
	case err != nil:
		bad("interconnect.subnet", "%q is not a CIDR subnet like 10.77.0.0/24", s.Interconnect.Subnet)
	case !prefix.Addr().Is4():
		bad("interconnect.subnet", "%q: only IPv4 interconnects are supported", s.Interconnect.Subnet)
	case prefix.Bits() > 30:
		bad("interconnect.subnet", "%q is too small for a cluster (at most /30)", s.Interconnect.Subnet)
	case prefix.Masked() != prefix:
		bad("interconnect.subnet", "%q has host bits set (did you mean %s?)", s.Interconnect.Subnet, prefix.Masked())
	}
	switch s.Interconnect.Addressing {
	case AddressingStatic, AddressingDHCP:
	default:
		bad("interconnect.addressing", "%q must be %q or %q", s.Interconnect.Addressing, AddressingStatic, AddressingDHCP)
	}
	if s.Interconnect.Gateway != "" {
		if a, err := netip.ParseAddr(s.Interconnect.Gateway); err != nil || (prefix.IsValid() && !prefix.Contains(a)) {
			bad("interconnect.gateway", "%q is not an address in %s", s.Interconnect.Gateway, s.Interconnect.Subnet)
		}
	}
	for i, d := range s.Interconnect.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			bad(fmt.Sprintf("interconnect.dns[%d]", i), "%q is not an IP address", d)
		}
	}
	seenNum, seenMAC, seenHost, seenAddr := map[int]int{}, map[string]int{}, map[string]int{}, map[netip.Addr]int{}
	for i, n := range s.Nodes {
		key := fmt.Sprintf("nodes[%d]", i)
		if n.Number < 1 {
			bad(key+".number", "%d must be 1 or more", n.Number)
		} else if j, dup := seenNum[n.Number]; dup {
			bad(key+".number", "node %d is also nodes[%d]", n.Number, j)
		}
		seenNum[n.Number] = i
		if n.MAC != "" {
			hw, err := net.ParseMAC(n.MAC)
			if err != nil || len(hw) != 6 {
				bad(key+".mac", "%q is not an Ethernet MAC like 52:54:00:12:34:56", n.MAC)
			} else if j, dup := seenMAC[hw.String()]; dup {
				bad(key+".mac", "%s is also the MAC of nodes[%d]", hw, j)
			} else {
				seenMAC[hw.String()] = i
			}
		}
		if !nameRE.MatchString(n.Hostname) {
			bad(key+".hostname", "%q must be a DNS label", n.Hostname)
		} else if j, dup := seenHost[n.Hostname]; dup {
			bad(key+".hostname", "%q is also the hostname of nodes[%d]", n.Hostname, j)
		}
		seenHost[n.Hostname] = i
		if prefix.IsValid() && n.Number >= 1 {
			a, err := s.nodeAddr(prefix, n)
			if err != nil {
				bad(key+".addr", "%v", err)
			} else if j, dup := seenAddr[a]; dup {
				bad(key+".addr", "%s is also the address of nodes[%d]", a, j)
			} else {
				seenAddr[a] = i
			}
		}
	}
	if s.RunLevel < 1 || s.RunLevel > 5 {
		bad("runlevel", "%d must be between 1 and 5", s.RunLevel)
	}
	if s.Kernel.Image != "" && s.Kernel.Package != "" {
		bad("kernel", "give either package or image, not both")
	}
	if s.Kernel.Image != "" && s.Kernel.Modules == "" {
		bad("kernel.modules", "a kernel image needs its module tree (lib/modules/<version>)")
	}
	for i, m := range s.Modules {
		if !moduleRE.MatchString(m) {
			bad(fmt.Sprintf("modules[%d]", i), "%q is not a module name", m)
		}
	}
	s.validateSource(bad)
	s.validateContent(bad)
	if s.Fencing.SelfFenceSeconds < 0 || s.Fencing.SelfFenceSeconds > 3600 {
		bad("fencing.self_fence_seconds", "%d must be between 0 (off) and 3600", s.Fencing.SelfFenceSeconds)
	}
	if a := s.Fencing.Action; a != "" && a != FenceReboot && a != FenceOff {
		bad("fencing.action", "%q: want reboot or off", a)
	}
	if s.Fencing.TimeoutSeconds < 1 || s.Fencing.TimeoutSeconds > 600 {
		bad("fencing.timeout_seconds", "%d must be between 1 and 600", s.Fencing.TimeoutSeconds)
	}
	if s.Membership.ExpectedNodes < 0 {
		bad("membership.expected_nodes", "%d must be positive", s.Membership.ExpectedNodes)
	}
	if s.Membership.WaitForAll && s.Membership.ExpectedNodes == 0 && len(s.Nodes) == 0 {
		bad("membership.wait_for_all", "needs membership.expected_nodes or a node table to know how many nodes to wait for")
	}
	if s.Membership.TwoNode {
		switch {
		case len(s.Nodes) != 0 && len(s.Nodes) != 2:
			bad("membership.two_node", "is for a cluster of two nodes; the node table has %d", len(s.Nodes))
		case s.Membership.ExpectedNodes != 0 && s.Membership.ExpectedNodes != 2:
			bad("membership.two_node", "is for a cluster of two nodes; membership.expected_nodes is %d", s.Membership.ExpectedNodes)
		}
	}
	switch s.Membership.Profile {
	case "auto", "steady", "lan", "emulated", "default":
	default:
		bad("membership.profile", "%q must be auto, steady, lan, emulated or default", s.Membership.Profile)
	}
	for i, sv := range s.Services {
		key := fmt.Sprintf("services[%d]", i)
		if sv.Name == "" {
			bad(key+".name", "is required")
		}
		if sv.Level < 1 || sv.Level > 5 {
			bad(key+".level", "%d must be between 1 and 5", sv.Level)
		}
		if len(sv.Command) == 0 && sv.OCF == "" {
			bad(key+".command", "is required (or, for an HA service, ocf)")
		}
		checkHA(sv, key, bad)
	}
	s.checkClusterIP(bad)
	switch s.Netboot.Admission {
	case AdmitDeny, AdmitDiscover, AdmitAccept:
	default:
		bad("netboot.admission", "%q must be %q, %q or %q", s.Netboot.Admission, AdmitDeny, AdmitDiscover, AdmitAccept)
	}
	if s.Netboot.NewMACsPerMinute < 0 {
		bad("netboot.new_macs_per_minute", "%d is negative", s.Netboot.NewMACsPerMinute)
	}
	if s.Netboot.LeaseSeconds < 60 {
		bad("netboot.lease_seconds", "%d is too short (at least 60)", s.Netboot.LeaseSeconds)
	}
	if prefix.IsValid() && prefix.Addr().Is4() && prefix.Bits() <= 30 {
		if _, _, err := s.poolRange(prefix); err != nil {
			bad("netboot.pool", "%v", err)
		}
	}
	if !consoleRE.MatchString(s.Console) {
		bad("console", "%q is not a console device like ttyS0 or ttyS0,115200", s.Console)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", errInvalid, errors.Join(errs...))
}

// CFSService returns the address the other nodes mount a cfs root from,
// with the subnet's prefix length, and whether the service has a standby
// (and so moves). Without one the service address is node 1's own.
func (s *Spec) CFSService() (netip.Prefix, bool, error) {
	if s.Root.CFS.Standby == 0 {
		a, err := s.NodeAddr(1)
		return a, false, err
	}
	p := s.Prefix()
	if s.Root.CFS.Address != "" {
		a, err := netip.ParseAddr(s.Root.CFS.Address)
		if err != nil {
			return netip.Prefix{}, true, fmt.Errorf("images: root.cfs.address: %w", err)
		}
		return netip.PrefixFrom(a, p.Bits()), true, nil
	}
	size := uint32(1) << (32 - p.Bits())
	return netip.PrefixFrom(addrAdd(p.Addr(), size/2-1), p.Bits()), true, nil
}

// Prefix returns the interconnect subnet. The spec must be valid.
func (s *Spec) Prefix() netip.Prefix {
	return netip.MustParsePrefix(s.Interconnect.Subnet)
}

// NodeAddr returns node n's interconnect address with the subnet's prefix
// length: the address in its row of the node table, or else the n-th host
// address of the subnet.
func (s *Spec) NodeAddr(n int) (netip.Prefix, error) {
	p := s.Prefix()
	row, _ := s.NodeByNumber(n)
	row.Number = n
	a, err := s.nodeAddr(p, row)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("images: node %d: %w", n, err)
	}
	return netip.PrefixFrom(a, p.Bits()), nil
}

func (s *Spec) nodeAddr(p netip.Prefix, n Node) (netip.Addr, error) {
	if n.Addr != "" {
		a, err := netip.ParseAddr(n.Addr)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("%q is not an IP address", n.Addr)
		}
		if !p.Contains(a) {
			return netip.Addr{}, fmt.Errorf("%s is outside the interconnect subnet %s", a, p)
		}
		return a, nil
	}
	hosts := uint64(1)<<(32-p.Bits()) - 2
	if uint64(n.Number) > hosts {
		return netip.Addr{}, fmt.Errorf("node %d has no address: subnet %s holds %d hosts", n.Number, p, hosts)
	}
	return addrAdd(p.Addr(), uint32(n.Number)), nil
}

// NodeByNumber returns the node table row for node n.
func (s *Spec) NodeByNumber(n int) (Node, bool) {
	for _, row := range s.Nodes {
		if row.Number == n {
			return row, true
		}
	}
	return Node{Number: n, Hostname: fmt.Sprintf("node%d", n)}, false
}

// NodeByMAC returns the node table row whose MAC is hw.
func (s *Spec) NodeByMAC(hw net.HardwareAddr) (Node, bool) {
	for _, row := range s.Nodes {
		if m, err := net.ParseMAC(row.MAC); err == nil && strings.EqualFold(m.String(), hw.String()) {
			return row, true
		}
	}
	return Node{}, false
}

// AllModules returns the base modules, those the root source needs and
// the spec's extra ones, without repeats.
func (s *Spec) AllModules() []string {
	out := BaseModules()
	extra := s.Modules
	switch s.Root.Source {
	case RootCFS:
		extra = append([]string{"fuse"}, extra...)
	case RootNFS:
		extra = append([]string{"nfs", "nfsv3", "nfsv4"}, extra...)
	case RootGFS2:
		extra = append([]string{"gfs2"}, extra...)
	}
	extra = append(s.ClusterIPModules(), extra...)
	for _, m := range extra {
		m = strings.ReplaceAll(m, "-", "_")
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// ServicesFor returns the services of run level l that init runs on
// node n (not the HA services: the cluster places those).
func (s *Spec) ServicesFor(n, l int) []Service {
	var out []Service
	for _, sv := range s.Services {
		if sv.Level == l && !sv.IsHA() && (len(sv.Nodes) == 0 || slices.Contains(sv.Nodes, n)) {
			out = append(out, sv)
		}
	}
	return out
}

// Pool returns the first and last address of the dynamic pool.
func (s *Spec) Pool() (netip.Addr, netip.Addr, error) {
	return s.poolRange(s.Prefix())
}

func (s *Spec) poolRange(p netip.Prefix) (netip.Addr, netip.Addr, error) {
	if s.Netboot.Pool == "" {
		size := uint32(1) << (32 - p.Bits())
		first := addrAdd(p.Addr(), size/2)
		last := addrAdd(p.Addr(), size-2)
		return first, last, nil
	}
	a, b, ok := strings.Cut(s.Netboot.Pool, "-")
	first, err1 := netip.ParseAddr(strings.TrimSpace(a))
	last, err2 := netip.ParseAddr(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("%q is not a range like 10.77.0.100-10.77.0.199", s.Netboot.Pool)
	}
	if !p.Contains(first) || !p.Contains(last) || last.Less(first) {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("%q is not an ascending range inside %s", s.Netboot.Pool, p)
	}
	return first, last, nil
}

func addrAdd(a netip.Addr, n uint32) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

var (
	debPackageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	suiteRE      = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
)

func (s *Spec) validateContent(bad func(key, format string, args ...any)) {
	r := s.Root
	switch r.Content {
	case ContentMinimal, ContentDebootstrap, ContentTarball:
	default:
		bad("root.content", "%q must be %q, %q or %q", r.Content, ContentMinimal, ContentDebootstrap, ContentTarball)
		return
	}
	if r.Content != ContentDebootstrap {
		for _, k := range []struct {
			key string
			set bool
		}{{"suite", r.Suite != ""}, {"mirror", r.Mirror != ""}, {"packages", len(r.Packages) > 0}} {
			if k.set {
				bad("root."+k.key, "applies only to root.content: %s", ContentDebootstrap)
			}
		}
	} else {
		if !suiteRE.MatchString(r.Suite) {
			bad("root.suite", "%q is not a Debian suite name", r.Suite)
		}
		if u, err := url.Parse(r.Mirror); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("root.mirror", "%q is not an http(s) URL", r.Mirror)
		}
		for i, p := range r.Packages {
			if !debPackageRE.MatchString(p) {
				bad(fmt.Sprintf("root.packages[%d]", i), "%q is not a Debian package name", p)
			}
		}
	}
	if (r.Content == ContentTarball) != (r.Tarball != "") {
		if r.Tarball == "" {
			bad("root.tarball", "is required with root.content: %s", ContentTarball)
		} else {
			bad("root.tarball", "applies only to root.content: %s", ContentTarball)
		}
	}
}

func (s *Spec) validateSource(bad func(key, format string, args ...any)) {
	r := s.Root
	switch r.Source {
	case RootInitramfs, RootCFS:
	case RootGFS2:
		// mkfs.gfs2's rule for the lock table's cluster part.
		if len(s.Cluster.Name) > 32 {
			bad("cluster.name", "%q is longer than the 32 characters a GFS2 lock table allows (root.source: gfs2)", s.Cluster.Name)
		}
		if r.GFS2.Journals < 0 || r.GFS2.Journals > 192 {
			bad("root.gfs2.journals", "%d must be 1 to 192 (0: the default, 8)", r.GFS2.Journals)
		}
		if r.GFS2.SizeMB != 0 && (r.GFS2.SizeMB < 128 || r.GFS2.SizeMB > 1<<20) {
			bad("root.gfs2.size_mb", "%d must be 128 to 1048576 (0: the default, 1024)", r.GFS2.SizeMB)
		}
	case RootNFS:
		if _, err := netip.ParseAddr(r.NFS.Server); err != nil {
			bad("root.nfs.server", "%q is not an IP address", r.NFS.Server)
		}
		if !strings.HasPrefix(r.NFS.Export, "/") {
			bad("root.nfs.export", "%q is not an absolute path", r.NFS.Export)
		}
	case RootMount:
		if !strings.HasPrefix(r.Device, "/") && !strings.Contains(r.Device, ":") {
			bad("root.device", "%q is not a device path or a server:path", r.Device)
		}
		if !moduleRE.MatchString(r.FSType) {
			bad("root.fstype", "%q is not a filesystem type", r.FSType)
		}
	default:
		bad("root.source", "%q must be %q, %q, %q, %q or %q", r.Source, RootInitramfs, RootCFS, RootGFS2, RootNFS, RootMount)
		return
	}
	if r.Source != RootCFS && (r.CFS != CFSRoot{}) {
		bad("root.cfs", "applies only to root.source: %s", RootCFS)
	}
	if r.CFS.Standby < 0 || r.CFS.Standby == 1 {
		bad("root.cfs.standby", "%d must be another node than node 1, the server (or 0: no standby)", r.CFS.Standby)
	}
	if _, err := r.CFS.Wait(); err != nil {
		bad("root.cfs.patience", "%v", err)
	}
	if r.CFS.Address != "" {
		a, err := netip.ParseAddr(r.CFS.Address)
		switch {
		case err != nil:
			bad("root.cfs.address", "%q is not an IP address", r.CFS.Address)
		case r.CFS.Standby == 0:
			bad("root.cfs.address", "a service address needs a standby to move to (root.cfs.standby)")
		default:
			if p, err := netip.ParsePrefix(s.Interconnect.Subnet); err == nil && !p.Contains(a) {
				bad("root.cfs.address", "%s is outside the interconnect subnet %s", a, p)
			}
		}
	}
	if r.Source != RootGFS2 && (r.GFS2 != GFS2Root{}) {
		bad("root.gfs2", "applies only to root.source: %s", RootGFS2)
	}
	if r.Source != RootNFS && (r.NFS != NFSRoot{}) {
		bad("root.nfs", "applies only to root.source: %s", RootNFS)
	}
	if r.Source != RootMount && (r.Device != "" || r.FSType != "" || r.Options != "") {
		bad("root.device", "device, fstype and options apply only to root.source: %s", RootMount)
	}
	if !r.Shared() && len(r.Private) > 0 {
		bad("root.private", "applies only to a shared root")
	}
	for i, p := range r.Private {
		if !strings.HasPrefix(p, "/") || p == "/" || strings.Contains(p, "..") || strings.HasPrefix(p, "/cluster") {
			bad(fmt.Sprintf("root.private[%d]", i), "%q must be an absolute path below / and outside /cluster", p)
		}
	}
}
