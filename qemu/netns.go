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

// tapIn creates tap device name in network namespace netns: the device
// is made in the namespace of the thread that asks, so this thread
// enters netns for the ioctl and comes back.
func tapIn(netns, name string) (*os.File, net.HardwareAddr, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, nil, err
	}
	defer self.Close()
	target, err := os.Open("/var/run/netns/" + netns)
	if err != nil {
		return nil, nil, fmt.Errorf("qemu: network namespace %s: %w", netns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, nil, fmt.Errorf("qemu: enter %s: %w", netns, err)
	}
	defer func() {
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// This thread is in the wrong namespace: never run Go
			// code on it again.
			runtime.Goexit()
		}
	}()
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("qemu: /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("qemu: make tap %s in %s: %w", name, netns, err)
	}
	link, err := net.InterfaceByName(name)
	if err != nil {
		unix.Close(fd)
		return nil, nil, err
	}
	// Non-blocking, so that the runtime's poller serves it and Close
	// ends a Read waiting on it.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), link.HardwareAddr, nil
}

// DialIn connects to addr from inside network namespace netns: the
// socket is made there (by a thread that enters the namespace for it)
// and then used like any other.
func DialIn(netns, network, addr string, timeout time.Duration) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is left to die with this goroutine (still locked)
		// rather than go back: it may be in the namespace.
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer self.Close()
		target, err := os.Open("/var/run/netns/" + netns)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, err}
			return
		}
		c, err := net.DialTimeout(network, addr, timeout)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}
