package netboot

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

const testSpec = `
cluster: {name: t}
interconnect: {subnet: 10.77.0.0/24, gateway: 10.77.0.254, dns: [10.77.0.254]}
nodes:
  - {number: 2, mac: "52:54:00:00:00:02"}
  - {number: 3, mac: "52:54:00:00:00:03", hostname: gamma}
netboot: {admission: discover, pool: 10.77.0.100-10.77.0.102}
`

func newTestDHCP(t testing.TB, specYAML string, proxy bool) (*DHCP, *Leases, *Registry) {
	t.Helper()
	spec, err := clusterspec.Parse("t.yaml", []byte(specYAML))
	if err != nil {
		t.Fatal(err)
	}
	first, last, _ := spec.Pool()
	dir := t.TempDir()
	leases, err := OpenLeases(filepath.Join(dir, "leases.json"), first, last, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := OpenRegistry(spec, filepath.Join(dir, "registry.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	server := spec.Prefix().Addr().Next()
	d := NewDHCP(DHCPConfig{ServerIP: server, Prefix: spec.Prefix(), Gateway: netip.MustParseAddr("10.77.0.254"),
		DNS: []netip.Addr{netip.MustParseAddr("10.77.0.254")}, Lease: time.Hour, HTTPBase: "http://" + server.String() + ":8080", Proxy: proxy}, leases, reg)
	return d, leases, reg
}

// The option sets real firmware sends (as captured from QEMU's SeaBIOS
// iPXE ROM, OVMF's PXE and iPXE itself).
func biosPXE(mac net.HardwareAddr, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	m, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, make([]byte, 16)...))))
	return m
}

func efiPXE(mac net.HardwareAddr, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	m, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)))
	return m
}

func efiHTTP(mac net.HardwareAddr, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	m, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016:UNDI:003000")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64_HTTP)))
	return m
}

func ipxe(mac net.HardwareAddr, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	m, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)))
	return m
}

func plain(mac net.HardwareAddr, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	m, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(mt))
	return m
}

var (
	mac2    = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2}
	mac3    = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 3}
	unknown = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x77}
)

func TestBootFilePerClient(t *testing.T) {
	d, _, _ := newTestDHCP(t, testSpec, false)
	for _, tt := range []struct {
		name     string
		req      *dhcpv4.DHCPv4
		kind     ClientKind
		file     string
		vendorID string
	}{
		{"bios pxe", biosPXE(mac2, dhcpv4.MessageTypeDiscover), ClientBIOSPXE, "undionly.kpxe", ""},
		{"uefi pxe", efiPXE(mac2, dhcpv4.MessageTypeDiscover), ClientEFIPXE, "snponly.efi", ""},
		{"uefi http", efiHTTP(mac2, dhcpv4.MessageTypeDiscover), ClientEFIHTTP, "http://10.77.0.1:8080/ipxe.efi", "HTTPClient"},
		{"ipxe", ipxe(mac2, dhcpv4.MessageTypeDiscover), ClientIPXE, "http://10.77.0.1:8080/ipxe/52-54-00-00-00-02.ipxe", ""},
		{"os client", plain(mac2, dhcpv4.MessageTypeDiscover), ClientPlain, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, kind, err := d.Reply(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if kind != tt.kind {
				t.Errorf("kind = %v, want %v", kind, tt.kind)
			}
			if resp.MessageType() != dhcpv4.MessageTypeOffer {
				t.Errorf("type = %v, want OFFER", resp.MessageType())
			}
			if got := resp.YourIPAddr.String(); got != "10.77.0.2" {
				t.Errorf("yiaddr = %s, want node 2's static 10.77.0.2", got)
			}
			if resp.BootFileName != tt.file || resp.GetOneOption(dhcpv4.OptionBootfileName) != nil && string(resp.GetOneOption(dhcpv4.OptionBootfileName)) != tt.file {
				t.Errorf("boot file = %q, want %q", resp.BootFileName, tt.file)
			}
			if resp.ClassIdentifier() != tt.vendorID {
				t.Errorf("option 60 = %q, want %q", resp.ClassIdentifier(), tt.vendorID)
			}
			if !resp.Router()[0].Equal(net.IPv4(10, 77, 0, 254)) || resp.SubnetMask().String() != "ffffff00" || resp.HostName() != "node2" {
				t.Errorf("options: router %v mask %v hostname %q", resp.Router(), resp.SubnetMask(), resp.HostName())
			}
		})
	}
}

// TestIPXEToldNotToWaitForProxyDHCP: a full server's answers to iPXE
// carry iPXE's no-pxedhcp flag (175.176 = 1), so iPXE takes the offer at
// once instead of waiting 2 s for a ProxyDHCP offer; a proxy's answers
// do not (there another server gives the address, and iPXE must take
// the proxy's boot file), nor do answers to other clients.
func TestIPXEToldNotToWaitForProxyDHCP(t *testing.T) {
	encap := dhcpv4.GenericOptionCode(ipxeEncap)
	for _, tt := range []struct {
		name  string
		proxy bool
		req   *dhcpv4.DHCPv4
		want  []byte
	}{
		{"ipxe discover", false, ipxe(mac2, dhcpv4.MessageTypeDiscover), []byte{176, 1, 1}},
		{"ipxe via proxy", true, ipxe(mac2, dhcpv4.MessageTypeDiscover), nil},
		{"bios pxe", false, biosPXE(mac2, dhcpv4.MessageTypeDiscover), nil},
		{"os client", false, plain(mac2, dhcpv4.MessageTypeDiscover), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, _, _ := newTestDHCP(t, testSpec, tt.proxy)
			resp, _, err := d.Reply(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			// Through the wire format, as iPXE reads it.
			back, err := dhcpv4.FromBytes(resp.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			if got := back.GetOneOption(encap); !bytes.Equal(got, tt.want) {
				t.Errorf("option 175 = %v, want %v", got, tt.want)
			}
		})
	}
	// The ACK too: iPXE reads its settings from the ACK.
	d, _, _ := newTestDHCP(t, testSpec, false)
	req := ipxe(mac2, dhcpv4.MessageTypeRequest)
	req.UpdateOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 77, 0, 2)))
	req.UpdateOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 77, 0, 1)))
	ack, _, err := d.Reply(req)
	if err != nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("request = %v %v, want an ACK", ack, err)
	}
	if got := ack.GetOneOption(encap); !bytes.Equal(got, []byte{176, 1, 1}) {
		t.Errorf("ACK's option 175 = %v, want [176 1 1]", got)
	}
}

func TestDORAWithPoolAndPersistence(t *testing.T) {
	d, leases, reg := newTestDHCP(t, testSpec, false)
	// An unknown MAC under "discover" gets a pool address and waits.
	offer, _, err := d.Reply(ipxe(unknown, dhcpv4.MessageTypeDiscover))
	if err != nil {
		t.Fatal(err)
	}
	got := offer.YourIPAddr.String()
	if got != "10.77.0.100" {
		t.Fatalf("offer to unknown = %s, want the first pool address", got)
	}
	req := ipxe(unknown, dhcpv4.MessageTypeRequest)
	req.UpdateOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr))
	req.UpdateOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 77, 0, 1)))
	ack, _, err := d.Reply(req)
	if err != nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.YourIPAddr.String() != got {
		t.Fatalf("request = %v %v, want ACK for %s", ack, err, got)
	}
	if c := reg.Contacts(); len(c) != 1 || c[0].Status != "pending" {
		t.Errorf("registry = %+v, want one pending contact", c)
	}
	// A request for someone else's address is refused with a NAK.
	other := plain(net.HardwareAddr{2, 0, 0, 0, 0, 9}, dhcpv4.MessageTypeRequest)
	other.UpdateOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr))
	nak, _, err := d.Reply(other)
	if err == nil && nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("request for a taken address = %v, want NAK", nak.MessageType())
	}
	// The lease survives a restart once synced (the server syncs every
	// batch before its ACKs leave).
	if err := leases.Sync(); err != nil {
		t.Fatal(err)
	}
	reopened, err := OpenLeases(leases.file, leases.first, leases.last, nil)
	if err != nil {
		t.Fatal(err)
	}
	if le, ok := reopened.Lookup(unknown); !ok || le.Addr.String() != got {
		t.Errorf("after reopen: lease %+v, %v, want %s", le, ok, got)
	}
	// Release frees it.
	if _, _, err := d.Reply(plain(unknown, dhcpv4.MessageTypeRelease)); !errors.Is(err, ErrIgnore) {
		t.Errorf("release = %v", err)
	}
	if _, ok := leases.Lookup(unknown); ok {
		t.Error("lease still there after RELEASE")
	}
}

func TestPoolExhaustionAndDecline(t *testing.T) {
	d, _, _ := newTestDHCP(t, strings.Replace(testSpec, "admission: discover", "admission: accept", 1), false)
	var addrs []string
	for i := range 4 {
		mac := net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}
		offer, _, err := d.Reply(plain(mac, dhcpv4.MessageTypeDiscover))
		if err != nil {
			addrs = append(addrs, "err")
			continue
		}
		req := plain(mac, dhcpv4.MessageTypeRequest)
		req.UpdateOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr))
		if _, _, err := d.Reply(req); err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, offer.YourIPAddr.String())
	}
	// "accept" gives accepted nodes their node-table address (numbers 1,
	// 4, 5, 6: 2 and 3 are in the table), not a pool address.
	if strings.Join(addrs, " ") != "10.77.0.1 10.77.0.4 10.77.0.5 10.77.0.6" {
		t.Errorf("addresses = %v", addrs)
	}
	d2, _, _ := newTestDHCP(t, testSpec, false)
	for i := range 3 {
		if _, _, err := d2.Reply(ipxe(net.HardwareAddr{2, 0, 0, 0, 2, byte(i)}, dhcpv4.MessageTypeDiscover)); err != nil {
			t.Fatal(err)
		}
		req := ipxe(net.HardwareAddr{2, 0, 0, 0, 2, byte(i)}, dhcpv4.MessageTypeRequest)
		if _, _, err := d2.Reply(req); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := d2.Reply(ipxe(net.HardwareAddr{2, 0, 0, 0, 2, 9}, dhcpv4.MessageTypeDiscover)); !errors.Is(err, ErrPoolExhausted) {
		t.Errorf("discover with a full pool = %v, want ErrPoolExhausted", err)
	}
}

func TestDenyIgnoresUnknown(t *testing.T) {
	d, _, reg := newTestDHCP(t, strings.Replace(testSpec, "admission: discover", "admission: deny", 1), false)
	if _, _, err := d.Reply(biosPXE(unknown, dhcpv4.MessageTypeDiscover)); !errors.Is(err, ErrIgnore) {
		t.Errorf("unknown MAC under deny = %v, want ErrIgnore", err)
	}
	if c := reg.Contacts(); len(c) != 1 || c[0].Status != "denied" {
		t.Errorf("registry = %+v, want the denied contact recorded", c)
	}
	if _, _, err := d.Reply(biosPXE(mac3, dhcpv4.MessageTypeDiscover)); err != nil {
		t.Errorf("known MAC under deny = %v", err)
	}
}

func TestProxyDHCPGivesNoAddress(t *testing.T) {
	d, _, _ := newTestDHCP(t, testSpec, true)
	resp, _, err := d.Reply(biosPXE(mac2, dhcpv4.MessageTypeDiscover))
	if err != nil {
		t.Fatal(err)
	}
	if !resp.YourIPAddr.IsUnspecified() || resp.BootFileName != "undionly.kpxe" || resp.ClassIdentifier() != "PXEClient" {
		t.Errorf("proxy offer: yiaddr %s file %q vendor %q", resp.YourIPAddr, resp.BootFileName, resp.ClassIdentifier())
	}
	if resp.GetOneOption(dhcpv4.OptionVendorSpecificInformation) == nil {
		t.Error("proxy offer lacks PXE discovery control (option 43)")
	}
	if _, _, err := d.Reply(plain(mac2, dhcpv4.MessageTypeDiscover)); !errors.Is(err, ErrIgnore) {
		t.Errorf("proxy answered a plain client: %v", err)
	}
}

func TestMalformedPackets(t *testing.T) {
	d, _, _ := newTestDHCP(t, testSpec, false)
	reply, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac2), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))
	reply.OpCode = dhcpv4.OpcodeBootReply
	bootp, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac2))
	bootp.Options = dhcpv4.Options{}
	for name, m := range map[string]*dhcpv4.DHCPv4{"bootreply": reply, "bootp": bootp} {
		if _, _, err := d.Reply(m); err == nil {
			t.Errorf("%s: answered, want refused", name)
		}
	}
}

// FuzzDHCP feeds raw packets through parsing and the responder: nothing
// may panic, and any reply must be a valid server message.
func FuzzDHCP(f *testing.F) {
	for _, m := range []*dhcpv4.DHCPv4{biosPXE(mac2, dhcpv4.MessageTypeDiscover), efiPXE(mac3, dhcpv4.MessageTypeRequest),
		ipxe(unknown, dhcpv4.MessageTypeDiscover), efiHTTP(mac2, dhcpv4.MessageTypeDiscover), plain(mac2, dhcpv4.MessageTypeInform)} {
		f.Add(m.ToBytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		d, _, _ := newTestDHCP(t, testSpec, false)
		resp, _, err := d.Reply(req)
		if err != nil {
			return
		}
		if resp.OpCode != dhcpv4.OpcodeBootReply {
			t.Fatalf("reply opcode %v", resp.OpCode)
		}
		if _, err := dhcpv4.FromBytes(resp.ToBytes()); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
	})
}

// A machine that boots again starts over at dhcp in the registry: its
// firmware's request resets the stage an earlier boot reached, and iPXE's
// own request (or an OS renewing its lease) does not.
func TestRegistryStageRestartsWithFirmware(t *testing.T) {
	_, _, reg := newTestDHCP(t, testSpec, false)
	hw := mac3
	reg.Admit(hw, ClientBIOSPXE)
	reg.Record(hw, StageInitramfs, netip.Addr{})
	for _, step := range []struct {
		kind ClientKind
		want string
	}{{ClientIPXE, StageInitramfs}, {ClientPlain, StageInitramfs}, {ClientBIOSPXE, StageDHCP}} {
		reg.Admit(hw, step.kind)
		if c := reg.Contacts(); len(c) != 1 || c[0].Stage != step.want {
			t.Errorf("after a %s request: %+v, want stage %s", step.kind, c, step.want)
		}
	}
}

func TestBootstrapSecretsAreOneTime(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	spec, _ := clusterspec.Parse("t.yaml", []byte(testSpec))
	reg, _ := OpenRegistry(spec, "", func() time.Time { return now })
	addr := netip.MustParseAddr("10.77.0.3")
	s := reg.IssueSecret(mac3, 3, addr)
	if _, err := reg.RedeemSecret(mac3, "wrong", addr); err == nil {
		t.Error("a wrong secret was accepted")
	}
	if _, err := reg.RedeemSecret(unknown, s, addr); err == nil {
		t.Error("another MAC's secret was accepted")
	}
	if n, err := reg.RedeemSecret(mac3, s, addr); err != nil || n != 3 {
		t.Fatalf("RedeemSecret = %d, %v", n, err)
	}
	if _, err := reg.RedeemSecret(mac3, s, addr); err == nil {
		t.Error("a secret was accepted twice")
	}
	// A newer script does not take away the secret an earlier one
	// carried: both are good, once each, for an hour.
	old := reg.IssueSecret(mac3, 3, addr)
	newer := reg.IssueSecret(mac3, 3, addr)
	for _, v := range []string{old, newer} {
		if _, err := reg.RedeemSecret(mac3, v, addr); err != nil {
			t.Errorf("RedeemSecret after a re-issue = %v, want both secrets good", err)
		}
	}
	stale := reg.IssueSecret(mac3, 3, addr)
	now = now.Add(2 * time.Hour)
	if _, err := reg.RedeemSecret(mac3, stale, addr); !errors.Is(err, ErrBadSecret) {
		t.Errorf("a two-hour-old secret: %v, want ErrBadSecret", err)
	}
}

// TestScriptExchangeFromDHCP: an iPXE client's ACK opens one script fetch
// for the address the ACK gave (the netboot service records it before the
// ACK leaves); a proxy's ACK, which gives none, for the address the client
// asked for.
func TestScriptExchangeFromDHCP(t *testing.T) {
	for _, proxy := range []bool{false, true} {
		d, _, reg := newTestDHCP(t, testSpec, proxy)
		req := ipxe(mac3, dhcpv4.MessageTypeRequest)
		req.UpdateOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.77.0.3")))
		resp, kind, err := d.Reply(req)
		if err != nil || kind != ClientIPXE || resp.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("proxy %v: Reply = %v, %s, %v", proxy, resp, kind, err)
		}
		a := exchangeAddr(req, resp)
		if a != netip.MustParseAddr("10.77.0.3") {
			t.Errorf("proxy %v: exchange address %s, want 10.77.0.3", proxy, a)
		}
		reg.Exchanged(mac3, a)
		if err := reg.ScriptAllowed(mac3, netip.MustParseAddr("10.77.0.9"), true); !errors.Is(err, ErrNotLeaseHolder) {
			t.Errorf("proxy %v: script to another address: %v, want ErrNotLeaseHolder", proxy, err)
		}
		if err := reg.ScriptAllowed(mac3, a, false); err != nil {
			t.Errorf("proxy %v: a wait script to the holder: %v", proxy, err)
		}
		if err := reg.ScriptAllowed(mac3, a, true); err != nil {
			t.Errorf("proxy %v: the boot script to the holder: %v", proxy, err)
		}
		if err := reg.ScriptAllowed(mac3, a, true); !errors.Is(err, ErrNoExchange) {
			t.Errorf("proxy %v: a second boot script: %v, want ErrNoExchange", proxy, err)
		}
	}
}

// TestDeclineOnlyFromTheHolder: a DECLINE takes an address out of the
// pool only when the MAC sending it holds that address's lease; anyone
// else's is ignored and the holder keeps it.
func TestDeclineOnlyFromTheHolder(t *testing.T) {
	d, leases, _ := newTestDHCP(t, testSpec, false)
	holder := net.HardwareAddr{2, 0, 0, 0, 3, 1}
	offer, _, err := d.Reply(ipxe(holder, dhcpv4.MessageTypeDiscover))
	if err != nil {
		t.Fatal(err)
	}
	req := ipxe(holder, dhcpv4.MessageTypeRequest)
	req.UpdateOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr))
	if _, _, err := d.Reply(req); err != nil {
		t.Fatal(err)
	}
	decline := func(mac net.HardwareAddr) error {
		m := ipxe(mac, dhcpv4.MessageTypeDecline)
		m.UpdateOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr))
		_, _, err := d.Reply(m)
		return err
	}
	if err := decline(net.HardwareAddr{2, 0, 0, 0, 3, 66}); !errors.Is(err, ErrNotHolder) {
		t.Errorf("DECLINE from another MAC = %v, want ErrNotHolder", err)
	}
	if le, ok := leases.Lookup(holder); !ok || le.Addr.String() != offer.YourIPAddr.String() {
		t.Errorf("after another MAC's DECLINE the holder's lease is %+v, %v; want it kept", le, ok)
	}
	if err := decline(holder); errors.Is(err, ErrNotHolder) {
		t.Errorf("the holder's own DECLINE = %v, want it honoured", err)
	}
	if _, ok := leases.Lookup(holder); ok {
		t.Error("the holder's DECLINE left its lease")
	}
}

// TestFloodOfNewMACs: 10,000 DISCOVERs from made-up MACs, with admission
// accept, take at most NewMACsPerMinute node numbers and registry
// entries; the known nodes are answered throughout.
func TestFloodOfNewMACs(t *testing.T) {
	d, _, reg := newTestDHCP(t, strings.Replace(testSpec, "admission: discover", "admission: accept", 1), false)
	start := time.Now()
	refused := 0
	for i := range 10000 {
		mac := net.HardwareAddr{0x02, 0xfe, byte(i >> 16), byte(i >> 8), byte(i), 0x01}
		if _, _, err := d.Reply(plain(mac, dhcpv4.MessageTypeDiscover)); errors.Is(err, ErrTooManyNewMACs) {
			refused++
		}
		if i%1000 == 0 {
			// A known node, in the middle of the flood.
			offer, _, err := d.Reply(ipxe(mac2, dhcpv4.MessageTypeDiscover))
			if err != nil || offer.YourIPAddr.String() != "10.77.0.2" {
				t.Fatalf("node 2 during the flood: %v, %v", offer, err)
			}
		}
	}
	if refused < 10000-NewMACsPerMinute-2 {
		t.Errorf("%d of 10,000 new MACs refused, want all but about %d", refused, NewMACsPerMinute)
	}
	if n := len(reg.Contacts()); n > NewMACsPerMinute+3 {
		t.Errorf("the registry holds %d contacts after the flood, want at most %d", n, NewMACsPerMinute+3)
	}
	t.Logf("10,000 DISCOVERs from new MACs answered or refused in %v; %d refused", time.Since(start).Round(time.Millisecond), refused)
}
