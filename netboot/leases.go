package netboot

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/locus-ssi/locus/internal/atomicfile"
)

// Lease is one address handed out.
type Lease struct {
	MAC      string     `json:"mac"`
	Addr     netip.Addr `json:"addr"`
	Node     int        `json:"node,omitempty"`
	Hostname string     `json:"hostname,omitempty"`
	Expiry   time.Time  `json:"expiry"`
	// Static leases come from the node table and never expire.
	Static bool `json:"static,omitempty"`
}

// ErrPoolExhausted means no dynamic address is free.
var ErrPoolExhausted = errors.New("address pool exhausted")

// Leases is the lease table: static leases from the node table, dynamic
// ones from the pool, persisted to a file (written atomically) so a
// restart hands every client the address it had.
type Leases struct {
	file        string
	first, last netip.Addr

	mu       sync.Mutex
	byMAC    map[string]*Lease
	declined map[netip.Addr]time.Time
	// saved is each dynamic lease's expiry as the file has it.
	saved map[string]time.Time
	now   func() time.Time
}

// OpenLeases loads the lease file (missing is fine) for the pool
// first..last. Expired leases are dropped.
func OpenLeases(file string, first, last netip.Addr, now func() time.Time) (*Leases, error) {
	if now == nil {
		now = time.Now
	}
	l := &Leases{file: file, first: first, last: last, byMAC: map[string]*Lease{}, declined: map[netip.Addr]time.Time{}, saved: map[string]time.Time{}, now: now}
	if file == "" {
		return l, nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netboot: leases: %w", err)
	}
	var saved []Lease
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, fmt.Errorf("netboot: lease file %s is corrupt: %w (move it aside to start afresh)", file, err)
	}
	for _, s := range saved {
		if s.Static || s.Expiry.After(now()) {
			s := s
			l.byMAC[s.MAC] = &s
			l.saved[s.MAC] = s.Expiry
		}
	}
	return l, nil
}

// SetStatic pins mac to addr (a node table row).
func (l *Leases) SetStatic(mac net.HardwareAddr, addr netip.Addr, node int, hostname string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byMAC[mac.String()] = &Lease{MAC: mac.String(), Addr: addr, Node: node, Hostname: hostname, Static: true}
}

// Lookup returns mac's current lease.
func (l *Leases) Lookup(mac net.HardwareAddr) (Lease, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	le, ok := l.byMAC[mac.String()]
	if !ok || (!le.Static && !le.Expiry.After(l.now())) {
		return Lease{}, false
	}
	return *le, true
}

// Offer returns the address mac should get: its lease, or a free pool
// address (the one it asked for when that one is free). It does not commit.
func (l *Leases) Offer(mac net.HardwareAddr, requested netip.Addr) (netip.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if le, ok := l.byMAC[mac.String()]; ok && (le.Static || le.Expiry.After(l.now())) {
		return le.Addr, nil
	}
	used := l.usedLocked()
	if requested.IsValid() && l.inPool(requested) && !used[requested] {
		return requested, nil
	}
	for a := l.first; a.IsValid() && !l.last.Less(a); a = a.Next() {
		if !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, ErrPoolExhausted
}

func (l *Leases) inPool(a netip.Addr) bool { return !a.Less(l.first) && !l.last.Less(a) }

func (l *Leases) usedLocked() map[netip.Addr]bool {
	used := map[netip.Addr]bool{}
	now := l.now()
	for _, le := range l.byMAC {
		if le.Static || le.Expiry.After(now) {
			used[le.Addr] = true
		}
	}
	for a, until := range l.declined {
		if until.After(now) {
			used[a] = true
		}
	}
	return used
}

// Commit binds addr to mac for d and saves the table. It fails if another
// client holds addr.
func (l *Leases) Commit(mac net.HardwareAddr, addr netip.Addr, d time.Duration) (Lease, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if le, ok := l.byMAC[mac.String()]; ok && le.Static {
		if le.Addr != addr {
			return Lease{}, fmt.Errorf("netboot: %s must use its static address %s, not %s", mac, le.Addr, addr)
		}
		return *le, nil
	}
	for m, le := range l.byMAC {
		if m != mac.String() && le.Addr == addr && (le.Static || le.Expiry.After(l.now())) {
			return Lease{}, fmt.Errorf("netboot: %s is leased to %s", addr, m)
		}
	}
	if !l.inPool(addr) {
		return Lease{}, fmt.Errorf("netboot: %s is outside the pool %s-%s", addr, l.first, l.last)
	}
	le := &Lease{MAC: mac.String(), Addr: addr, Expiry: l.now().Add(d)}
	old, had := l.byMAC[mac.String()]
	l.byMAC[mac.String()] = le
	// A renewal of the same binding is written only once the file's copy
	// would run out within half a lease: after a restart the client still
	// holds its address, and a busy server does not rewrite the file on
	// every renewal. New and changed bindings are written at once.
	if had && old.Addr == addr && l.saved[mac.String()].After(l.now().Add(d/2)) {
		return *le, nil
	}
	return *le, l.saveLocked()
}

// Release ends mac's dynamic lease.
func (l *Leases) Release(mac net.HardwareAddr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if le, ok := l.byMAC[mac.String()]; ok && !le.Static {
		delete(l.byMAC, mac.String())
		return l.saveLocked()
	}
	return nil
}

// ErrNotHolder refuses a DECLINE for an address the MAC does not hold.
var ErrNotHolder = errors.New("netboot: dhcp: DECLINE of an address this MAC does not hold")

// Decline marks addr unusable for a while (its holder found it in use),
// but only when mac holds addr's lease: anyone else's DECLINE would take
// addresses out of the pool at will.
func (l *Leases) Decline(mac net.HardwareAddr, addr netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	le, ok := l.byMAC[mac.String()]
	if !ok || le.Addr != addr {
		return fmt.Errorf("%w (%s, %s)", ErrNotHolder, mac, addr)
	}
	l.declined[addr] = l.now().Add(10 * time.Minute)
	if !le.Static {
		delete(l.byMAC, mac.String())
	}
	return l.saveLocked()
}

// All returns every live lease, by address.
func (l *Leases) All() []Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Lease
	for _, le := range l.byMAC {
		if le.Static || le.Expiry.After(l.now()) {
			out = append(out, *le)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out
}

func (l *Leases) saveLocked() error {
	if l.file == "" {
		return nil
	}
	var out []Lease
	for _, le := range l.byMAC {
		if !le.Static {
			out = append(out, *le)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MAC < out[j].MAC })
	b, _ := json.Marshal(out)
	// Atomic (a reader never sees a torn file) but not fsync'ed, like
	// dnsmasq's lease file: after a power cut the newest leases may be
	// gone, and their clients' renewals get a NAK and a fresh address.
	if err := atomicfile.Write(l.file, b, 0o600, false); err != nil {
		return err
	}
	clear(l.saved)
	for _, le := range out {
		l.saved[le.MAC] = le.Expiry
	}
	return nil
}
