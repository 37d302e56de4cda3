package netboot

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testPool(t testing.TB, file string, first, last string) *Leases {
	t.Helper()
	l, err := OpenLeases(file, netip.MustParseAddr(first), netip.MustParseAddr(last), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func mac(i int) net.HardwareAddr {
	return net.HardwareAddr{2, 0xaa, 0, byte(i >> 16), byte(i >> 8), byte(i)}
}

// A storm of new clients, each DISCOVERing before any REQUESTs: every
// client is offered an address of its own, and every REQUEST is ACKed.
func TestOffersToAStormAreDistinct(t *testing.T) {
	l := testPool(t, "", "10.77.1.0", "10.77.1.255")
	seen := map[netip.Addr]int{}
	for i := range 200 {
		a, err := l.Offer(mac(i), netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		if j, dup := seen[a]; dup {
			t.Fatalf("client %d offered %s, already offered to client %d", i, a, j)
		}
		seen[a] = i
	}
	for i := range 200 {
		a, _ := l.Offer(mac(i), netip.Addr{})
		if _, err := l.Commit(mac(i), a, time.Hour); err != nil {
			t.Fatalf("commit of client %d's offer %s: %v", i, a, err)
		}
	}
	// The reservation holds against another client asking for it.
	a, _ := l.Offer(mac(1000), netip.Addr{})
	if _, err := l.Commit(mac(1001), a, time.Hour); err == nil {
		t.Errorf("client 1001 took %s, reserved for client 1000's offer", a)
	}
}

func TestOfferHoldRunsOut(t *testing.T) {
	now := time.Unix(1e9, 0)
	l, err := OpenLeases("", netip.MustParseAddr("10.77.1.1"), netip.MustParseAddr("10.77.1.1"), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	a, err := l.Offer(mac(1), netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Offer(mac(2), netip.Addr{}); err != ErrPoolExhausted {
		t.Fatalf("second client while the only address is offered: %v, want exhausted", err)
	}
	now = now.Add(OfferHold + time.Second)
	if b, err := l.Offer(mac(2), netip.Addr{}); err != nil || b != a {
		t.Fatalf("after the hold: %s %v, want %s", b, err, a)
	}
}

// What Sync returned for is on disk; what was never synced is not, and a
// last line cut short is dropped on open, not taken for corruption.
func TestJournalDurableAndTornTail(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases.json")
	l := testPool(t, file, "10.77.1.0", "10.77.1.255")
	for i := range 10 {
		a, _ := l.Offer(mac(i), netip.Addr{})
		if _, err := l.Commit(mac(i), a, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(mac(3)); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	a, _ := l.Offer(mac(50), netip.Addr{})
	l.Commit(mac(50), a, time.Hour) // not synced
	// A crash mid-append: half a line at the end.
	f, _ := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"mac":"02:aa:00:00:00:63","addr":"10.77`)
	f.Close()

	r := testPool(t, file, "10.77.1.0", "10.77.1.255")
	if got := len(r.All()); got != 9 {
		t.Errorf("after reopen: %d leases, want 9 (10 synced, one released)", got)
	}
	if _, ok := r.Lookup(mac(3)); ok {
		t.Error("released lease back after reopen")
	}
	if _, ok := r.Lookup(mac(50)); ok {
		t.Error("a lease never synced is on disk")
	}
	// The reopen rewrote the journal: the torn line is gone, appends go on.
	b, _ := os.ReadFile(file)
	if strings.Count(string(b), "\n") != 9 || !strings.HasSuffix(string(b), "\n") {
		t.Errorf("journal after reopen:\n%s", b)
	}
}

func TestJournalCompacts(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases.json")
	l := testPool(t, file, "10.77.0.0", "10.77.255.255")
	for i := range 3000 {
		a, _ := l.Offer(mac(i%5), netip.Addr{})
		if _, err := l.Commit(mac(i%5), a, time.Hour); err != nil {
			t.Fatal(err)
		}
		l.Release(mac(i % 5))
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(file)
	if n := strings.Count(string(b), "\n"); n > 2*5+1024+2 {
		t.Errorf("journal has %d lines for 0 live leases", n)
	}
}

func TestLegacyLeaseFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases.json")
	exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)
	os.WriteFile(file, []byte(fmt.Sprintf(`[{"mac":"02:aa:00:00:00:01","addr":"10.77.1.5","expiry":%q}]`, exp)), 0o600)
	l := testPool(t, file, "10.77.1.0", "10.77.1.255")
	if le, ok := l.Lookup(mac(1)); !ok || le.Addr.String() != "10.77.1.5" {
		t.Errorf("legacy lease = %+v %v", le, ok)
	}
}

func TestCorruptJournalNamesTheLine(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases.json")
	os.WriteFile(file, []byte("{\"mac\":\"02:aa:00:00:00:01\",\"addr\":\"10.77.1.5\",\"expiry\":\"2099-01-01T00:00:00Z\"}\nnot json\n"), 0o600)
	_, err := OpenLeases(file, netip.MustParseAddr("10.77.1.0"), netip.MustParseAddr("10.77.1.255"), nil)
	if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), file) {
		t.Fatalf("corrupt journal: %v, want an error naming the file and line 2", err)
	}
}

// FuzzLeaseJournal: any file content either loads or gives an error; it
// never panics, and what loads is a table of valid leases.
func FuzzLeaseJournal(f *testing.F) {
	f.Add([]byte("{\"mac\":\"02:aa:00:00:00:01\",\"addr\":\"10.77.1.5\",\"expiry\":\"2099-01-01T00:00:00Z\"}\n"))
	f.Add([]byte("{\"mac\":\"02:aa:00:00:00:01\",\"released\":true}\n{\"mac\":\"02:aa"))
	f.Add([]byte(`[{"mac":"02:aa:00:00:00:01","addr":"10.77.1.5","expiry":"2099-01-01T00:00:00Z"}]`))
	f.Add([]byte("\n\n[\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := parseLeaseJournal(b)
		if err != nil {
			return
		}
		for _, r := range recs {
			if !r.Released && !r.Addr.Is4() {
				t.Fatalf("record without an IPv4 address: %+v", r)
			}
		}
	})
}
