package netboot

import (
	"bufio"
	"bytes"
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

// leaseRecord is one line of the lease journal: a binding, or the end of
// one (Released).
type leaseRecord struct {
	Lease
	Released bool `json:"released,omitempty"`
}

// ErrPoolExhausted means no dynamic address is free.
var ErrPoolExhausted = errors.New("address pool exhausted")

// OfferHold is how long an offered address stays reserved for the client
// it was offered to: in a boot storm every DISCOVER gets an address of its
// own, not the one free address all of them would otherwise be offered.
const OfferHold = 10 * time.Second

// Leases is the lease table: static leases from the node table, dynamic
// ones from the pool. Dynamic bindings are kept in a journal file, one
// JSON line a change, appended and made durable by Sync; the server calls
// Sync once for every batch of packets, before any ACK of that batch
// leaves, so an ACKed binding survives a crash or a power cut, and a burst
// of clients pays one fdatasync, not one each (group commit). The journal
// is rewritten from the table when it has grown to twice the live leases.
type Leases struct {
	file        string
	first, last netip.Addr

	mu     sync.Mutex
	byMAC  map[string]*Lease
	byAddr map[netip.Addr]string // the MAC whose binding names the address
	// offered is the address reserved for each MAC's pending offer.
	offered     map[string]reservation
	offeredAddr map[netip.Addr]string
	declined    map[netip.Addr]time.Time
	// saved is each dynamic lease's expiry as the journal has it.
	saved map[string]time.Time
	// next is where the search for a free address resumes.
	next netip.Addr

	journal *os.File
	pending []byte // records not yet written and synced
	records int    // lines in the journal file
	now     func() time.Time
}

type reservation struct {
	addr  netip.Addr
	until time.Time
}

// OpenLeases loads the lease journal (missing is fine) for the pool
// first..last. Expired leases are dropped. A last line cut short by a
// crash was never synced (so never ACKed) and is dropped.
func OpenLeases(file string, first, last netip.Addr, now func() time.Time) (*Leases, error) {
	if now == nil {
		now = time.Now
	}
	l := &Leases{file: file, first: first, last: last, next: first,
		byMAC: map[string]*Lease{}, byAddr: map[netip.Addr]string{},
		offered: map[string]reservation{}, offeredAddr: map[netip.Addr]string{},
		declined: map[netip.Addr]time.Time{}, saved: map[string]time.Time{}, now: now}
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
	recs, err := parseLeaseJournal(b)
	if err != nil {
		return nil, fmt.Errorf("netboot: lease file %s is corrupt: %w (move it aside to start afresh)", file, err)
	}
	for _, r := range recs {
		if old, ok := l.byMAC[r.MAC]; ok {
			l.unbindLocked(old)
		}
		if r.Released || !r.Expiry.After(now()) {
			delete(l.saved, r.MAC)
			continue
		}
		le := r.Lease
		le.Static = false
		l.bindLocked(&le)
		l.saved[le.MAC] = le.Expiry
	}
	// Start from a clean journal of just the live leases.
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.compactLocked(); err != nil {
		return nil, err
	}
	return l, nil
}

// parseLeaseJournal reads the journal's records in order: JSON lines, or
// the JSON array earlier versions wrote. A last line without its newline
// was cut short by a crash and is left out.
func parseLeaseJournal(b []byte) ([]leaseRecord, error) {
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '[' {
		var old []Lease
		if err := json.Unmarshal(t, &old); err != nil {
			return nil, err
		}
		recs := make([]leaseRecord, 0, len(old))
		for _, le := range old {
			if le.MAC == "" || !le.Addr.Is4() {
				continue
			}
			recs = append(recs, leaseRecord{Lease: le})
		}
		return recs, nil
	}
	var recs []leaseRecord
	line := 0
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break // a torn last line
		}
		line++
		l := bytes.TrimSpace(b[:i])
		b = b[i+1:]
		if len(l) == 0 {
			continue
		}
		var r leaseRecord
		if err := json.Unmarshal(l, &r); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if _, err := net.ParseMAC(r.MAC); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if !r.Released && !r.Addr.Is4() {
			return nil, fmt.Errorf("line %d: lease of %s has no IPv4 address", line, r.MAC)
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// bindLocked makes le mac's binding and indexes its address.
func (l *Leases) bindLocked(le *Lease) {
	if old, ok := l.byMAC[le.MAC]; ok {
		l.unbindLocked(old)
	}
	l.byMAC[le.MAC] = le
	l.byAddr[le.Addr] = le.MAC
	if r, ok := l.offered[le.MAC]; ok {
		delete(l.offered, le.MAC)
		if l.offeredAddr[r.addr] == le.MAC {
			delete(l.offeredAddr, r.addr)
		}
	}
}

func (l *Leases) unbindLocked(le *Lease) {
	delete(l.byMAC, le.MAC)
	if l.byAddr[le.Addr] == le.MAC {
		delete(l.byAddr, le.Addr)
	}
}

func (l *Leases) live(le *Lease) bool { return le.Static || le.Expiry.After(l.now()) }

// SetStatic pins mac to addr (a node table row).
func (l *Leases) SetStatic(mac net.HardwareAddr, addr netip.Addr, node int, hostname string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if le, ok := l.byMAC[mac.String()]; ok && le.Static && le.Addr == addr && le.Node == node && le.Hostname == hostname {
		return
	}
	l.bindLocked(&Lease{MAC: mac.String(), Addr: addr, Node: node, Hostname: hostname, Static: true})
}

// Lookup returns mac's current lease.
func (l *Leases) Lookup(mac net.HardwareAddr) (Lease, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	le, ok := l.byMAC[mac.String()]
	if !ok || !l.live(le) {
		return Lease{}, false
	}
	return *le, true
}

// ByAddr returns the live lease of address a.
func (l *Leases) ByAddr(a netip.Addr) (Lease, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	le, ok := l.byMAC[l.byAddr[a]]
	if !ok || !l.live(le) {
		return Lease{}, false
	}
	return *le, true
}

// freeFor says whether a may go to mac: nobody else holds it, it is not
// reserved for another client's offer, and it was not declined lately.
func (l *Leases) freeFor(a netip.Addr, mac string) bool {
	now := l.now()
	if m, ok := l.byAddr[a]; ok && m != mac {
		if le := l.byMAC[m]; le != nil && l.live(le) {
			return false
		}
	}
	if m, ok := l.offeredAddr[a]; ok && m != mac && l.offered[m].until.After(now) {
		return false
	}
	if until, ok := l.declined[a]; ok {
		if until.After(now) {
			return false
		}
		delete(l.declined, a)
	}
	return true
}

// Offer returns the address mac should get: its lease, the address its
// last offer reserved, the one it asked for when that one is free, or the
// next free pool address; it reserves that address for mac for OfferHold.
// It does not commit.
func (l *Leases) Offer(mac net.HardwareAddr, requested netip.Addr) (netip.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := mac.String()
	if le, ok := l.byMAC[m]; ok && l.live(le) {
		return le.Addr, nil
	}
	now := l.now()
	if r, ok := l.offered[m]; ok && r.until.After(now) && l.freeFor(r.addr, m) {
		l.reserveLocked(m, r.addr)
		return r.addr, nil
	}
	if requested.IsValid() && l.inPool(requested) && l.freeFor(requested, m) {
		l.reserveLocked(m, requested)
		return requested, nil
	}
	// Resume where the last search stopped: a storm of new clients costs
	// a step each, not a walk over every lease.
	a := l.next
	for range l.poolSize() {
		if !a.IsValid() || !l.inPool(a) {
			a = l.first
		}
		if l.freeFor(a, m) {
			l.next = a.Next()
			l.reserveLocked(m, a)
			return a, nil
		}
		a = a.Next()
	}
	return netip.Addr{}, ErrPoolExhausted
}

func (l *Leases) reserveLocked(mac string, a netip.Addr) {
	if old, ok := l.offered[mac]; ok && old.addr != a && l.offeredAddr[old.addr] == mac {
		delete(l.offeredAddr, old.addr)
	}
	l.offered[mac] = reservation{addr: a, until: l.now().Add(OfferHold)}
	l.offeredAddr[a] = mac
}

// poolSize is the number of addresses in first..last (IPv4).
func (l *Leases) poolSize() int {
	if !l.first.Is4() || !l.last.Is4() || l.last.Less(l.first) {
		return 0
	}
	f, t := l.first.As4(), l.last.As4()
	u := func(b [4]byte) int { return int(b[0])<<24 | int(b[1])<<16 | int(b[2])<<8 | int(b[3]) }
	return u(t) - u(f) + 1
}

func (l *Leases) inPool(a netip.Addr) bool { return !a.Less(l.first) && !l.last.Less(a) }

// Commit binds addr to mac for d and journals the change; it is durable
// once Sync returns. It fails if another client holds addr or has it
// reserved by an offer.
func (l *Leases) Commit(mac net.HardwareAddr, addr netip.Addr, d time.Duration) (Lease, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := mac.String()
	if le, ok := l.byMAC[m]; ok && le.Static {
		if le.Addr != addr {
			return Lease{}, fmt.Errorf("netboot: %s must use its static address %s, not %s", mac, le.Addr, addr)
		}
		return *le, nil
	}
	if !l.freeFor(addr, m) {
		if h, ok := l.byAddr[addr]; ok && h != m {
			return Lease{}, fmt.Errorf("netboot: %s is leased to %s", addr, h)
		}
		return Lease{}, fmt.Errorf("netboot: %s is taken (offered to another client, or declined)", addr)
	}
	if !l.inPool(addr) {
		return Lease{}, fmt.Errorf("netboot: %s is outside the pool %s-%s", addr, l.first, l.last)
	}
	le := &Lease{MAC: m, Addr: addr, Expiry: l.now().Add(d)}
	old, had := l.byMAC[m]
	same := had && old.Addr == addr
	l.bindLocked(le)
	// A renewal of the same binding is journalled only once the journal's
	// copy would run out within half a lease: after a restart the client
	// still holds its address, and a busy server does not write on every
	// renewal. New and changed bindings are journalled at once.
	if same && l.saved[m].After(l.now().Add(d/2)) {
		return *le, nil
	}
	l.appendLocked(leaseRecord{Lease: *le})
	return *le, nil
}

// Release ends mac's dynamic lease.
func (l *Leases) Release(mac net.HardwareAddr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if le, ok := l.byMAC[mac.String()]; ok && !le.Static {
		l.unbindLocked(le)
		l.appendLocked(leaseRecord{Lease: Lease{MAC: le.MAC}, Released: true})
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
		l.unbindLocked(le)
		l.appendLocked(leaseRecord{Lease: Lease{MAC: le.MAC}, Released: true})
	}
	return nil
}

// All returns every live lease, by address.
func (l *Leases) All() []Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Lease
	for _, le := range l.byMAC {
		if l.live(le) {
			out = append(out, *le)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out
}

func (l *Leases) appendLocked(r leaseRecord) {
	if l.file == "" {
		return
	}
	b, _ := json.Marshal(r)
	l.pending = append(append(l.pending, b...), '\n')
	if r.Released {
		delete(l.saved, r.MAC)
	} else {
		l.saved[r.MAC] = r.Expiry
	}
}

// Sync makes every change since the last Sync durable: appended to the
// journal and fdatasync'ed (one for all of them). On an error the changes
// stay pending and the next Sync writes them again; the caller must not
// send the ACKs that depend on them.
func (l *Leases) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) == 0 {
		return nil
	}
	if l.records > 2*len(l.byMAC)+1024 {
		return l.compactLocked()
	}
	if l.journal == nil {
		f, err := os.OpenFile(l.file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("netboot: lease journal: %w", err)
		}
		l.journal = f
	}
	if _, err := l.journal.Write(l.pending); err != nil {
		// A part may be written: start over from a rewritten journal.
		l.journal.Close()
		l.journal = nil
		l.records = 1 << 30
		return fmt.Errorf("netboot: lease journal %s: %w", l.file, err)
	}
	if err := l.journal.Sync(); err != nil {
		l.journal.Close()
		l.journal = nil
		l.records = 1 << 30
		return fmt.Errorf("netboot: lease journal %s: sync: %w", l.file, err)
	}
	l.records += bytes.Count(l.pending, []byte{'\n'})
	l.pending = l.pending[:0]
	return nil
}

// compactLocked rewrites the journal as the live dynamic leases, durably
// and atomically, and clears what was pending (the table has it).
func (l *Leases) compactLocked() error {
	if l.file == "" {
		return nil
	}
	var out []Lease
	for _, le := range l.byMAC {
		if !le.Static && l.live(le) {
			out = append(out, *le)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MAC < out[j].MAC })
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	for _, le := range out {
		j, _ := json.Marshal(leaseRecord{Lease: le})
		w.Write(j)
		w.WriteByte('\n')
	}
	w.Flush()
	if l.journal != nil {
		l.journal.Close()
		l.journal = nil
	}
	if err := atomicfile.Write(l.file, b.Bytes(), 0o600, true); err != nil {
		return fmt.Errorf("netboot: lease journal: %w", err)
	}
	clear(l.saved)
	for _, le := range out {
		l.saved[le.MAC] = le.Expiry
	}
	l.records = len(out)
	l.pending = l.pending[:0]
	return nil
}

// Close syncs what is pending and closes the journal.
func (l *Leases) Close() error {
	err := l.Sync()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.journal != nil {
		if cerr := l.journal.Close(); err == nil {
			err = cerr
		}
		l.journal = nil
	}
	return err
}
