package pid1

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/services/cfs"
	"github.com/locus-ssi/locus/services/ics"
)

// Where the init node mounts the install disk's partitions.
const (
	diskRootMount = "/media/locus-root"
	stateMount    = layout.StateMount
)

// mountInitDisk runs on the node that booted from the install disk
// (locus.role=init): it mounts the root partition (read-only: the boot
// tree and spec; read-write when it is the cluster's CFS root) and the
// state partition, found by their GPT names, before
// the join phase's services (membership, netboot) keep state there.
func (n *Node) mountInitDisk(ctx context.Context) error {
	if n.cmdline.Role != "init" {
		return nil
	}
	rootDev, err := layout.WaitPartition(ctx, layout.RootName, 20*time.Second)
	if err != nil {
		return err
	}
	if err := n.checkNotFailedOver(ctx); err != nil {
		return err
	}
	stateDev, err := layout.WaitPartition(ctx, layout.StateName, 20*time.Second)
	if err != nil {
		return err
	}
	for _, m := range []mount{
		{rootDev, diskRootMount, "ext4", n.sharedRootFlags(), ""},
		{stateDev, stateMount, "ext4", unix.MS_NODEV | unix.MS_NOSUID, ""},
	} {
		if err := mountAll([]mount{m}); err != nil {
			return fmt.Errorf("init node: %w", err)
		}
	}
	n.mu.Lock()
	n.rootDev, n.stateDev = rootDev, stateDev
	n.mu.Unlock()
	return nil
}

// checkNotFailedOver keeps node 1 off its disk after an HA-CFS failover:
// while the standby serves the shared root from that disk (it answers at
// the service address), a second mount would corrupt it. Node 1 then
// fails its boot with the reason, until the cluster is brought down and
// node 1 boots first again.
func (n *Node) checkNotFailedOver(ctx context.Context) error {
	if n.spec.Root.Source != clusterspec.RootCFS || n.spec.Root.CFS.Standby == 0 {
		return nil
	}
	svc, _, err := n.spec.CFSService()
	if err != nil {
		return err
	}
	// The interconnect comes up beside this task.
	for deadline := time.Now().Add(30 * time.Second); ; {
		n.mu.Lock()
		up := n.addr.IsValid()
		n.mu.Unlock()
		if up {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("init node: the interconnect is not up after 30s: cannot check whether node %d serves the shared root", n.spec.Root.CFS.Standby)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	target := net.JoinHostPort(svc.Addr().String(), strconv.Itoa(cfs.DefaultPort))
	c, err := net.DialTimeout("tcp", target, 2*time.Second)
	if err != nil {
		return nil // nobody serves it: this node is the server
	}
	c.Close()
	return fmt.Errorf("init node: the shared root is served at %s by another node (node %d took it over after a failover); this node must not mount the disk they share while it does: shut the cluster down (locus shutdown) and boot this node first", target, n.spec.Root.CFS.Standby)
}

// startInitNode starts the netboot service of the init node on the
// interconnect, so the other nodes PXE-boot from this one.
func (n *Node) startInitNode(ctx context.Context) error {
	if n.cmdline.Role != "init" {
		return nil
	}
	tree := filepath.Join(diskRootMount, layout.DiskNetbootDir)
	n.mu.Lock()
	iface, rootDev, stateDev := n.iface, n.rootDev, n.stateDev
	n.mu.Unlock()
	argv := []string{"/bin/locus", "netboot", "serve", "--interface", iface, "--root", tree,
		"--spec", filepath.Join(tree, "locus.yaml"), "--state-dir", filepath.Join(stateMount, "netboot"),
		"--ca", filepath.Join(layout.CADir, ics.CACertFile)}
	go n.procs.Daemon(context.Background(), n.log, "netboot", "", argv, Env())
	n.log.Info("init node: serving netboot", "iface", iface, "root", rootDev, "state", stateDev)
	n.uplinks(context.Background())
	return nil
}

// uplinks brings up the init node's other Ethernet interfaces with DHCP,
// in the background: an uplink to the site network (in QEMU, the
// user-mode NIC that forwards the cluster API port from the host). The
// boot does not wait for them.
func (n *Node) uplinks(ctx context.Context) {
	n.mu.Lock()
	inter := n.iface
	n.mu.Unlock()
	links, err := netlink.LinkList()
	if err != nil {
		return
	}
	for _, l := range links {
		a := l.Attrs()
		if a.EncapType != "ether" || a.Name == inter || len(a.HardwareAddr) != 6 {
			continue
		}
		go func() {
			if err := netlink.LinkSetUp(l); err != nil {
				n.log.Warn("uplink", "iface", a.Name, "err", err)
				return
			}
			le, err := dhcpLease(ctx, a.Name, n.log)
			if err != nil {
				n.log.Warn("uplink: no DHCP lease", "iface", a.Name, "err", err)
				return
			}
			nl := &netlink.Addr{IPNet: &net.IPNet{IP: le.addr.Addr().AsSlice(), Mask: net.CIDRMask(le.addr.Bits(), 32)}}
			if err := netlink.AddrReplace(l, nl); err != nil {
				n.log.Warn("uplink", "iface", a.Name, "err", err)
				return
			}
			if le.gw.IsValid() {
				// Only if the interconnect gave no default route.
				netlink.RouteAdd(&netlink.Route{LinkIndex: a.Index, Gw: le.gw.AsSlice()})
			}
			n.log.Info("uplink up", "iface", a.Name, "addr", le.addr)
		}()
	}
}
