package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// SegmentTap is a tap device in a network namespace, joined to a
// cluster's segment: frames the VMs send reach it, and frames sent from
// the namespace reach the VMs, as for one more machine plugged into the
// switch. Tests use it to attack a cluster from a host on its segment
// with ordinary sockets.
type SegmentTap struct {
	Name string
	MAC  net.HardwareAddr
	tap  *os.File
	pc   *ipv4.PacketConn
	dst  *net.UDPAddr
	wg   sync.WaitGroup
	once sync.Once
}

// AttachSegment makes tap device name in the network namespace netns
// (a name under /var/run/netns, as `ip netns add` makes) and relays
// frames between it and segment seg until Close. It needs root.
func AttachSegment(seg Segment, netns, name string) (*SegmentTap, error) {
	group := net.ParseIP(seg.Group)
	if group == nil {
		return nil, fmt.Errorf("qemu: segment group %q", seg.Group)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return nil, err
	}
	// The VMs' side: QEMU's socket netdev sends each frame as one UDP
	// datagram to the group, on loopback, and hears the group there.
	uc, err := net.ListenMulticastUDP("udp4", lo, &net.UDPAddr{IP: group, Port: seg.Port})
	if err != nil {
		return nil, fmt.Errorf("qemu: join segment %s:%d: %w", seg.Group, seg.Port, err)
	}
	pc := ipv4.NewPacketConn(uc)
	if err := pc.SetMulticastInterface(lo); err != nil {
		uc.Close()
		return nil, err
	}
	pc.SetMulticastLoopback(true)
	tap, mac, err := tapIn(netns, name)
	if err != nil {
		uc.Close()
		return nil, err
	}
	t := &SegmentTap{Name: name, MAC: mac, tap: tap, pc: pc, dst: &net.UDPAddr{IP: group, Port: seg.Port}}
	t.wg.Add(2)
	go t.toSegment()
	go t.fromSegment()
	return t, nil
}

// toSegment sends the namespace's frames to the VMs.
func (t *SegmentTap) toSegment() {
	defer t.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, err := t.tap.Read(buf)
		if err != nil {
			return
		}
		if _, err := t.pc.WriteTo(buf[:n], nil, t.dst); err != nil && errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

// fromSegment hands the VMs' frames to the namespace, not its own (the
// group loops them back).
func (t *SegmentTap) fromSegment() {
	defer t.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, _, _, err := t.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if n < 14 || bytes.Equal(buf[6:12], t.MAC) {
			continue
		}
		if _, err := t.tap.Write(buf[:n]); err != nil && errors.Is(err, os.ErrClosed) {
			return
		}
	}
}

// Close stops the relay and removes the tap.
func (t *SegmentTap) Close() {
	t.once.Do(func() {
		t.pc.Close()
		t.tap.Close()
		t.wg.Wait()
	})
}

// inNetns runs f on a thread of its own inside network namespace netns:
// sockets and devices f makes are made there, and stay there when used
// from elsewhere. The thread is not given back to the runtime (its
// goroutine ends locked to it), so no other code ever runs in netns.
func inNetns(netns string, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		target, err := os.Open("/var/run/netns/" + netns)
		if err != nil {
			done <- fmt.Errorf("qemu: network namespace %s: %w", netns, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("qemu: enter %s: %w", netns, err)
			return
		}
		done <- f()
	}()
	return <-done
}

// tapIn creates tap device name in network namespace netns.
func tapIn(netns, name string) (tap *os.File, mac net.HardwareAddr, err error) {
	err = inNetns(netns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("qemu: /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err == nil {
			ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
			if err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
				err = fmt.Errorf("qemu: make tap %s in %s: %w", name, netns, err)
			}
		}
		var link *net.Interface
		if err == nil {
			link, err = net.InterfaceByName(name)
		}
		// Non-blocking, so that the runtime's poller serves it and Close
		// ends a Read waiting on it.
		if err == nil {
			err = unix.SetNonblock(fd, true)
		}
		if err != nil {
			unix.Close(fd)
			return err
		}
		tap, mac = os.NewFile(uintptr(fd), "/dev/net/tun:"+name), link.HardwareAddr
		return nil
	})
	return tap, mac, err
}

// DialIn connects to addr from inside network namespace netns: the
// socket is made there and then used like any other.
func DialIn(netns, network, addr string, timeout time.Duration) (c net.Conn, err error) {
	err = inNetns(netns, func() error {
		c, err = net.DialTimeout(network, addr, timeout)
		return err
	})
	return c, err
}
