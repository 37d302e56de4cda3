package locusd

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/ics"
	"github.com/locus-ssi/locus/services/logring"
)

// methodLogs is the ICS method that answers a node's log lines after
// a sequence number.
const methodLogs = "logs"

type logsRequest struct {
	After uint64 `json:"after"`
	Since string `json:"since,omitempty"`
	Level string `json:"level,omitempty"`
	Grep  string `json:"grep,omitempty"`
	// Previous asks for the previous boot's lines, from the node's disk.
	Previous bool `json:"previous,omitempty"`
}

type logsReply struct {
	Lines []logring.Line `json:"lines"`
	Last  uint64         `json:"last"`
	Ring  string         `json:"ring"` // the ring's ID: a new one after a reboot
}

// logsCall answers methodLogs from the node's ring.
func logsCall(ring *logring.Ring) ics.Handler {
	return func(ctx context.Context, from int, b []byte) ([]byte, error) {
		var req logsRequest
		if err := json.Unmarshal(b, &req); err != nil {
			return nil, fmt.Errorf("locusd: logs from node %d: %w", from, err)
		}
		f, err := logring.ParseFilter(req.Since, req.Level, req.Grep, time.Now())
		if err != nil {
			return nil, err
		}
		if req.Previous {
			lines, err := ring.Previous(f)
			if err != nil {
				return nil, err
			}
			return json.Marshal(logsReply{Lines: lines})
		}
		lines, last := ring.After(req.After, f)
		return json.Marshal(logsReply{Lines: lines, Last: last, Ring: ring.ID()})
	}
}

// logsRoutes serve GET /v1/logs: every node's log lines (or ?node=N's),
// merged by time, one JSON object per line, filtered by ?since=DUR,
// ?level=L and ?grep=RE; with ?follow=true the new ones after, every
// second, until the client goes away. A node that stops answering gets
// a line saying so, and the stream goes on with the others. With
// ?boot=previous, the lines of each node's previous boot instead, from
// its disk (nodes with a state disk keep them; not with follow).
func logsRoutes(handle func(string, level, http.HandlerFunc), streams streamLimit, ring *logring.Ring, self int, member *atomic.Pointer[clms.Member], icsNode *atomic.Pointer[ics.Node]) {
	handle("GET /v1/logs", inspect, streams.wrap(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		req := logsRequest{Since: q.Get("since"), Level: q.Get("level"), Grep: q.Get("grep")}
		if _, err := logring.ParseFilter(req.Since, req.Level, req.Grep, time.Now()); err != nil {
			http.Error(w, "locusd: "+err.Error(), http.StatusBadRequest)
			return
		}
		only := 0
		if s := q.Get("node"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				http.Error(w, fmt.Sprintf("locusd: logs: node=%q: want a node number", s), http.StatusBadRequest)
				return
			}
			only = n
		}
		follow, _ := strconv.ParseBool(q.Get("follow"))
		switch b := q.Get("boot"); b {
		case "", "current":
		case "previous":
			if follow {
				http.Error(w, "locusd: logs: boot=previous is a finished log: not with follow", http.StatusBadRequest)
				return
			}
			req.Previous = true
		default:
			http.Error(w, fmt.Sprintf("locusd: logs: boot=%q: want current or previous", b), http.StatusBadRequest)
			return
		}
		nodes := func() []int {
			if only != 0 {
				return []int{only}
			}
			m := member.Load()
			if m == nil {
				return []int{self}
			}
			var out []int
			for _, n := range m.Status().Nodes {
				if n.State != clms.Down && n.State != clms.NeverUp {
					out = append(out, n.Node)
				}
			}
			if !slices.Contains(out, self) {
				out = append(out, self)
			}
			slices.Sort(out)
			return out
		}
		ask := func(ctx context.Context, n int, req logsRequest) (logsReply, error) {
			if n == self {
				f, _ := logring.ParseFilter(req.Since, req.Level, req.Grep, time.Now())
				if req.Previous {
					lines, err := ring.Previous(f)
					return logsReply{Lines: lines}, err
				}
				lines, last := ring.After(req.After, f)
				return logsReply{Lines: lines, Last: last, Ring: ring.ID()}, nil
			}
			in := icsNode.Load()
			if in == nil {
				return logsReply{}, errNoICS
			}
			b, _ := json.Marshal(req)
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			out, err := in.Call(cctx, n, methodLogs, b)
			if err != nil {
				return logsReply{}, err
			}
			var rep logsReply
			return rep, json.Unmarshal(out, &rep)
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		fl, _ := w.(http.Flusher)
		after := map[int]uint64{}
		rings := map[int]string{}
		lost := map[int]bool{}
		followed := map[int]bool{}
		for first := true; ; first = false {
			var mu sync.Mutex
			var batch []logring.Line
			var wg sync.WaitGroup
			now := nodes()
			for n := range followed {
				if !slices.Contains(now, n) {
					delete(followed, n)
					batch = append(batch, logring.Line{At: time.Now(), Node: n, Level: "WARN",
						Msg: fmt.Sprintf("locus logs: node %d is Down; going on with the others", n)})
				}
			}
			for _, n := range now {
				followed[n] = true
				wg.Add(1)
				go func() {
					defer wg.Done()
					rq := req
					mu.Lock()
					rq.After = after[n]
					mu.Unlock()
					rep, err := ask(r.Context(), n, rq)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						if !lost[n] && r.Context().Err() == nil {
							lost[n] = true
							batch = append(batch, logring.Line{At: time.Now(), Node: n, Level: "WARN",
								Msg: fmt.Sprintf("locus logs: node %d does not answer (%v); going on with the others", n, err)})
							if req.Previous {
								batch[len(batch)-1].Msg = fmt.Sprintf("locus logs: node %d: %v", n, err)
							}
						}
						return
					}
					if old, ok := rings[n]; ok && old != rep.Ring {
						// A new boot of the node: its lines are numbered
						// from 1 again.
						rq.After = 0
						if rep, err = ask(r.Context(), n, rq); err != nil {
							return
						}
					}
					lost[n] = false
					after[n], rings[n] = rep.Last, rep.Ring
					batch = append(batch, rep.Lines...)
				}()
			}
			wg.Wait()
			for _, l := range logring.Merge(batch) {
				if err := enc.Encode(l); err != nil {
					return
				}
			}
			if fl != nil {
				fl.Flush()
			}
			if !follow {
				return
			}
			if first {
				req.Since = "" // the next lines are new ones, whenever they came
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Second):
			}
		}
	}))
}
