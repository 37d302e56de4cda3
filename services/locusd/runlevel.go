package locusd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/ics"
	"golang.org/x/sys/unix"
)

// Request is what a node's daemon asks of its init, written to the
// request file init watches: a shutdown or reboot of this node.
type Request struct {
	Action string    `json:"action"` // "poweroff" or "reboot"
	At     time.Time `json:"at"`
	From   int       `json:"from,omitempty"` // the node that asked
}

// Request actions.
const (
	ActionPowerOff = "poweroff"
	ActionReboot   = "reboot"
)

// RequestFile is where the daemon leaves init its requests, beside the
// node file.
func RequestFile(nodeFile string) string {
	return filepath.Join(filepath.Dir(nodeFile), "request.json")
}

// writeRequest hands init a request, atomically.
func writeRequest(nodeFile string, r Request) error {
	b, _ := json.Marshal(r)
	p := RequestFile(nodeFile)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("locusd: request to init: %w", err)
	}
	return os.Rename(tmp, p)
}

// followNode tells the membership what init records in the node file: the
// run level it reached (a node is Up only once that is the cluster's), and
// that it is shutting down; and it keeps in root where the node's
// processes run (for the jobs of the process service). It reads the file when init replaces it
// (inotify on its directory) and every few seconds besides, in case a
// change was missed (or the directory cannot be watched).
func followNode(ctx context.Context, nodeFile, procDir string, m *clms.Member, root *atomic.Pointer[string], log *slog.Logger) {
	changed := watchFile(ctx, nodeFile, log)
	every := 5 * time.Second
	if changed == nil {
		every = 300 * time.Millisecond
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if info, err := ReadNodeInfo(nodeFile, procDir); err == nil {
			root.Store(&info.Root)
			m.SetReached(info.RunLevel)
			if info.State == "ShuttingDown" {
				m.Leave()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

// watchFile returns a channel that receives when path is written or
// replaced (renamed onto), until ctx ends; nil if it cannot be watched.
func watchFile(ctx context.Context, path string, log *slog.Logger) <-chan struct{} {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		log.Warn("node file: no inotify; polling it", "err", err)
		return nil
	}
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(path), unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO|unix.IN_CREATE); err != nil {
		unix.Close(fd)
		log.Warn("node file: cannot watch its directory; polling it", "dir", filepath.Dir(path), "err", err)
		return nil
	}
	f := os.NewFile(uintptr(fd), "inotify") // non-blocking: Go's poller waits, Close ends a Read
	context.AfterFunc(ctx, func() { f.Close() })
	ch := make(chan struct{}, 1)
	name := filepath.Base(path)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return // closed: ctx ended
			}
			for b := buf[:n]; len(b) >= unix.SizeofInotifyEvent; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&b[0]))
				end := unix.SizeofInotifyEvent + int(ev.Len)
				if end > len(b) {
					break
				}
				if strings.TrimRight(string(b[unix.SizeofInotifyEvent:end]), "\x00") == name {
					select {
					case ch <- struct{}{}:
					default:
					}
				}
				b = b[end:]
			}
		}
	}()
	return ch
}

// RunLevelRequest is the body of POST /v1/runlevel.
type RunLevelRequest struct {
	Level int `json:"level"`
}

// ShutdownRequest is the body of POST /v1/shutdown.
type ShutdownRequest struct {
	// Node is the node to shut down; 0 is the whole cluster.
	Node   int  `json:"node"`
	Reboot bool `json:"reboot"`
}

// ShutdownReply says which nodes were asked.
type ShutdownReply struct {
	Asked  []int             `json:"asked"`
	Failed map[string]string `json:"failed,omitempty"`
}

// runLevelHandler sets the cluster's run level: on the master directly,
// elsewhere by asking the master over ICS.
func runLevelHandler(m *clms.Member, icsNode func() *ics.Node, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req RunLevelRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
			http.Error(w, "locusd: run level: bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		err := m.SetRunLevel(req.Level)
		if errors.Is(err, clms.ErrNotMaster) {
			st := m.Status()
			in := icsNode()
			switch {
			case st.Master == 0:
				err = fmt.Errorf("locusd: no master to ask (this node has no quorum)")
			case in == nil:
				err = fmt.Errorf("locusd: not the master, and no interconnect call service to ask node %d", st.Master)
			default:
				b, _ := json.Marshal(req)
				ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
				_, err = in.Call(ctx, st.Master, "runlevel", b)
				cancel()
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		log.Info("cluster run level set", "level", req.Level)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(RunLevelRequest{Level: req.Level})
	}
}

// runLevelCall is the ICS handler of "runlevel": a node asks the master
// to set the cluster's run level.
func runLevelCall(m *clms.Member) func(ctx context.Context, from int, req []byte) ([]byte, error) {
	return func(ctx context.Context, from int, req []byte) ([]byte, error) {
		var r RunLevelRequest
		if err := json.Unmarshal(req, &r); err != nil {
			return nil, fmt.Errorf("locusd: run level from node %d: %w", from, err)
		}
		return nil, m.SetRunLevel(r.Level)
	}
}

// shutdownHandler asks one node, or every node that is not Down, to shut
// down (or reboot): the others over ICS, this one last.
func shutdownHandler(cfg Config, m *clms.Member, icsNode func() *ics.Node) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req ShutdownRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
			http.Error(w, "locusd: shutdown: bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		st := m.Status()
		action := ActionPowerOff
		if req.Reboot {
			action = ActionReboot
		}
		var targets []int
		for _, n := range st.Nodes {
			if (req.Node == 0 || req.Node == n.Node) && n.State != clms.Down && n.State != clms.NeverUp {
				targets = append(targets, n.Node)
			}
		}
		if len(targets) == 0 {
			http.Error(w, fmt.Sprintf("locusd: shutdown: node %d is not in the cluster", req.Node), http.StatusNotFound)
			return
		}
		reply := ShutdownReply{Failed: map[string]string{}}
		self := false
		body, _ := json.Marshal(Request{Action: action, From: st.Self})
		for _, n := range targets {
			if n == st.Self {
				self = true
				continue
			}
			in := icsNode()
			if in == nil {
				reply.Failed[strconv.Itoa(n)] = "no interconnect call service on this node"
				continue
			}
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			_, err := in.Call(ctx, n, "shutdown", body)
			cancel()
			if err != nil {
				reply.Failed[strconv.Itoa(n)] = err.Error()
				continue
			}
			reply.Asked = append(reply.Asked, n)
		}
		if self {
			if err := writeRequest(cfg.NodeFile, Request{Action: action, At: time.Now().UTC(), From: st.Self}); err != nil {
				reply.Failed[strconv.Itoa(st.Self)] = err.Error()
			} else {
				reply.Asked = append(reply.Asked, st.Self)
			}
		}
		cfg.Log.Info("shutdown requested", "action", action, "asked", reply.Asked, "failed", reply.Failed)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(reply)
	}
}

// shutdownCall is the ICS handler of "shutdown": another node's daemon
// asks this node to go down.
func shutdownCall(nodeFile string, log *slog.Logger) func(ctx context.Context, from int, req []byte) ([]byte, error) {
	return func(ctx context.Context, from int, req []byte) ([]byte, error) {
		var r Request
		if err := json.Unmarshal(req, &r); err != nil {
			return nil, fmt.Errorf("locusd: shutdown from node %d: %w", from, err)
		}
		if r.Action != ActionPowerOff && r.Action != ActionReboot {
			return nil, fmt.Errorf("locusd: shutdown from node %d: unknown action %q", from, r.Action)
		}
		r.At, r.From = time.Now().UTC(), from
		log.Info("shutdown asked by another node", "from", from, "action", r.Action)
		return nil, writeRequest(nodeFile, r)
	}
}
