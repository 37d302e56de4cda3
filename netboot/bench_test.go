package netboot

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// BenchmarkDORA measures the responder alone: one DISCOVER and one
// REQUEST, over 100 MACs, as the netboot benchmark's clients send them.
func BenchmarkDORA(b *testing.B) {
	d, _, _ := newTestDHCP(b, testSpec[:len(testSpec)-len("netboot: {admission: discover, pool: 10.77.0.100-10.77.0.102}\n")]+"netboot: {admission: discover, pool: 10.77.0.100-10.77.0.250}\n", false)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		mac := net.HardwareAddr{2, 0xbe, 0, 0, 0, byte(i % 100)}
		disc, _ := dhcpv4.NewDiscovery(mac, dhcpv4.WithBroadcast(true))
		raw := disc.ToBytes()
		m, _ := dhcpv4.FromBytes(raw)
		offer, _, err := d.Reply(m)
		if err != nil {
			b.Fatal(err)
		}
		_ = offer.ToBytes()
		req, _ := dhcpv4.NewRequestFromOffer(offer)
		m2, _ := dhcpv4.FromBytes(req.ToBytes())
		ack, _, err := d.Reply(m2)
		if err != nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			b.Fatal(err, ack)
		}
		_ = ack.ToBytes()
	}
}
