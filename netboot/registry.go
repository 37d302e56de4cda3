package netboot

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"
	"golang.org/x/time/rate"

	"github.com/locus-ssi/locus/internal/atomicfile"
)

// Boot stages the registry records, in order.
const (
	StageDHCP      = "dhcp"
	StageTFTP      = "tftp"
	StageIPXE      = "ipxe"
	StageKernel    = "kernel"
	StageInitramfs = "initramfs"
)

// Contact is what the registry knows of one MAC.
type Contact struct {
	MAC      string    `json:"mac"`
	Node     int       `json:"node,omitempty"`
	Hostname string    `json:"hostname,omitempty"`
	Addr     string    `json:"addr,omitempty"`
	Client   string    `json:"client,omitempty"`
	Stage    string    `json:"stage"`
	Status   string    `json:"status"` // known, accepted, pending, denied
	First    time.Time `json:"first"`
	Last     time.Time `json:"last"`
}

// Registry records every contact by MAC with its boot stage, and decides
// admission: MACs in the node table, or accepted by the operator, boot;
// others are ignored, kept waiting, or accepted, as the spec's admission
// policy says. Accepted MACs are persisted.
type Registry struct {
	spec *clusterspec.Spec
	file string
	now  func() time.Time

	mu       sync.Mutex
	contacts map[string]*Contact
	accepted map[string]int
	dirty    bool
	// reserved addresses are never given to an auto-numbered node (the
	// netboot server's own).
	reserved []netip.Addr
	// secrets are the one-time bootstrap secrets handed out in node
	// scripts, by MAC, each bound to the address it was served to (in
	// memory only: a restarted service invalidates them, and a node that
	// booted with one must boot again).
	secrets map[string][]secret
	table   map[string]clusterspec.Node // the node table by MAC
	// newMACs limits the MACs never seen before taken in (Admit).
	newMACs     *rate.Limiter
	floodLogged time.Time
	log         *slog.Logger
	// exchanges are, by MAC, this boot's DHCP exchange of an iPXE client
	// that has not fetched its boot script yet: the address the lease
	// gave it, which alone may fetch the script, once.
	exchanges map[string]exchange
}

type secret struct {
	value  string
	node   int
	addr   netip.Addr
	issued time.Time
}

type exchange struct {
	addr netip.Addr
	at   time.Time
}

// Lifetimes of what the admission path hands out.
const (
	// exchangeTTL: a script must be fetched this soon after the DHCP
	// exchange that allowed it (an unadmitted node's wait loop asks
	// again every few seconds; a DHCP renewal makes a new exchange).
	exchangeTTL = 24 * time.Hour
	// secretTTL: a secret must be redeemed this soon after it was
	// served (a node boots its kernel and asks within a minute).
	secretTTL = time.Hour
	// maxSecrets per MAC: a node that reboots before it redeemed gets a
	// new one without the old ones growing without bound.
	maxSecrets = 4
	// maxExchanges bounds the exchanges remembered at once.
	maxExchanges = 4096
)

// Errors of the admission path.
var (
	// ErrNoExchange: no DHCP exchange of this boot allows a script for
	// the MAC (none happened, it expired, or its script was served).
	ErrNoExchange = errors.New("netboot: no DHCP exchange of this MAC's awaits its script (a boot script is served once per exchange: ask DHCP again)")
	// ErrNotLeaseHolder: the address asking is not the one this MAC's
	// DHCP exchange gave.
	ErrNotLeaseHolder = errors.New("netboot: this address does not hold the MAC's lease")
	// ErrBadSecret refuses an admission.
	ErrBadSecret = errors.New("netboot: no such bootstrap secret for this MAC (wrong, already used, expired, or issued before a restart)")
	// ErrSecretAddr: the secret is redeemed from another address than
	// the one it was served to.
	ErrSecretAddr = errors.New("netboot: the secret was served to another address")
)

// Exchanged records an iPXE client's DHCP exchange: mac now holds addr,
// and addr (alone) may fetch mac's boot script, once. The netboot service
// calls it before it sends the ACK.
func (r *Registry) Exchanged(mac net.HardwareAddr, addr netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.exchanges == nil {
		r.exchanges = map[string]exchange{}
	}
	if len(r.exchanges) >= maxExchanges {
		// A flood of made-up MACs: forget the oldest half rather than
		// grow without bound (a real node asks DHCP again).
		for k, ex := range r.exchanges {
			if r.now().Sub(ex.at) > time.Minute || len(r.exchanges) > maxExchanges/2 {
				delete(r.exchanges, k)
			}
		}
	}
	r.exchanges[mac.String()] = exchange{addr: addr, at: r.now()}
}

// ScriptAllowed checks that from holds mac's lease from this boot's DHCP
// exchange; consume, for a script that carries a secret, uses the
// exchange up.
func (r *Registry) ScriptAllowed(mac net.HardwareAddr, from netip.Addr, consume bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ex, ok := r.exchanges[mac.String()]
	switch {
	case !ok || r.now().Sub(ex.at) > exchangeTTL:
		return ErrNoExchange
	case ex.addr != from:
		return fmt.Errorf("%w (%s asks; %s holds it)", ErrNotLeaseHolder, from, ex.addr)
	}
	if consume {
		delete(r.exchanges, mac.String())
	}
	return nil
}

// IssueSecret makes a one-time bootstrap secret for mac, admitted as node
// n, served to addr: the node proves with it, once and from that address,
// that it booted the script this service gave it. Secrets issued before
// stay valid (until used or an hour old): a new one never takes away the
// one the lease holder already has.
func (r *Registry) IssueSecret(mac net.HardwareAddr, n int, addr netip.Addr) string {
	b := make([]byte, 16)
	rand.Read(b)
	v := hex.EncodeToString(b)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.secrets == nil {
		r.secrets = map[string][]secret{}
	}
	now := r.now()
	var keep []secret
	for _, s := range r.secrets[mac.String()] {
		if now.Sub(s.issued) <= secretTTL {
			keep = append(keep, s)
		}
	}
	if len(keep) >= maxSecrets {
		keep = keep[len(keep)-maxSecrets+1:]
	}
	r.secrets[mac.String()] = append(keep, secret{value: v, node: n, addr: addr, issued: now})
	return v
}

// RedeemSecret checks a bootstrap secret of mac's, presented from the
// address from, and consumes it, returning the node number it was
// issued for.
func (r *Registry) RedeemSecret(mac net.HardwareAddr, v string, from netip.Addr) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := r.secrets[mac.String()]
	for i, s := range list {
		if subtle.ConstantTimeCompare([]byte(s.value), []byte(v)) != 1 {
			continue
		}
		if r.now().Sub(s.issued) > secretTTL {
			break
		}
		if s.addr != from {
			return 0, fmt.Errorf("%w (%s; presented from %s)", ErrSecretAddr, s.addr, from)
		}
		r.secrets[mac.String()] = append(list[:i:i], list[i+1:]...)
		return s.node, nil
	}
	return 0, ErrBadSecret
}

// Reserve keeps addr from being any auto-numbered node's address.
func (r *Registry) Reserve(addr netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reserved = append(r.reserved, addr)
}

type registryFile struct {
	Accepted map[string]int `json:"accepted"`
	Contacts []*Contact     `json:"contacts"`
}

// OpenRegistry loads the registry file (missing is fine).
func OpenRegistry(spec *clusterspec.Spec, file string, now func() time.Time) (*Registry, error) {
	if now == nil {
		now = time.Now
	}
	perMinute := spec.Netboot.NewMACsPerMinute
	if perMinute <= 0 {
		perMinute = NewMACsPerMinute
	}
	r := &Registry{spec: spec, file: file, now: now, contacts: map[string]*Contact{}, accepted: map[string]int{},
		table:   map[string]clusterspec.Node{},
		newMACs: rate.NewLimiter(rate.Every(time.Minute/time.Duration(perMinute)), perMinute), log: slog.New(slog.DiscardHandler)}
	// The node table by MAC: a packet's lookup is one map access, not a
	// walk of every row (a 10,000-node table is asked on every packet).
	for _, row := range spec.Nodes {
		if m, err := net.ParseMAC(row.MAC); err == nil {
			r.table[m.String()] = row
		}
	}
	if file == "" {
		return r, nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netboot: registry: %w", err)
	}
	var f registryFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("netboot: registry file %s is corrupt: %w", file, err)
	}
	for m, n := range f.Accepted {
		r.accepted[m] = n
	}
	for _, c := range f.Contacts {
		r.contacts[c.MAC] = c
	}
	return r, nil
}

// tableRow is mac's row in the node table.
func (r *Registry) tableRow(mac net.HardwareAddr) (clusterspec.Node, bool) {
	row, ok := r.table[mac.String()]
	return row, ok
}

// SetLogger gives the registry a logger for what it refuses.
func (r *Registry) SetLogger(l *slog.Logger) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = l
}

// NewMACsPerMinute is the default of netboot.new_macs_per_minute: how
// many MACs the registry has never seen, and that are not in the node
// table, it takes in a minute (a burst of as many at once): a rack of new
// machines powered on together fits, a flood of made-up MACs does not get
// to fill the registry, take node numbers (admission: accept) or cost a
// disk write each. Beyond it such a MAC gets no answer.
const NewMACsPerMinute = 64

// ErrTooManyNewMACs refuses a new MAC over NewMACsPerMinute.
var ErrTooManyNewMACs = fmt.Errorf("%w: too many new MACs this minute (at most %d)", ErrIgnore, NewMACsPerMinute)

// Admit implements Admitter.
func (r *Registry) Admit(mac net.HardwareAddr, kind ClientKind) (Admission, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, seen := r.contacts[mac.String()]; !seen {
		if _, known := r.tableRow(mac); !known && r.accepted[mac.String()] == 0 && !r.newMACs.AllowN(r.now(), 1) {
			if r.now().Sub(r.floodLogged) > time.Minute {
				r.floodLogged = r.now()
				r.log.Warn("netboot: new MACs over the limit get no answer (a flood?)", "limit_per_minute", NewMACsPerMinute, "first_refused", mac.String())
			}
			return Admission{}, ErrTooManyNewMACs
		}
	}
	c := r.touchLocked(mac)
	c.Client = kind.String()
	switch {
	case kind == ClientBIOSPXE || kind == ClientEFIPXE || kind == ClientEFIHTTP || c.Stage == "":
		// Firmware asking: the machine is (re)starting its boot.
		c.Stage = StageDHCP
	}
	if row, ok := r.tableRow(mac); ok {
		return r.admitted(c, row.Number, row.Hostname, "known")
	}
	if n, ok := r.accepted[mac.String()]; ok {
		row, _ := r.spec.NodeByNumber(n)
		return r.admitted(c, n, row.Hostname, "accepted")
	}
	switch r.spec.Netboot.Admission {
	case clusterspec.AdmitAccept:
		n := r.nextNumberLocked()
		r.accepted[mac.String()] = n
		row, _ := r.spec.NodeByNumber(n)
		r.saveLocked()
		return r.admitted(c, n, row.Hostname, "accepted")
	case clusterspec.AdmitDiscover:
		c.Status = "pending"
		return Admission{Wait: true}, nil
	}
	c.Status = "denied"
	return Admission{}, fmt.Errorf("%w: %s is not in the node table (admission: deny)", ErrIgnore, mac)
}

func (r *Registry) admitted(c *Contact, n int, hostname, status string) (Admission, error) {
	c.Node, c.Hostname, c.Status = n, hostname, status
	p, err := r.spec.NodeAddr(n)
	if err != nil {
		return Admission{}, err
	}
	return Admission{Node: n, Hostname: hostname, Static: p.Addr()}, nil
}

// nextNumberLocked is the lowest node number neither in the table nor
// accepted.
func (r *Registry) nextNumberLocked() int {
	used := map[int]bool{}
	for _, row := range r.spec.Nodes {
		used[row.Number] = true
	}
	for _, n := range r.accepted {
		used[n] = true
	}
	n := 1
	for used[n] || r.reservedLocked(n) {
		n++
	}
	return n
}

func (r *Registry) reservedLocked(n int) bool {
	p, err := r.spec.NodeAddr(n)
	if err != nil {
		return false
	}
	for _, a := range r.reserved {
		if a == p.Addr() {
			return true
		}
	}
	return false
}

func (r *Registry) touchLocked(mac net.HardwareAddr) *Contact {
	c, ok := r.contacts[mac.String()]
	if !ok {
		c = &Contact{MAC: mac.String(), First: r.now()}
		r.contacts[mac.String()] = c
	}
	c.Last = r.now()
	r.dirty = true
	return c
}

// Record notes that mac reached stage (from addr, if known).
func (r *Registry) Record(mac net.HardwareAddr, stage string, addr netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.touchLocked(mac)
	c.Stage = stage
	if addr.IsValid() {
		c.Addr = addr.String()
	}
	// Contacts are soft state, saved by Save (every few seconds and at
	// shutdown), not on every packet; admissions are saved at once.
	r.dirty = true
}

// Save writes the registry if contacts changed since the last save.
func (r *Registry) Save() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.dirty {
		return nil
	}
	return r.saveLocked()
}

// Accept admits mac as node number (0: the next free number).
func (r *Registry) Accept(mac net.HardwareAddr, number int) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if row, ok := r.tableRow(mac); ok {
		return row.Number, fmt.Errorf("netboot: %s is node %d in the node table already", mac, row.Number)
	}
	if number == 0 {
		number = r.nextNumberLocked()
	}
	for m, n := range r.accepted {
		if n == number && m != mac.String() {
			return 0, fmt.Errorf("netboot: node %d is taken by %s", number, m)
		}
	}
	if row, ok := r.spec.NodeByNumber(number); ok && row.MAC != "" {
		return 0, fmt.Errorf("netboot: node %d is %s in the node table", number, row.MAC)
	}
	if _, err := r.spec.NodeAddr(number); err != nil {
		return 0, err
	}
	r.accepted[mac.String()] = number
	if c, ok := r.contacts[mac.String()]; ok {
		c.Status, c.Node = "accepted", number
	}
	return number, r.saveLocked()
}

// Contacts returns every contact, by MAC.
func (r *Registry) Contacts() []Contact {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Contact, 0, len(r.contacts))
	for _, c := range r.contacts {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MAC < out[j].MAC })
	return out
}

func (r *Registry) saveLocked() error {
	if r.file == "" {
		return nil
	}
	f := registryFile{Accepted: r.accepted}
	for _, c := range r.contacts {
		f.Contacts = append(f.Contacts, c)
	}
	sort.Slice(f.Contacts, func(i, j int) bool { return f.Contacts[i].MAC < f.Contacts[j].MAC })
	b, _ := json.MarshalIndent(f, "", "  ")
	if err := atomicfile.Write(r.file, b, 0o600, true); err != nil {
		return err
	}
	r.dirty = false
	return nil
}
