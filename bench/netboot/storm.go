package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/locus-ssi/locus/netboot"
)

// stormRun is what one server did with one storm: clients started, how
// many got their ACK, and how long each full DORA took.
type stormRun struct {
	started, acked int
	took           time.Duration // first DISCOVER to the last ACK (or the end of sending)
	p50, p99       time.Duration
}

// served is the rate of completed exchanges.
func (r stormRun) served() float64 {
	if r.took <= 0 {
		return 0
	}
	return float64(r.acked) / r.took.Seconds()
}

func (r stormRun) dropped() float64 {
	if r.started == 0 {
		return 0
	}
	return 100 * float64(r.started-r.acked) / float64(r.started)
}

// stormClient is one made-up machine's exchange in flight.
type stormClient struct {
	mac     net.HardwareAddr
	start   time.Time
	request bool // the REQUEST went out
}

// storm runs a DHCP boot storm from one socket: new clients (each a MAC
// never seen before, as a rack powering on) start a DORA at rate per
// second for dur (open loop: they do not wait for each other), or, with
// rate 0, inflight clients are kept in flight at all times for dur
// (closed loop: the server's saturation). A client's OFFER is answered
// with its REQUEST at once, from the reading goroutine; a client without
// its ACK 2 s after its DISCOVER counts as dropped (real clients would
// retransmit after 4 s).
func storm(iface string, macBase uint32, rate float64, inflight int, dur time.Duration) (stormRun, error) {
	conn, err := server4.NewIPv4UDPConn(iface, &net.UDPAddr{Port: dhcpv4.ClientPort})
	if err != nil {
		return stormRun{}, fmt.Errorf("dhcp client socket on %s: %w", iface, err)
	}
	defer conn.Close()
	// As the server's: a burst of replies must not overflow the socket.
	if err := netboot.GrowReadBuffer(conn, 4<<20); err != nil {
		return stormRun{}, err
	}
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	var (
		mu      sync.Mutex
		clients = map[dhcpv4.TransactionID]*stormClient{}
		lat     []time.Duration
		last    time.Time
		slots   = make(chan struct{}, max(inflight, 1))
	)
	const timeout = 2 * time.Second
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 1500)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := dhcpv4.FromBytes(buf[:n])
			if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
				continue
			}
			mu.Lock()
			c := clients[m.TransactionID]
			mu.Unlock()
			if c == nil {
				continue
			}
			switch m.MessageType() {
			case dhcpv4.MessageTypeOffer:
				if c.request {
					continue
				}
				c.request = true
				req, err := dhcpv4.NewRequestFromOffer(m, dhcpv4.WithBroadcast(true))
				if err != nil {
					continue
				}
				conn.WriteTo(req.ToBytes(), bcast)
			case dhcpv4.MessageTypeAck:
				now := time.Now()
				mu.Lock()
				if clients[m.TransactionID] != nil {
					delete(clients, m.TransactionID)
					lat = append(lat, now.Sub(c.start))
					last = now
					if rate == 0 {
						<-slots
					}
				}
				mu.Unlock()
			}
		}
	}()
	// Clients past their time free their slot (closed loop) and count as
	// dropped.
	sweepCtx, stopSweep := context.WithCancel(context.Background())
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sweepCtx.Done():
				return
			case now := <-t.C:
				mu.Lock()
				for id, c := range clients {
					if now.Sub(c.start) > timeout {
						delete(clients, id)
						if rate == 0 {
							<-slots
						}
					}
				}
				mu.Unlock()
			}
		}
	}()

	started := 0
	send := func() {
		var hw [8]byte
		binary.BigEndian.PutUint32(hw[4:], macBase+uint32(started))
		mac := net.HardwareAddr{0x02, 0xbf, hw[4], hw[5], hw[6], hw[7]}
		started++
		disc, err := dhcpv4.NewDiscovery(mac, dhcpv4.WithBroadcast(true))
		if err != nil {
			return
		}
		mu.Lock()
		clients[disc.TransactionID] = &stormClient{mac: mac, start: time.Now()}
		mu.Unlock()
		conn.WriteTo(disc.ToBytes(), bcast)
	}
	begin := time.Now()
	end := begin.Add(dur)
	if rate > 0 {
		// Open loop: at each step, start as many clients as the rate
		// owes by now.
		for now := time.Now(); now.Before(end); now = time.Now() {
			for owed := int(now.Sub(begin).Seconds() * rate); started < owed; {
				send()
			}
			time.Sleep(200 * time.Microsecond)
		}
	} else {
		for time.Now().Before(end) {
			slots <- struct{}{}
			send()
		}
	}
	// Let the last clients finish or time out.
	for deadline := time.Now().Add(timeout + 100*time.Millisecond); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := len(clients)
		mu.Unlock()
		if n == 0 {
			break
		}
	}
	stopSweep()
	<-sweepDone
	conn.Close()
	<-readDone
	mu.Lock()
	defer mu.Unlock()
	r := stormRun{started: started, acked: len(lat)}
	if rate > 0 {
		// Served rate over the offered window: a server that keeps up
		// serves the offered rate.
		r.took = dur
		if last.Sub(begin) > dur {
			r.took = last.Sub(begin)
		}
	} else {
		r.took = time.Since(begin)
		if !last.IsZero() {
			r.took = last.Sub(begin)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		r.p50 = lat[len(lat)/2]
		r.p99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return r, nil
}
