package pid1

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DHCP limits: each attempt waits this long, this many times.
const (
	dhcpAttemptTimeout = 10 * time.Second
	dhcpAttempts       = 3
	linkWait           = 20 * time.Second
)

// interconnectUp finds the interconnect interface, learns the node number
// and brings the address up: static from the command line or the spec, or
// from DHCP.
func (n *Node) interconnectUp(ctx context.Context) error {
	if err := linkUp("lo"); err != nil {
		return err
	}
	link, row, err := n.findInterconnect(ctx)
	if err != nil {
		return err
	}
	number := n.cmdline.Node
	if number == 0 {
		number = row.Number
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", link.Attrs().Name, err)
	}
	var addr netip.Prefix
	gw := n.cmdline.Gateway
	method := "static"
	switch {
	case n.cmdline.Addr.IsValid():
		addr = n.cmdline.Addr
	case n.cmdline.DHCP || n.spec.Interconnect.Addressing == clusterspec.AddressingDHCP:
		lease, err := dhcpLease(ctx, link.Attrs().Name, n.log)
		if err != nil {
			return err
		}
		addr, gw, method = lease.addr, lease.gw, "dhcp"
	case number > 0:
		addr, err = n.spec.NodeAddr(number)
		if err != nil {
			return err
		}
	default:
		return fmt.Errorf("no address for %s (%s): no locus.ip= or locus.node= on the command line and its MAC is not in the node table", link.Attrs().Name, link.Attrs().HardwareAddr)
	}
	if !gw.IsValid() && n.spec.Interconnect.Gateway != "" {
		gw, _ = netip.ParseAddr(n.spec.Interconnect.Gateway)
	}
	if number != 0 {
		n.feed.SetNode(number)
	}
	if number == 0 {
		return fmt.Errorf("node number unknown: give locus.node= or list MAC %s in the node table", link.Attrs().HardwareAddr)
	}
	nl := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}}
	if err := netlink.AddrReplace(link, nl); err != nil {
		return fmt.Errorf("address %s on %s: %w", addr, link.Attrs().Name, err)
	}
	if gw.IsValid() {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw.AsSlice()}
		if err := netlink.RouteReplace(r); err != nil {
			n.log.Warn("default route", "gw", gw, "err", err)
		}
	}
	row, _ = n.spec.NodeByNumber(number)
	if err := unix.Sethostname([]byte(row.Hostname)); err != nil {
		return fmt.Errorf("sethostname %s: %w", row.Hostname, err)
	}
	n.mu.Lock()
	n.number, n.hostname, n.iface, n.addr = number, row.Hostname, link.Attrs().Name, addr
	n.mu.Unlock()
	n.writeNodeFile()
	n.log.Info("interconnect up", "node", number, "hostname", row.Hostname, "iface", link.Attrs().Name, "addr", addr, "method", method)
	return nil
}

func linkUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	return netlink.LinkSetUp(l)
}

// findInterconnect waits for the interconnect interface to appear (drivers
// probe in the background after their modules load): the one named by
// locus.if=, else the one whose MAC is in the node table, else the first
// Ethernet interface.
func (n *Node) findInterconnect(ctx context.Context) (netlink.Link, clusterspec.Node, error) {
	deadline := time.Now().Add(linkWait)
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, clusterspec.Node{}, fmt.Errorf("list links: %w", err)
		}
		var first netlink.Link
		for _, l := range links {
			a := l.Attrs()
			if a.EncapType != "ether" || len(a.HardwareAddr) != 6 {
				continue
			}
			if n.cmdline.Iface != "" {
				if a.Name == n.cmdline.Iface {
					row, _ := n.spec.NodeByMAC(a.HardwareAddr)
					return l, row, nil
				}
				continue
			}
			if row, ok := n.spec.NodeByMAC(a.HardwareAddr); ok {
				return l, row, nil
			}
			if first == nil {
				first = l
			}
		}
		if first != nil && n.cmdline.Iface == "" && (len(n.spec.Nodes) == 0 || n.cmdline.Node != 0 || time.Now().After(deadline.Add(-linkWait/2))) {
			return first, clusterspec.Node{}, nil
		}
		if time.Now().After(deadline) {
			if n.cmdline.Iface != "" {
				return nil, clusterspec.Node{}, fmt.Errorf("interface %s (locus.if=) did not appear within %s", n.cmdline.Iface, linkWait)
			}
			return nil, clusterspec.Node{}, fmt.Errorf("no Ethernet interface appeared within %s (is the NIC's driver in the spec's modules?)", linkWait)
		}
		select {
		case <-ctx.Done():
			return nil, clusterspec.Node{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type lease struct {
	addr netip.Prefix
	gw   netip.Addr
}

// dhcpLease gets an address with DHCP, each attempt bounded.
func dhcpLease(ctx context.Context, iface string, log interface{ Info(string, ...any) }) (lease, error) {
	var lastErr error
	for attempt := 1; attempt <= dhcpAttempts; attempt++ {
		c, err := nclient4.New(iface, nclient4.WithTimeout(dhcpAttemptTimeout/3), nclient4.WithRetry(3))
		if err != nil {
			return lease{}, fmt.Errorf("dhcp on %s: %w", iface, err)
		}
		actx, cancel := context.WithTimeout(ctx, dhcpAttemptTimeout)
		l, err := c.Request(actx, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("locus")))
		cancel()
		c.Close()
		if err == nil {
			return leaseFromACK(l.ACK)
		}
		lastErr = err
		log.Info("dhcp attempt failed", "iface", iface, "attempt", attempt, "err", err)
		if ctx.Err() != nil {
			break
		}
	}
	return lease{}, fmt.Errorf("dhcp on %s: no lease after %d attempts: %w", iface, dhcpAttempts, lastErr)
}

func leaseFromACK(ack *dhcpv4.DHCPv4) (lease, error) {
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || ip.IsUnspecified() {
		return lease{}, errors.New("dhcp: ACK without an address")
	}
	mask := ack.SubnetMask()
	bits := 24
	if mask != nil {
		bits, _ = mask.Size()
	}
	l := lease{addr: netip.PrefixFrom(ip, bits)}
	if rs := ack.Router(); len(rs) > 0 {
		l.gw, _ = netip.AddrFromSlice(rs[0].To4())
	}
	return l, nil
}
