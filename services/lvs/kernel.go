package lvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VirtualService is one port of the cluster IP and its real servers.
type VirtualService struct {
	Port      uint16       `json:"port"`
	Protocol  string       `json:"protocol"`
	Scheduler string       `json:"scheduler"`
	Servers   []netip.Addr `json:"servers"` // by node number
}

// Sync roles of IPVS's connection synchronisation daemon.
const (
	SyncNone   = 0
	SyncMaster = 1
	SyncBackup = 2
)

// Kernel is what the service does to this node's kernel.
type Kernel interface {
	// Prepare sets the sysctls direct routing and sync need.
	Prepare(iface string) error
	// SetAddr puts vip/32 on dev, or takes it off.
	SetAddr(dev string, vip netip.Addr, on bool) error
	// ApplyTable makes IPVS's virtual services for vip exactly vs.
	ApplyTable(vip netip.Addr, vs []VirtualService) error
	// SetSync runs the sync daemon in role (stopping the other first).
	SetSync(role int, iface string, syncID int) error
	// GARP sends one gratuitous ARP request for vip on iface.
	GARP(iface string, vip netip.Addr) error
	// Listening says which of the ports (protocol/port) this node
	// listens on, at vip or the wildcard.
	Listening(vip netip.Addr, ports []string) (map[string]bool, error)
}

// linuxKernel is the real one: sysctls under /proc/sys, rtnetlink for
// addresses and sockets, IPVS's generic netlink family.
type linuxKernel struct {
	mu   sync.Mutex
	ipvs ipvs.Client
	gen  *genetlink.Conn
	fam  genetlink.Family
	role int
}

// NewKernel is this node's kernel.
func NewKernel() Kernel { return &linuxKernel{} }

// sysctls direct routing needs on every node, and IPVS's (section 2 of
// the notes: backup_only keeps a backup's preloaded table from
// rescheduling; a removed real server's entries expire at their next
// packet; mid-stream packets may make entries, so maglev-hashed flows
// survive without sync).
func (k *linuxKernel) Prepare(iface string) error {
	set := []struct{ key, value string }{
		{"net/ipv4/conf/all/arp_ignore", "1"}, {"net/ipv4/conf/all/arp_announce", "2"},
		{"net/ipv4/conf/" + iface + "/arp_ignore", "1"}, {"net/ipv4/conf/" + iface + "/arp_announce", "2"},
		{"net/ipv4/vs/backup_only", "1"}, {"net/ipv4/vs/expire_nodest_conn", "1"}, {"net/ipv4/vs/sloppy_tcp", "1"},
		{"net/ipv4/vs/sync_threshold", "3 0"}, {"net/ipv4/vs/sync_refresh_period", "10"},
	}
	var errs []error
	for _, s := range set {
		p := filepath.Join("/proc/sys", s.key)
		if err := os.WriteFile(p, []byte(s.value), 0o644); err != nil {
			if strings.Contains(s.key, "/vs/") && errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("lvs: the kernel has no IPVS (%s): the ip_vs module is not loaded", p)
			}
			errs = append(errs, fmt.Errorf("lvs: sysctl %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

func (k *linuxKernel) SetAddr(dev string, vip netip.Addr, on bool) error {
	link, err := vnl.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("lvs: interface %s: %w", dev, err)
	}
	addr := &vnl.Addr{IPNet: &net.IPNet{IP: vip.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if dev == "lo" {
		addr.Scope = unix.RT_SCOPE_HOST
	}
	if on {
		if err := vnl.AddrAdd(link, addr); err != nil && !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("lvs: add %s to %s: %w", vip, dev, err)
		}
		return nil
	}
	if err := vnl.AddrDel(link, addr); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("lvs: take %s off %s: %w", vip, dev, err)
	}
	return nil
}

func (k *linuxKernel) client() (ipvs.Client, error) {
	if k.ipvs == nil {
		c, err := ipvs.New()
		if err != nil {
			return nil, fmt.Errorf("lvs: IPVS: %w", err)
		}
		k.ipvs = c
	}
	return k.ipvs, nil
}

func ipvsService(vip netip.Addr, v VirtualService) ipvs.Service {
	proto := ipvs.TCP
	if v.Protocol == "udp" {
		proto = ipvs.UDP
	}
	s := ipvs.Service{Address: vip, Netmask: netmask.MaskFrom(32, 32), Scheduler: v.Scheduler, Port: v.Port, Family: ipvs.INET, Protocol: proto}
	if v.Scheduler == "mh" || v.Scheduler == "sh" {
		s.Flags = ipvs.ServiceSchedulerOpt2 // hash the source port too: one client's flows spread
	}
	return s
}

func (k *linuxKernel) ApplyTable(vip netip.Addr, vs []VirtualService) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	c, err := k.client()
	if err != nil {
		return err
	}
	have, err := c.Services()
	if errors.Is(err, os.ErrNotExist) {
		have, err = nil, nil // the client's word for an empty table
	}
	if err != nil {
		return fmt.Errorf("lvs: list IPVS services: %w", err)
	}
	want := map[string]VirtualService{}
	for _, v := range vs {
		want[fmt.Sprintf("%s/%d", v.Protocol, v.Port)] = v
	}
	var errs []error
	for _, h := range have {
		if h.Address != vip {
			continue
		}
		key := fmt.Sprintf("%s/%d", strings.ToLower(h.Protocol.String()), h.Port)
		if _, ok := want[key]; !ok {
			if err := c.RemoveService(h.Service); err != nil {
				errs = append(errs, fmt.Errorf("lvs: remove %s: %w", key, err))
			}
		}
	}
	for key, v := range want {
		svc := ipvsService(vip, v)
		cur, err := c.Service(svc)
		switch {
		case err != nil:
			if err := c.CreateService(svc); err != nil {
				errs = append(errs, fmt.Errorf("lvs: create %s %s:%d (%s): %w", v.Protocol, vip, v.Port, v.Scheduler, err))
				continue
			}
		case cur.Scheduler != svc.Scheduler || cur.Flags&(ipvs.ServiceSchedulerOpt2) != svc.Flags:
			if err := c.UpdateService(svc); err != nil {
				errs = append(errs, fmt.Errorf("lvs: update %s: %w", key, err))
			}
		}
		dests, err := c.Destinations(svc)
		if errors.Is(err, os.ErrNotExist) {
			dests, err = nil, nil
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("lvs: destinations of %s: %w", key, err))
			continue
		}
		for _, d := range dests {
			if !slices.Contains(v.Servers, d.Address) {
				if err := c.RemoveDestination(svc, d.Destination); err != nil {
					errs = append(errs, fmt.Errorf("lvs: remove real server %s of %s: %w", d.Address, key, err))
				}
			}
		}
		for _, a := range v.Servers {
			if !slices.ContainsFunc(dests, func(d ipvs.DestinationExtended) bool { return d.Address == a }) {
				d := ipvs.Destination{Address: a, Port: v.Port, FwdMethod: ipvs.DirectRoute, Weight: 1, Family: ipvs.INET}
				if err := c.CreateDestination(svc, d); err != nil {
					errs = append(errs, fmt.Errorf("lvs: add real server %s to %s: %w", a, key, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// IPVS's generic netlink: the sync daemon's command and attributes
// (include/uapi/linux/ip_vs.h).
const (
	cmdNewDaemon      = 9
	cmdDelDaemon      = 10
	cmdAttrDaemon     = 3
	daemonAttrState   = 1
	daemonAttrMcastIf = 2
	daemonAttrSyncID  = 3
)

// daemonMessage is the body of a NEW_DAEMON (or, with only the state,
// DEL_DAEMON) request.
func daemonMessage(role int, iface string, syncID int, del bool) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Nested(cmdAttrDaemon, func(n *netlink.AttributeEncoder) error {
		n.Uint32(daemonAttrState, uint32(role))
		if !del {
			n.String(daemonAttrMcastIf, iface)
			n.Uint32(daemonAttrSyncID, uint32(syncID))
		}
		return nil
	})
	return ae.Encode()
}

func (k *linuxKernel) daemon(cmd uint8, body []byte) error {
	if k.gen == nil {
		c, err := genetlink.Dial(nil)
		if err != nil {
			return fmt.Errorf("lvs: generic netlink: %w", err)
		}
		f, err := c.GetFamily("IPVS")
		if err != nil {
			c.Close()
			return fmt.Errorf("lvs: IPVS netlink family: %w", err)
		}
		k.gen, k.fam = c, f
	}
	_, err := k.gen.Execute(genetlink.Message{Header: genetlink.Header{Command: cmd, Version: k.fam.Version}, Data: body}, k.fam.ID, netlink.Request|netlink.Acknowledge)
	return err
}

func (k *linuxKernel) SetSync(role int, iface string, syncID int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if role == k.role {
		return nil
	}
	// As keepalived does: stop both roles first (ESRCH: not running).
	for _, r := range []int{SyncMaster, SyncBackup} {
		b, _ := daemonMessage(r, "", 0, true)
		if err := k.daemon(cmdDelDaemon, b); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("lvs: stop the sync daemon (%d): %w", r, err)
		}
	}
	k.role = SyncNone
	if role == SyncNone {
		return nil
	}
	b, err := daemonMessage(role, iface, syncID, false)
	if err != nil {
		return err
	}
	if err := k.daemon(cmdNewDaemon, b); err != nil {
		return fmt.Errorf("lvs: start the sync daemon as %s on %s (syncid %d): %w", roleName(role), iface, syncID, err)
	}
	k.role = role
	return nil
}

func roleName(r int) string {
	return map[int]string{SyncNone: "none", SyncMaster: "master", SyncBackup: "backup"}[r]
}

func (k *linuxKernel) GARP(iface string, vip netip.Addr) error {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return fmt.Errorf("lvs: gratuitous ARP: %w", err)
	}
	c, err := arp.Dial(ifi)
	if err != nil {
		return fmt.Errorf("lvs: gratuitous ARP on %s: %w", iface, err)
	}
	defer c.Close()
	p, err := arp.NewPacket(arp.OperationRequest, ifi.HardwareAddr, vip, ethernet.Broadcast, vip)
	if err != nil {
		return fmt.Errorf("lvs: gratuitous ARP: %w", err)
	}
	c.SetWriteDeadline(time.Now().Add(time.Second))
	if err := c.WriteTo(p, ethernet.Broadcast); err != nil {
		return fmt.Errorf("lvs: gratuitous ARP on %s: %w", iface, err)
	}
	return nil
}

func (k *linuxKernel) Listening(vip netip.Addr, ports []string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, proto := range []string{"tcp", "udp"} {
		for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
			var socks []*vnl.Socket
			var err error
			if proto == "tcp" {
				socks, err = vnl.SocketDiagTCP(fam)
			} else {
				socks, err = vnl.SocketDiagUDP(fam)
			}
			if err != nil && !errors.Is(err, vnl.ErrDumpInterrupted) {
				return nil, fmt.Errorf("lvs: sock_diag %s: %w", proto, err)
			}
			for _, s := range socks {
				if proto == "tcp" && s.State != 10 { // TCP_LISTEN
					continue
				}
				a, _ := netip.AddrFromSlice(s.ID.Source)
				a = a.Unmap()
				if !a.IsUnspecified() && a != vip {
					continue
				}
				key := fmt.Sprintf("%s/%d", proto, s.ID.SourcePort)
				if slices.Contains(ports, key) {
					out[key] = true
				}
			}
		}
	}
	return out, nil
}
