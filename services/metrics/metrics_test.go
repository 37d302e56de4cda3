package metrics

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/dlm"
	"github.com/locus-ssi/locus/services/events"
	"github.com/locus-ssi/locus/services/ha"
	"github.com/locus-ssi/locus/services/lvs"
	"github.com/locus-ssi/locus/services/proc"
)

func sources(feed *events.Feed) Sources {
	return Sources{Node: 2, Feed: feed,
		Status: func() clms.Status {
			return clms.Status{Self: 2, Master: 1, Quorum: true, Term: 4, LastTransition: 9, RunLevel: 3, Nodes: []clms.NodeStatus{
				{NodeRecord: clms.NodeRecord{Node: 1, State: clms.Up}}, {NodeRecord: clms.NodeRecord{Node: 2, State: clms.Up}},
				{NodeRecord: clms.NodeRecord{Node: 3, State: clms.Down}}}}
		},
		Loads: func() []proc.Load {
			return []proc.Load{{Node: 1, Mean: 0.5, Upper: 1.5, RunQ: 2, Procs: 80, MemFree: 1024, MemTotal: 4096}}
		},
		Instances: func() []ha.InstanceStatus {
			return []ha.InstanceStatus{{Service: "web", Instance: "n2", State: "running", Restarts: 3}}
		},
		Lockspaces: func() dlm.NodeState {
			return dlm.NodeState{Spaces: []dlm.SpaceState{{Name: "root", Started: true, Members: []dlm.Member{{Node: 1}, {Node: 2}}}, {Name: "locus"}}}
		},
		ClusterIP: func() (bool, []lvs.VirtualService) {
			return true, []lvs.VirtualService{{Port: 8080, Protocol: "TCP", Servers: []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")}}}
		}}
}

// TestStateFamilies: each subsystem's state is read at the scrape, one
// series per node, instance, lockspace and port, labelled by the node
// that serves them.
func TestStateFamilies(t *testing.T) {
	m := New(sources(nil))
	want := `
# HELP locus_node_state 1 for each node's membership state, as this node sees it.
# TYPE locus_node_state gauge
locus_node_state{member="1",node="2",state="Up"} 1
locus_node_state{member="2",node="2",state="Up"} 1
locus_node_state{member="3",node="2",state="Down"} 1
# HELP locus_master The membership master's node number, as this node sees it (0: none).
# TYPE locus_master gauge
locus_master{node="2"} 1
# HELP locus_ha_instance_restarts Local restarts of each HA instance on this node since it was placed here.
# TYPE locus_ha_instance_restarts gauge
locus_ha_instance_restarts{instance="n2",node="2",service="web"} 3
# HELP locus_dlm_lockspace_members Each kernel DLM lockspace this node is in: its member count (0 while stopped).
# TYPE locus_dlm_lockspace_members gauge
locus_dlm_lockspace_members{lockspace="locus",node="2"} 0
locus_dlm_lockspace_members{lockspace="root",node="2"} 2
# HELP locus_clusterip_real_servers On the director: each port's real servers in IPVS.
# TYPE locus_clusterip_real_servers gauge
locus_clusterip_real_servers{node="2",port="tcp/8080"} 2
# HELP locus_node_memory_free_bytes Each Up node's free memory.
# TYPE locus_node_memory_free_bytes gauge
locus_node_memory_free_bytes{member="1",node="2"} 1.048576e+06
`
	err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "locus_node_state", "locus_master",
		"locus_ha_instance_restarts", "locus_dlm_lockspace_members", "locus_clusterip_real_servers", "locus_node_memory_free_bytes")
	if err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(m.Registry()); err != nil || n < 30 {
		t.Errorf("%d series gathered (%v); want the Go and process collectors' too", n, err)
	}
	// A node without the subsystems has none of their series.
	bare := New(Sources{Node: 4})
	if n, _ := testutil.GatherAndCount(bare.Registry(), "locus_node_state", "locus_ha_instance", "locus_clusterip_director"); n != 0 {
		t.Errorf("a bare daemon has %d subsystem series", n)
	}
}

// TestEventCounters: Run counts the feed's events, those kept before it
// started and those after.
func TestEventCounters(t *testing.T) {
	feed := events.NewFeed(0)
	feed.Publish(events.Event{Source: events.SourceInit, Kind: events.PhaseDone, Name: "join", Millis: 1500})
	feed.Publish(events.Event{Source: events.SourceLocusd, Kind: events.TransitionApplied, Subject: 3, State: "Down"})
	m := New(sources(feed))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	feed.Publish(events.Event{Source: events.SourceLocusd, Kind: events.Fenced, Subject: 3})
	feed.Publish(events.Event{Source: events.SourceLocusd, Kind: events.Fenced, Subject: 4, Error: "agent timed out"})
	feed.Publish(events.Event{Source: events.SourceLocusd, Kind: events.RoleTaken, Name: events.RoleMaster})
	feed.Publish(events.Event{Source: events.SourceLocusd, Kind: events.ServiceStarted, Name: "web"})
	feed.Publish(events.Event{Source: events.SourceLocusd, Kind: events.LockspaceStarted, Name: "root"})
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(m.lsStarts.WithLabelValues("root")) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the feed's last event was never counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range []struct {
		what string
		got  float64
		want float64
	}{
		{"transitions to Down", testutil.ToFloat64(m.transitions.WithLabelValues("Down")), 1},
		{"fences ok", testutil.ToFloat64(m.fences.WithLabelValues("ok")), 1},
		{"fences failed", testutil.ToFloat64(m.fences.WithLabelValues("error")), 1},
		{"master taken", testutil.ToFloat64(m.masterTaken), 1},
		{"web started", testutil.ToFloat64(m.serviceStart.WithLabelValues("web")), 1},
		{"events of kind node.fenced", testutil.ToFloat64(m.events.WithLabelValues(string(events.Fenced))), 2},
		{"the join phase's seconds", testutil.ToFloat64(m.phaseMillis.WithLabelValues("join")), 1.5},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
}

// TestObserveDown: the master's failure-to-Down times go into the
// histogram by whether the node was fenced.
func TestObserveDown(t *testing.T) {
	m := New(sources(events.NewFeed(0)))
	m.ObserveDown(3, 2*time.Second, true)
	m.ObserveDown(4, 30*time.Millisecond, false)
	m.ObserveDown(5, 40*time.Millisecond, false)
	want := `
# HELP locus_membership_down_seconds On the master: for each failed node it took Down, the time from gossip's loss of the node (the failure detector's verdict) to the Down committed, its fence included when fenced=true.
# TYPE locus_membership_down_seconds histogram
locus_membership_down_seconds_bucket{fenced="false",node="2",le="0.01"} 0
locus_membership_down_seconds_bucket{fenced="false",node="2",le="0.025"} 0
locus_membership_down_seconds_bucket{fenced="false",node="2",le="0.05"} 2
locus_membership_down_seconds_bucket{fenced="false",node="2",le="0.1"} 2
locus_membership_down_seconds_bucket{fenced="false",node="2",le="0.25"} 2
locus_membership_down_seconds_bucket{fenced="false",node="2",le="0.5"} 2
locus_membership_down_seconds_bucket{fenced="false",node="2",le="1"} 2
locus_membership_down_seconds_bucket{fenced="false",node="2",le="2.5"} 2
locus_membership_down_seconds_bucket{fenced="false",node="2",le="5"} 2
locus_membership_down_seconds_bucket{fenced="false",node="2",le="10"} 2
locus_membership_down_seconds_bucket{fenced="false",node="2",le="30"} 2
locus_membership_down_seconds_bucket{fenced="false",node="2",le="60"} 2
locus_membership_down_seconds_bucket{fenced="false",node="2",le="+Inf"} 2
locus_membership_down_seconds_sum{fenced="false",node="2"} 0.07
locus_membership_down_seconds_count{fenced="false",node="2"} 2
locus_membership_down_seconds_bucket{fenced="true",node="2",le="0.01"} 0
locus_membership_down_seconds_bucket{fenced="true",node="2",le="0.025"} 0
locus_membership_down_seconds_bucket{fenced="true",node="2",le="0.05"} 0
locus_membership_down_seconds_bucket{fenced="true",node="2",le="0.1"} 0
locus_membership_down_seconds_bucket{fenced="true",node="2",le="0.25"} 0
locus_membership_down_seconds_bucket{fenced="true",node="2",le="0.5"} 0
locus_membership_down_seconds_bucket{fenced="true",node="2",le="1"} 0
locus_membership_down_seconds_bucket{fenced="true",node="2",le="2.5"} 1
locus_membership_down_seconds_bucket{fenced="true",node="2",le="5"} 1
locus_membership_down_seconds_bucket{fenced="true",node="2",le="10"} 1
locus_membership_down_seconds_bucket{fenced="true",node="2",le="30"} 1
locus_membership_down_seconds_bucket{fenced="true",node="2",le="60"} 1
locus_membership_down_seconds_bucket{fenced="true",node="2",le="+Inf"} 1
locus_membership_down_seconds_sum{fenced="true",node="2"} 2
locus_membership_down_seconds_count{fenced="true",node="2"} 1
`
	if err := testutil.CollectAndCompare(m.downLatency, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
