package netboot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// advertiseRouter answers IPv6 router solicitations on the interface
// with a router advertisement that configures nothing: no prefix (no
// node gets an IPv6 address it did not ask for), no managed or other
// configuration (no DHCPv6), a router lifetime of 0 (not a default
// router). iPXE configures IPv6 beside DHCPv4 and, with no answer to its
// solicitations, waits about 13 s for one before it goes on; this answer
// ends the wait at once. It runs until ctx ends; an interface without
// IPv6 (disabled, or no link-local address within a minute) is logged
// and left alone, since DHCPv4 boots work without it.
func (s *Service) advertiseRouter(ctx context.Context) error {
	ifi, err := net.InterfaceByName(s.cfg.Iface)
	if err != nil {
		return fmt.Errorf("router advertisements on %s: %w", s.cfg.Iface, err)
	}
	log := s.cfg.Log.With("iface", ifi.Name)
	var c *ndp.Conn
	// The link-local address is tentative for a second or two after the
	// link comes up (duplicate address detection): retry until it is not.
	for deadline := time.Now().Add(time.Minute); ; {
		c, _, err = ndp.Listen(ifi, ndp.LinkLocal)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			log.Warn("netboot: no IPv6 on the interface: iPXE will wait for router advertisements before it boots", "err", err)
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	if err := c.SetICMPFilter(&f); err != nil {
		return fmt.Errorf("router advertisements on %s: %w", ifi.Name, err)
	}
	if err := c.JoinGroup(netip.MustParseAddr("ff02::2")); err != nil {
		return fmt.Errorf("router advertisements on %s: join all-routers: %w", ifi.Name, err)
	}
	ra := &ndp.RouterAdvertisement{
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}},
	}
	allNodes := netip.IPv6LinkLocalAllNodes()
	// One unsolicited, for clients already waiting.
	if err := c.WriteTo(ra, nil, allNodes); err != nil {
		log.Debug("netboot: router advertisement", "err", err)
	}
	log.Info("netboot: answering IPv6 router solicitations (no prefix, no DHCPv6, not a default router)")
	for {
		m, _, from, err := c.ReadFrom()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// A malformed message: not ours to answer.
			log.Debug("netboot: NDP message", "from", from, "err", err)
			continue
		}
		if _, ok := m.(*ndp.RouterSolicitation); !ok {
			continue
		}
		s.metrics.solicits.Inc()
		to := from
		if !from.IsValid() || from.IsUnspecified() {
			to = allNodes // a solicitor without an address yet
		}
		if err := c.WriteTo(ra, nil, to); err != nil {
			log.Debug("netboot: router advertisement", "to", to, "err", err)
		}
	}
}
