package pid1

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

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
	n.checkNotFailedOver(ctx, rootDev)
	stateDev, err := layout.WaitPartition(ctx, layout.StateName, 20*time.Second)
	if err != nil {
		return err
	}
	for _, m := range []mount{
		{rootDev, diskRootMount, "ext4", n.sharedRootFlags(), ""},
		{stateDev, stateMount, "ext4", unix.MS_NODEV | unix.MS_NOSUID, ""},
	} {
		if err := mountAll([]mount{m}); err != nil {
			if m.source == rootDev {
				return n.mountFailedOver(rootDev, fmt.Errorf("init node: %w", err))
			}
			return fmt.Errorf("init node: %w", err)
		}
	}
	n.mu.Lock()
	n.rootDev, n.stateDev = rootDev, stateDev
	n.mu.Unlock()
	return nil
}

// checkNotFailedOver says, before node 1 mounts its root partition
// read-write, who last held it: the kernel's multi-mount protection
// (the partition is made with mkfs.ext4 -O mmp) keeps node 1 off the
// disk while the HA-CFS standby serves it after a failover, whatever
// the network answers; the mount then fails with EBUSY (mountFailedOver
// says why). A block left by a crash makes the mount wait to see that
// nobody updates it any more: say so, since that wait is long.
func (n *Node) checkNotFailedOver(ctx context.Context, dev string) {
	if n.sharedRootFlags()&unix.MS_RDONLY != 0 {
		return // read-only: multi-mount protection does not apply
	}
	m, err := cfs.ReadMMP(dev)
	switch {
	case err != nil:
		n.log.Warn("init node: cannot read the root partition's multi-mount protection block", "device", dev, "err", err)
	case !m.Enabled:
		n.log.Warn("init node: the root partition has no multi-mount protection (made before it was the default?): nothing keeps a standby's mount and this one apart but fencing", "device", dev)
	case !m.Clean:
		n.log.Warn(fmt.Sprintf("init node: the root partition was not left clean (last held by %s): the kernel waits up to %ds to see that no other node still updates it", orUnknown(m.Node), 4*max(m.Interval, 5)+2), "device", dev)
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown node"
	}
	return s
}

// mountFailedOver explains a refused mount of the root partition: EBUSY
// from multi-mount protection is another node serving it.
func (n *Node) mountFailedOver(dev string, err error) error {
	if !errors.Is(err, unix.EBUSY) {
		return err
	}
	holder := "another node"
	if m, rerr := cfs.ReadMMP(dev); rerr == nil && m.Node != "" {
		holder = m.Node
	}
	standby := ""
	if n.spec.Root.CFS.Standby != 0 {
		standby = fmt.Sprintf(" (the standby, node %d, takes the shared root over after a failover)", n.spec.Root.CFS.Standby)
	}
	return fmt.Errorf("init node: the root partition %s is in use by %s%s: its multi-mount protection refuses a second mount; this node must not write the disk while it does: shut the cluster down (locus shutdown) and boot this node first: %w", dev, holder, standby, err)
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
