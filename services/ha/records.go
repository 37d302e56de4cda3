package ha

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/locus-ssi/locus/services/clms"
)

// The records the master keeps in the membership's Raft log.
const (
	assignPrefix  = "ha/a/" // ha/a/<service>/<instance>: an Assignment
	failPrefix    = "ha/f/" // ha/f/<service>/<node>: Failures
	stoppedPrefix = "ha/s/" // ha/s/<service>: Stopped
)

// Assignment says which node runs one instance of a service.
type Assignment struct {
	// Node runs it (0: nobody, it waits for a node).
	Node int `json:"node"`
	// Gen increases each time the instance is given to a node.
	Gen uint64 `json:"gen"`
	// Releasing: Node is asked to stop it (a move, a stop, a ban); it
	// moves once Node says it has stopped, or is Down.
	Releasing bool `json:"releasing,omitempty"`
	// Prev is where it ran last; To, where an operator moves it.
	Prev  int       `json:"prev,omitempty"`
	To    int       `json:"to,omitempty"`
	Since time.Time `json:"since"`
	// Why it is where it is (placed, failover after node 3 Down, ...).
	Why string `json:"why,omitempty"`
}

// Failures is a service's failure count on one node.
type Failures struct {
	Count  int       `json:"count"`
	Last   time.Time `json:"last"`
	Banned bool      `json:"banned,omitempty"` // a hard failure, or the threshold reached
	Reason string    `json:"reason,omitempty"`
}

// Stopped is an operator's stop of a service (or the master's, after a
// fatal failure: the configuration is wrong everywhere).
type Stopped struct {
	At time.Time `json:"at"`
	By string    `json:"by"`
}

// view is the HA records, parsed.
type view struct {
	assign  map[string]map[string]rec[Assignment] // service -> instance
	fails   map[string]map[int]rec[Failures]      // service -> node
	stopped map[string]rec[Stopped]
}

type rec[T any] struct {
	v       T
	version uint64
}

func readView(rs []clms.Record) view {
	v := view{assign: map[string]map[string]rec[Assignment]{}, fails: map[string]map[int]rec[Failures]{}, stopped: map[string]rec[Stopped]{}}
	for _, r := range rs {
		switch {
		case strings.HasPrefix(r.Key, assignPrefix):
			svc, inst, ok := strings.Cut(strings.TrimPrefix(r.Key, assignPrefix), "/")
			var a Assignment
			if !ok || json.Unmarshal(r.Value, &a) != nil {
				continue
			}
			if v.assign[svc] == nil {
				v.assign[svc] = map[string]rec[Assignment]{}
			}
			v.assign[svc][inst] = rec[Assignment]{a, r.Version}
		case strings.HasPrefix(r.Key, failPrefix):
			svc, node, ok := strings.Cut(strings.TrimPrefix(r.Key, failPrefix), "/")
			n, err := strconv.Atoi(node)
			var f Failures
			if !ok || err != nil || json.Unmarshal(r.Value, &f) != nil {
				continue
			}
			if v.fails[svc] == nil {
				v.fails[svc] = map[int]rec[Failures]{}
			}
			v.fails[svc][n] = rec[Failures]{f, r.Version}
		case strings.HasPrefix(r.Key, stoppedPrefix):
			var s Stopped
			if json.Unmarshal(r.Value, &s) == nil {
				v.stopped[strings.TrimPrefix(r.Key, stoppedPrefix)] = rec[Stopped]{s, r.Version}
			}
		}
	}
	return v
}

func assignKey(svc, inst string) string { return assignPrefix + svc + "/" + inst }
func failKey(svc string, node int) string {
	return failPrefix + svc + "/" + strconv.Itoa(node)
}

func put(key string, v any, expect uint64) clms.RecordWrite {
	b, _ := json.Marshal(v)
	return clms.RecordWrite{Key: key, Value: b, Expect: expect}
}

func del(key string, expect uint64) clms.RecordWrite {
	return clms.RecordWrite{Key: key, Expect: expect}
}
