package netboot

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"

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
	// scripts, by MAC (in memory only: a restarted service invalidates
	// them, and a node that booted with one must boot again).
	secrets map[string]secret
}

type secret struct {
	value string
	node  int
}

// IssueSecret makes a one-time bootstrap secret for mac, admitted as node
// n, replacing any earlier one: the node proves with it, once, that it
// booted the script this service gave it.
func (r *Registry) IssueSecret(mac net.HardwareAddr, n int) string {
	b := make([]byte, 16)
	rand.Read(b)
	v := hex.EncodeToString(b)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.secrets == nil {
		r.secrets = map[string]secret{}
	}
	r.secrets[mac.String()] = secret{value: v, node: n}
	return v
}

// ErrBadSecret refuses an admission.
var ErrBadSecret = errors.New("netboot: no such bootstrap secret for this MAC (wrong, already used, or issued before a restart)")

// RedeemSecret checks mac's bootstrap secret and consumes it, returning
// the node number it was issued for.
func (r *Registry) RedeemSecret(mac net.HardwareAddr, v string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.secrets[mac.String()]
	if !ok || subtle.ConstantTimeCompare([]byte(s.value), []byte(v)) != 1 {
		return 0, ErrBadSecret
	}
	delete(r.secrets, mac.String())
	return s.node, nil
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
	r := &Registry{spec: spec, file: file, now: now, contacts: map[string]*Contact{}, accepted: map[string]int{}}
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

// Admit implements Admitter.
func (r *Registry) Admit(mac net.HardwareAddr, kind ClientKind) (Admission, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.touchLocked(mac)
	c.Client = kind.String()
	switch {
	case kind == ClientBIOSPXE || kind == ClientEFIPXE || kind == ClientEFIHTTP || c.Stage == "":
		// Firmware asking: the machine is (re)starting its boot.
		c.Stage = StageDHCP
	}
	if row, ok := r.spec.NodeByMAC(mac); ok {
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
	if row, ok := r.spec.NodeByMAC(mac); ok {
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
