package pid1

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/locus-ssi/locus/installer"
)

// Where the init node mounts the install disk's partitions.
const (
	diskRootMount = "/media/locus-root"
	stateMount    = "/var/lib/locus"
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
	rootDev, err := installer.WaitPartition(ctx, installer.RootName, 20*time.Second)
	if err != nil {
		return err
	}
	stateDev, err := installer.WaitPartition(ctx, installer.StateName, 20*time.Second)
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

// startInitNode starts the netboot service of the init node on the
// interconnect, so the other nodes PXE-boot from this one.
func (n *Node) startInitNode(ctx context.Context) error {
	if n.cmdline.Role != "init" {
		return nil
	}
	tree := filepath.Join(diskRootMount, installer.NetbootDir)
	n.mu.Lock()
	iface, rootDev, stateDev := n.iface, n.rootDev, n.stateDev
	n.mu.Unlock()
	argv := []string{"/bin/locus", "netboot", "serve", "--interface", iface, "--root", tree,
		"--spec", filepath.Join(tree, "locus.yaml"), "--state-dir", filepath.Join(stateMount, "netboot")}
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
