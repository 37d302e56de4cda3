package lvs

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/services/clms"
)

// fakeKernel records what the service does.
type fakeKernel struct {
	mu    sync.Mutex
	addrs map[string]bool // dev -> has the address
	role  int
	garps int
	table []VirtualService
	calls []string
}

func (k *fakeKernel) Prepare(string) error { return nil }
func (k *fakeKernel) SetAddr(dev string, _ netip.Addr, on bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.addrs[dev] = on
	k.calls = append(k.calls, fmt.Sprintf("addr %s %v", dev, on))
	return nil
}
func (k *fakeKernel) ApplyTable(_ netip.Addr, vs []VirtualService) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.table = vs
	return nil
}
func (k *fakeKernel) SetSync(role int, _ string, _ int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if role != k.role {
		k.calls = append(k.calls, "sync "+roleName(role))
	}
	k.role = role
	return nil
}
func (k *fakeKernel) GARP(string, netip.Addr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.garps++
	return nil
}
func (k *fakeKernel) Listening(netip.Addr, []string) (map[string]bool, error) { return nil, nil }

// fakeMember is one node's view of the membership and its records.
type fakeMember struct {
	mu   sync.Mutex
	st   clms.Status
	recs []clms.Record
}

func (m *fakeMember) Status() clms.Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st
}
func (m *fakeMember) Records(string) []clms.Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.recs)
}
func (m *fakeMember) WriteRecords(ws ...clms.RecordWrite) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range ws {
		m.recs = []clms.Record{{Key: w.Key, Value: w.Value, Version: uint64(len(m.recs) + 1)}}
	}
	return nil
}
func (m *fakeMember) WatchRecords(chan<- struct{}) func() { return func() {} }

// TestDirectorTakesAndGivesUp: node 3, told it directs, becomes the sync
// master, puts the address on its interface and announces it; when the
// master moves the address away it takes it off before anything else
// and goes back to backup.
func TestDirectorTakesAndGivesUp(t *testing.T) {
	k := &fakeKernel{addrs: map[string]bool{}}
	m := &fakeMember{st: clms.Status{Self: 3, Master: 1, Quorum: true, Nodes: []clms.NodeStatus{
		{NodeRecord: clms.NodeRecord{Node: 1, State: clms.Up, Addr: "10.0.0.1:7473"}},
		{NodeRecord: clms.NodeRecord{Node: 2, State: clms.Up, Addr: "10.0.0.2:7473"}},
		{NodeRecord: clms.NodeRecord{Node: 3, State: clms.Up, Addr: "10.0.0.3:7473"}}}}}
	m.WriteRecords(put(Director{Node: 3, Gen: 1}, 0))
	s, err := New(Config{Node: 3, Spec: clusterspec.ClusterIP{Address: "10.0.0.100", Ports: []clusterspec.ClusterPort{{Port: 80, Service: "web"}}},
		Servers: []int{2, 3}, Kernel: k, Member: func() Membership { return m },
		Running: func(svc string) bool { return svc == "web" },
		Call: func(ctx context.Context, node int, method string, req []byte) ([]byte, error) {
			if method == methodReal && node == 2 {
				return []byte(`{"tcp/80":true}`), nil
			}
			return nil, fmt.Errorf("node %d unreachable", node)
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	wait := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				k.mu.Lock()
				t.Fatalf("%s: kernel calls %v", what, k.calls)
			}
		}
	}
	wait("takes the address", func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		return k.addrs["eth0"] && k.addrs["lo"] && k.role == SyncMaster && k.garps > 0 && len(k.table) == 1 && len(k.table[0].Servers) == 2
	})
	k.mu.Lock()
	if got := fmt.Sprint(k.table[0].Servers); got != "[10.0.0.2 10.0.0.3]" || k.table[0].Scheduler != "mh" {
		t.Errorf("table %+v", k.table)
	}
	k.mu.Unlock()
	m.mu.Lock()
	m.recs = nil
	m.mu.Unlock()
	m.WriteRecords(put(Director{Node: 2, Gen: 2, Prev: 3}, 1))
	s.poke()
	wait("gives it up", func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		return !k.addrs["eth0"] && k.role == SyncBackup
	})
	k.mu.Lock()
	i := slices.Index(k.calls, "addr eth0 false")
	if i < 0 || slices.Index(k.calls[i:], "sync backup") < 0 {
		t.Errorf("gave up in the order %v", k.calls)
	}
	k.mu.Unlock()
	cancel()
	<-done
	if k.addrs["lo"] {
		t.Error("the address stayed on lo after the daemon stopped")
	}
}

// TestMoveFromTheMaster: the master directs; moved to node 2, it gives
// the address up, records its own release and hands the record to
// node 2.
func TestMoveFromTheMaster(t *testing.T) {
	k := &fakeKernel{addrs: map[string]bool{}}
	m := &fakeMember{st: clms.Status{Self: 3, Master: 3, Quorum: true, Nodes: []clms.NodeStatus{
		{NodeRecord: clms.NodeRecord{Node: 2, State: clms.Up, Addr: "10.0.0.2:7473"}},
		{NodeRecord: clms.NodeRecord{Node: 3, State: clms.Up, Addr: "10.0.0.3:7473"}}}}}
	s, err := New(Config{Node: 3, Spec: clusterspec.ClusterIP{Address: "10.0.0.100", Directors: []int{3, 2}, Ports: []clusterspec.ClusterPort{{Port: 80}}},
		Kernel: k, Member: func() Membership { return m },
		Call: func(context.Context, int, string, []byte) ([]byte, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	director := func() Director { d, _, _ := readDirector(m.Records(directorKey)); return d }
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: director %+v", what, director())
			}
		}
	}
	waitFor("node 3 directs", func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		return director().Node == 3 && k.addrs["eth0"]
	})
	if err := s.Move(ctx, 1, "root"); err == nil {
		t.Error("moved to node 1, not a director")
	}
	if err := s.Move(ctx, 2, "root"); err != nil {
		t.Fatal(err)
	}
	waitFor("node 2 directs", func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		d := director()
		return d.Node == 2 && !d.Releasing && !k.addrs["eth0"] && k.role == SyncBackup
	})
	if d := director(); d.Prev != 3 || d.Why != "moved to node 2 by root" {
		t.Errorf("the record after the move: %+v", d)
	}
}
