package netboot

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Boot files in the boot root, from Debian's ipxe package. UEFI PXE gets
// snponly.efi (170 KB, drives the NIC through the firmware's own SNP
// driver): lockstep TFTP is slow, and it is a fifth of ipxe.efi. UEFI HTTP
// boot gets the full ipxe.efi, which HTTP fetches in a moment.
const (
	BIOSBootFile   = "undionly.kpxe"
	EFIBootFile    = "ipxe.efi"
	EFISNPBootFile = "snponly.efi"
)

// ClientKind is what kind of boot client sent a request.
type ClientKind int

// Client kinds, told apart by options 60, 77 and 93.
const (
	ClientPlain ClientKind = iota // an OS's DHCP client: address only
	ClientBIOSPXE
	ClientEFIPXE
	ClientEFIHTTP
	ClientIPXE
)

func (k ClientKind) String() string {
	return [...]string{"dhcp", "bios-pxe", "efi-pxe", "efi-http", "ipxe"}[k]
}

// iPXE's own options: 175 encapsulates them (iPXE sends its feature
// list there, and reads its settings from the server's), 176 within it
// is no-pxedhcp.
const (
	ipxeEncap     = 175
	ipxeNoPXEDHCP = 176
)

// Classify tells what kind of boot client sent req.
func Classify(req *dhcpv4.DHCPv4) ClientKind {
	uc := req.UserClass()
	for _, c := range uc {
		if c == "iPXE" {
			return ClientIPXE
		}
	}
	// iPXE also sends option 175 (its own encapsulated options).
	if req.Options.Has(dhcpv4.OptionCode(dhcpv4.GenericOptionCode(ipxeEncap))) {
		return ClientIPXE
	}
	vc := req.ClassIdentifier()
	archs := req.ClientArch()
	efi := false
	for _, a := range archs {
		switch a {
		case iana.EFI_X86_64, iana.EFI_BC, iana.EFI_X86_64_HTTP:
			efi = true
		}
	}
	switch {
	case strings.HasPrefix(vc, "HTTPClient"):
		return ClientEFIHTTP
	case strings.HasPrefix(vc, "PXEClient") && efi:
		return ClientEFIPXE
	case strings.HasPrefix(vc, "PXEClient"):
		return ClientBIOSPXE
	}
	return ClientPlain
}

// DHCPConfig configures the DHCP responder.
type DHCPConfig struct {
	ServerIP netip.Addr
	Prefix   netip.Prefix
	Gateway  netip.Addr
	DNS      []netip.Addr
	Lease    time.Duration
	// HTTPBase is the base URL of the HTTP service, e.g. http://10.77.0.1:8080.
	HTTPBase string
	// Proxy answers boot information only, never an address.
	Proxy bool
}

// ErrIgnore means the request gets no answer (not an error to log loudly).
var ErrIgnore = errors.New("ignored")

// Admitter decides what a MAC may do; the registry implements it.
type Admitter interface {
	// Admit returns the node row for mac and whether it may boot now.
	// ok false with err nil means "answer nothing".
	Admit(mac net.HardwareAddr, kind ClientKind) (Admission, error)
}

// Admission is the registry's answer for one MAC.
type Admission struct {
	Node     int
	Hostname string
	// Static is the node table address, if any.
	Static netip.Addr
	// Wait means: give an address but boot a script that waits for
	// `locus node accept`.
	Wait bool
}

// DHCP builds replies; it holds no sockets, so it is tested with packets.
type DHCP struct {
	cfg    DHCPConfig
	leases *Leases
	admit  Admitter
}

// NewDHCP returns a responder.
func NewDHCP(cfg DHCPConfig, leases *Leases, admit Admitter) *DHCP {
	return &DHCP{cfg: cfg, leases: leases, admit: admit}
}

// CheckRequest refuses packets a server must not act on.
func CheckRequest(req *dhcpv4.DHCPv4) error {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return fmt.Errorf("netboot: dhcp: opcode %s, want BootRequest", req.OpCode)
	}
	if req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return fmt.Errorf("netboot: dhcp: hardware type %v / address length %d, want Ethernet", req.HWType, len(req.ClientHWAddr))
	}
	if req.MessageType() == dhcpv4.MessageTypeNone {
		return fmt.Errorf("netboot: dhcp: no message type (BOOTP is not served)")
	}
	return nil
}

// Reply returns the answer to req, or ErrIgnore (wrapped) for no answer.
func (d *DHCP) Reply(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, ClientKind, error) {
	if err := CheckRequest(req); err != nil {
		return nil, ClientPlain, err
	}
	kind := Classify(req)
	mac := req.ClientHWAddr
	if d.cfg.Proxy && kind == ClientPlain {
		return nil, kind, fmt.Errorf("%w: proxyDHCP answers boot clients only", ErrIgnore)
	}
	adm, err := d.admit.Admit(mac, kind)
	if err != nil {
		return nil, kind, err
	}
	mt := req.MessageType()
	switch mt {
	case dhcpv4.MessageTypeRelease:
		return nil, kind, errors.Join(ErrIgnore, d.leases.Release(mac))
	case dhcpv4.MessageTypeDecline:
		if a, ok := netip.AddrFromSlice(req.RequestedIPAddress().To4()); ok {
			return nil, kind, errors.Join(ErrIgnore, d.leases.Decline(mac, a))
		}
		return nil, kind, ErrIgnore
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform:
	default:
		return nil, kind, fmt.Errorf("%w: message type %s", ErrIgnore, mt)
	}

	resp, err := dhcpv4.NewReplyFromRequest(req,
		dhcpv4.WithServerIP(d.cfg.ServerIP.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(d.cfg.ServerIP.AsSlice())),
	)
	if err != nil {
		return nil, kind, fmt.Errorf("netboot: dhcp reply: %w", err)
	}
	if !d.cfg.Proxy && mt != dhcpv4.MessageTypeInform {
		if adm.Static.IsValid() {
			d.leases.SetStatic(mac, adm.Static, adm.Node, adm.Hostname)
		}
		var requested netip.Addr
		if r := req.RequestedIPAddress(); r != nil {
			requested, _ = netip.AddrFromSlice(r.To4())
		} else if !req.ClientIPAddr.IsUnspecified() {
			requested, _ = netip.AddrFromSlice(req.ClientIPAddr.To4())
		}
		switch mt {
		case dhcpv4.MessageTypeDiscover:
			addr, err := d.leases.Offer(mac, requested)
			if err != nil {
				return nil, kind, fmt.Errorf("netboot: dhcp offer to %s: %w", mac, err)
			}
			resp.YourIPAddr = addr.AsSlice()
			resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeOffer))
		case dhcpv4.MessageTypeRequest:
			if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(d.cfg.ServerIP.AsSlice()) {
				// The client chose another server's offer: forget ours.
				return nil, kind, fmt.Errorf("%w: %s chose server %s", ErrIgnore, mac, sid)
			}
			want, err := d.leases.Offer(mac, requested)
			if err == nil && requested.IsValid() && want != requested {
				err = fmt.Errorf("%s asked for %s, which is not its address", mac, requested)
			}
			var le Lease
			if err == nil {
				le, err = d.leases.Commit(mac, want, d.cfg.Lease)
			}
			if err != nil {
				nak, nerr := dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
					dhcpv4.WithOption(dhcpv4.OptServerIdentifier(d.cfg.ServerIP.AsSlice())),
					dhcpv4.WithOption(dhcpv4.OptMessage(err.Error())))
				if nerr != nil {
					return nil, kind, nerr
				}
				return nak, kind, nil
			}
			resp.YourIPAddr = le.Addr.AsSlice()
			resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeAck))
		}
		resp.UpdateOption(dhcpv4.OptSubnetMask(net.CIDRMask(d.cfg.Prefix.Bits(), 32)))
		resp.UpdateOption(dhcpv4.OptIPAddressLeaseTime(d.cfg.Lease))
		resp.UpdateOption(dhcpv4.OptRenewTimeValue(d.cfg.Lease / 2))
		resp.UpdateOption(dhcpv4.OptRebindingTimeValue(d.cfg.Lease * 7 / 8))
		if d.cfg.Gateway.IsValid() {
			resp.UpdateOption(dhcpv4.OptRouter(d.cfg.Gateway.AsSlice()))
		}
		if len(d.cfg.DNS) > 0 {
			var ips []net.IP
			for _, a := range d.cfg.DNS {
				ips = append(ips, a.AsSlice())
			}
			resp.UpdateOption(dhcpv4.OptDNS(ips...))
		}
		if adm.Hostname != "" {
			resp.UpdateOption(dhcpv4.OptHostName(adm.Hostname))
		}
	} else {
		resp.YourIPAddr = net.IPv4zero
		switch mt {
		case dhcpv4.MessageTypeDiscover:
			resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeOffer))
		default:
			resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeAck))
		}
	}
	d.bootOptions(req, resp, kind, mac)
	return resp, kind, nil
}

// bootOptions adds what a boot client needs to load iPXE, or iPXE its
// script: BIOS PXE gets undionly.kpxe and UEFI PXE ipxe.efi over TFTP;
// UEFI HTTP boot gets ipxe.efi over HTTP; iPXE itself gets the URL of the
// node's script, so it never chainloads itself again.
func (d *DHCP) bootOptions(req, resp *dhcpv4.DHCPv4, kind ClientKind, mac net.HardwareAddr) {
	var file string
	switch kind {
	case ClientPlain:
		return
	case ClientIPXE:
		file = fmt.Sprintf("%s/ipxe/%s.ipxe", d.cfg.HTTPBase, strings.ReplaceAll(mac.String(), ":", "-"))
		if !d.cfg.Proxy {
			// This offer is the whole answer: iPXE's no-pxedhcp flag
			// (175.176) tells it not to wait for a ProxyDHCP offer,
			// which it otherwise does for 2 s past the first offer,
			// taking the next retransmit timer (about 3 s) to ask.
			resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(ipxeEncap), []byte{ipxeNoPXEDHCP, 1, 1}))
		}
	case ClientEFIHTTP:
		file = d.cfg.HTTPBase + "/" + EFIBootFile
		resp.UpdateOption(dhcpv4.OptClassIdentifier("HTTPClient"))
	case ClientEFIPXE:
		file = EFISNPBootFile
	case ClientBIOSPXE:
		file = BIOSBootFile
	}
	if kind == ClientBIOSPXE || kind == ClientEFIPXE {
		resp.UpdateOption(dhcpv4.OptTFTPServerName(d.cfg.ServerIP.String()))
		if d.cfg.Proxy {
			// A proxy offer must say PXEClient, and PXE discovery control
			// 8: boot the file named here, no boot-server discovery.
			resp.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
			resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{6, 1, 8, 255}))
		}
		// A full DHCP offer carries no option 60: UEFI firmware (EDK2)
		// takes a PXEClient offer without option 43 for a BINL offer and
		// asks port 4011 for the boot file, stalling the boot; without
		// it the offer's boot file is used as is (dnsmasq does the same).
	}
	if guid := req.GetOneOption(dhcpv4.OptionClientMachineIdentifier); guid != nil {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, guid))
	}
	resp.BootFileName = file
	resp.UpdateOption(dhcpv4.OptBootFileName(file))
	resp.ServerIPAddr = d.cfg.ServerIP.AsSlice()
}
