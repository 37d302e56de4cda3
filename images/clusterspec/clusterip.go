package clusterspec

import (
	"fmt"
	"net/netip"
	"slices"
)

// ClusterIP is the one address clients use for the cluster (openSSI's
// CVIP): held by one director node, which load-levels each port's
// connections over the nodes running the port's service with the
// kernel's IPVS (direct routing), and moves to another director when
// that node is fenced Down.
type ClusterIP struct {
	// Address is the cluster IP, an IPv4 address on the interconnect
	// (or the uplink) that no node has.
	Address string `yaml:"address" json:"address"`
	// Interface is where the director holds the address and answers
	// ARP for it (default eth0, the interconnect).
	Interface string `yaml:"interface" json:"interface,omitempty"`
	// Directors are the nodes that may hold it, in order (default: any
	// node, by number). The master picks the next one after a Down; it
	// never moves back.
	Directors []int `yaml:"directors" json:"directors,omitempty"`
	// SyncID is IPVS connection synchronisation's id (1-255, default 1):
	// the director sends its connections to the other nodes, so
	// established ones survive a director change.
	SyncID int           `yaml:"sync_id" json:"sync_id,omitempty"`
	Ports  []ClusterPort `yaml:"ports" json:"ports"`
}

// ClusterPort is one port of the cluster IP.
type ClusterPort struct {
	Port     int    `yaml:"port" json:"port"`
	Protocol string `yaml:"protocol" json:"protocol,omitempty"` // tcp (default) or udp
	// Scheduler is IPVS's: rr, wrr, lc, wlc, sh or mh (default: mh,
	// Maglev hashing, which every director computes alike, so even a
	// connection the sync missed keeps its real server).
	Scheduler string `yaml:"scheduler" json:"scheduler,omitempty"`
	// Service names the HA service whose running instances are the real
	// servers; without one, register: listen adds every node that
	// listens on the port (openSSI's automatic registration).
	Service  string `yaml:"service" json:"service,omitempty"`
	Register string `yaml:"register" json:"register,omitempty"`
}

// Schedulers are the IPVS schedulers a cluster port may use.
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "sh", "mh"}

// Defaults of the cluster IP.
const (
	DefaultClusterIPInterface = "eth0"
	DefaultScheduler          = "mh"
	RegisterListen            = "listen"
)

// HasClusterIP says whether the spec has a cluster IP.
func (s *Spec) HasClusterIP() bool { return s.ClusterIP != nil && s.ClusterIP.Address != "" }

// ClusterIPModules are the kernel modules a cluster IP needs: IPVS and
// every scheduler its ports use (loaded at boot: a u-root initramfs has
// no modprobe helper for the kernel to ask).
func (s *Spec) ClusterIPModules() []string {
	if !s.HasClusterIP() {
		return nil
	}
	out := []string{"ip_vs"}
	for _, p := range s.ClusterIP.Ports {
		m := "ip_vs_" + p.Sched()
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// Sched is the port's scheduler, with its default.
func (p ClusterPort) Sched() string {
	if p.Scheduler == "" {
		return DefaultScheduler
	}
	return p.Scheduler
}

// Proto is the port's protocol, with its default.
func (p ClusterPort) Proto() string {
	if p.Protocol == "" {
		return "tcp"
	}
	return p.Protocol
}

// checkClusterIP checks the cluster IP block.
func (s *Spec) checkClusterIP(bad func(field, format string, args ...any)) {
	c := s.ClusterIP
	if c == nil {
		return
	}
	a, err := netip.ParseAddr(c.Address)
	if err != nil || !a.Is4() || a.IsLoopback() || a.IsMulticast() || a.IsUnspecified() {
		bad("cluster_ip.address", "%q must be an IPv4 unicast address", c.Address)
		return
	}
	for _, n := range s.Nodes {
		if p, err := s.NodeAddr(n.Number); err == nil && p.Addr() == a {
			bad("cluster_ip.address", "%s is node %d's own address", a, n.Number)
		}
	}
	if c.SyncID < 0 || c.SyncID > 255 {
		bad("cluster_ip.sync_id", "%d must be 1-255", c.SyncID)
	}
	for _, d := range c.Directors {
		if d < 1 || d > maxHANode {
			bad("cluster_ip.directors", "node %d is not 1-%d", d, maxHANode)
		}
	}
	if len(c.Ports) == 0 {
		bad("cluster_ip.ports", "a cluster IP needs at least one port")
	}
	seen := map[string]bool{}
	for i, p := range c.Ports {
		key := fmt.Sprintf("cluster_ip.ports[%d]", i)
		if p.Port < 1 || p.Port > 65535 {
			bad(key+".port", "%d must be 1-65535", p.Port)
		}
		if p.Proto() != "tcp" && p.Proto() != "udp" {
			bad(key+".protocol", "%q must be tcp or udp", p.Protocol)
		}
		if id := fmt.Sprintf("%s/%d", p.Proto(), p.Port); seen[id] {
			bad(key+".port", "%s given twice", id)
		} else {
			seen[id] = true
		}
		if !slices.Contains(Schedulers, p.Sched()) {
			bad(key+".scheduler", "%q must be one of %v", p.Scheduler, Schedulers)
		}
		switch {
		case p.Service != "" && p.Register != "":
			bad(key+".register", "a port's real servers are its service's instances or its listeners, not both")
		case p.Service == "" && p.Register != RegisterListen:
			bad(key+".service", "names the HA service behind the port (or register: listen)")
		case p.Service != "":
			found := false
			for _, sv := range s.HAServices() {
				found = found || sv.Name == p.Service
			}
			if !found {
				bad(key+".service", "%q is not an HA service of this spec", p.Service)
			}
		}
	}
}
