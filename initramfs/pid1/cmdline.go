package pid1

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Cmdline holds the locus.* options of the kernel command line.
type Cmdline struct {
	// Node is the node number (locus.node=N); 0 when not given.
	Node int
	// Addr is a static interconnect address (locus.ip=10.77.0.2/24).
	Addr netip.Prefix
	// Gateway is the default route (locus.gw=).
	Gateway netip.Addr
	// Iface names the interconnect interface (locus.if=eth0).
	Iface string
	// DHCP asks for DHCP even when the spec is static (locus.dhcp=1).
	DHCP bool
	// Join is the endpoint of a cluster node to reach (locus.join=host:port).
	Join string
	// Secret is the one-time bootstrap secret the netboot service put in
	// this node's script (locus.secret=), redeemed for a certificate.
	Secret string
	// CAPin is the cluster CA the node must find at admission
	// (locus.ca=sha256:<hex>), from the same script as the secret.
	CAPin string
	// PowerOff powers the node off once it reached its run level.
	PowerOff bool
	// Role is "init" on the node booted from the install disk
	// (locus.role=init): it serves the cluster's netboot.
	Role string
	// Console is the console device from console= (the last one wins, as
	// in the kernel).
	Console string
	// Rest are the options Locus does not know, kept for logs.
	Unknown []string
}

// ParseCmdline parses a kernel command line. Values that do not parse are
// errors naming the option; non-locus options are ignored.
func ParseCmdline(s string) (Cmdline, error) {
	var c Cmdline
	for _, f := range splitCmdline(s) {
		k, v, _ := strings.Cut(f, "=")
		var err error
		switch k {
		case "console":
			dev, _, _ := strings.Cut(v, ",")
			c.Console = dev
		case "locus.node":
			c.Node, err = strconv.Atoi(v)
			if err == nil && (c.Node < 1 || c.Node > 1<<20) {
				err = fmt.Errorf("out of range")
			}
		case "locus.ip":
			c.Addr, err = netip.ParsePrefix(v)
			if err == nil && !c.Addr.Addr().Is4() {
				err = fmt.Errorf("want an IPv4 address/prefix")
			}
		case "locus.gw":
			c.Gateway, err = netip.ParseAddr(v)
		case "locus.if":
			if v == "" || len(v) > 15 || strings.ContainsAny(v, "/ ") {
				err = fmt.Errorf("not an interface name")
			}
			c.Iface = v
		case "locus.dhcp":
			c.DHCP, err = parseBool(v)
		case "locus.join":
			c.Join = v
			if v == "" {
				err = fmt.Errorf("empty endpoint")
			}
		case "locus.secret":
			c.Secret = v
			if len(v) < 16 || len(v) > 128 || strings.Trim(v, "0123456789abcdef") != "" {
				err = fmt.Errorf("not a hex secret")
			}
		case "locus.ca":
			c.CAPin = v
			if h, ok := strings.CutPrefix(v, "sha256:"); !ok || len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
				err = fmt.Errorf("want sha256:<64 hex digits>")
			}
		case "locus.poweroff":
			c.PowerOff, err = parseBool(v)
		case "locus.role":
			c.Role = v
			if v != "init" {
				err = fmt.Errorf("want init")
			}
		default:
			if strings.HasPrefix(k, "locus.") {
				c.Unknown = append(c.Unknown, k)
			}
			continue
		}
		if err != nil {
			return c, fmt.Errorf("pid1: kernel command line %s=%q: %v", k, v, err)
		}
	}
	return c, nil
}

func parseBool(v string) (bool, error) {
	switch v {
	case "", "1", "y", "yes", "true", "on":
		return true, nil
	case "0", "n", "no", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("want 1 or 0")
}

// splitCmdline splits on spaces, keeping double-quoted values together as
// the kernel does (quotes removed).
func splitCmdline(s string) []string {
	var out []string
	var cur strings.Builder
	inQ, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQ = !inQ
			have = true
		case (r == ' ' || r == '\n' || r == '\t') && !inQ:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}
