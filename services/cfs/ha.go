package cfs

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ClaimAddress puts the CFS service address on iface and announces it
// with gratuitous ARP, so that every node's ARP cache points the address
// at this node at once instead of after its old entry times out (the
// same announcement keepalived makes when a VRRP address moves). The
// announcement is sent again twice within a second in case the first
// is lost; that goroutine ends with ctx or after its last send.
func ClaimAddress(ctx context.Context, iface string, addr netip.Prefix) error {
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("cfs: service address %s: interface %s: %w", addr, iface, err)
	}
	nl := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}}
	if err := netlink.AddrReplace(link, nl); err != nil {
		return fmt.Errorf("cfs: add service address %s to %s: %w", addr, iface, err)
	}
	frame := garpFrame(link.Attrs().HardwareAddr, addr.Addr())
	if err := sendFrame(link.Attrs().Index, frame); err != nil {
		return fmt.Errorf("cfs: announce service address %s on %s: %w", addr, iface, err)
	}
	go func() {
		for range 2 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(400 * time.Millisecond):
			}
			sendFrame(link.Attrs().Index, frame)
		}
	}()
	return nil
}

// garpFrame is a gratuitous ARP request for ip from mac: an Ethernet
// broadcast ARP request whose sender and target address are both ip.
func garpFrame(mac net.HardwareAddr, ip netip.Addr) []byte {
	f := make([]byte, 14+28)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_ARP)
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:2], 1) // Ethernet
	binary.BigEndian.PutUint16(a[2:4], unix.ETH_P_IP)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], 1) // request
	ip4 := ip.As4()
	copy(a[8:14], mac)
	copy(a[14:18], ip4[:])
	copy(a[18:24], []byte{0, 0, 0, 0, 0, 0})
	copy(a[24:28], ip4[:])
	return f
}

func sendFrame(ifindex int, frame []byte) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifindex, Halen: 6}
	copy(sa.Addr[:], frame[0:6])
	return unix.Sendto(fd, frame, 0, sa)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// MountShared mounts the shared root's ext4 partition dev read-write on
// dir, as the standby does when it takes the service over. The kernel
// replays the journal the dead server left. Any blocks of dev this node
// read earlier (probing partitions at boot) are dropped first: the other
// node wrote the disk since, and ext4 must read what is on it now.
func MountShared(dev, dir string) error {
	f, err := os.Open(dev)
	if err != nil {
		return fmt.Errorf("cfs: open %s: %w", dev, err)
	}
	err = unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0)
	f.Close()
	if err != nil {
		return fmt.Errorf("cfs: flush the buffers of %s: %w", dev, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dev, dir, "ext4", 0, ""); err != nil {
		return fmt.Errorf("cfs: mount %s on %s: %w", dev, dir, err)
	}
	return nil
}
