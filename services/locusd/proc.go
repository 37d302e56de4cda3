package locusd

import (
	"bufio"
	"context"
	"encoding/gob"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/locus-ssi/locus/services/proc"
	"github.com/locus-ssi/locus/services/proc/standin"
	"golang.org/x/sys/unix"
)

// UserSocketPath is the daemon's API for every user of the node: who
// connects is who the kernel says (SO_PEERCRED), and may run jobs and
// send signals as that user only.
const UserSocketPath = standin.UserSocket

// listenUsers makes the user socket: a socket anyone on the node may
// connect to, in a directory anyone may enter.
func listenUsers(path string, log *slog.Logger) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("user socket: %w", err)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("user socket: %w", err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("user socket: %w", err)
	}
	return peerListener{Listener: ln, log: log, what: "user socket", admit: func(cred unix.Ucred) (Caller, error) {
		return localUser(cred.Pid, cred.Uid, cred.Gid), nil
	}}, nil
}

// localUser is the caller the kernel vouched for: root is local root;
// anyone else a user, with the supplementary groups its process has.
func localUser(pid int32, uid, gid uint32) Caller {
	tag := " (pid " + strconv.Itoa(int(pid)) + ")"
	if uid == 0 {
		return Caller{Kind: KindLocal, Name: "root" + tag}
	}
	name := strconv.Itoa(int(uid))
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	c := Caller{Kind: KindUser, Name: name + tag, UID: uid, GID: gid}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "Groups:"); ok {
				for _, f := range strings.Fields(v) {
					if g, err := strconv.ParseUint(f, 10, 32); err == nil {
						c.Groups = append(c.Groups, uint32(g))
					}
				}
			}
		}
	}
	return c
}

// jobUser is who a caller's jobs and signals run as: a local user as
// itself; local root and operators (who may control the cluster) as
// root.
func (c Caller) jobUser() (standin.User, bool) {
	switch {
	case c.Kind == KindUser:
		return standin.User{UID: c.UID, GID: c.GID, Groups: c.Groups}, true
	case c.Kind == KindLocal, c.Kind == KindOperator && c.may(run):
		return standin.User{}, true
	}
	return standin.User{}, false
}

// GobType is the media type a client asks GET /v1/proc/ps for to have
// its answer in encoding/gob rather than JSON.
const GobType = "application/x-gob"

// PSReply is GET /v1/proc/ps.
type PSReply struct {
	Processes []proc.Process `json:"processes"`
	// Unreachable are the nodes asked that did not answer.
	Unreachable []proc.NodeError `json:"unreachable,omitempty"`
}

// KillRequest is POST /v1/proc/kill: a signal for processes (or process
// groups) named by cluster PID.
type KillRequest struct {
	Signal  int          `json:"signal"`
	Targets []KillTarget `json:"targets"`
}

// KillTarget is one process (or, with Group, process group).
type KillTarget struct {
	Node  int  `json:"node"`
	PID   int  `json:"pid"`
	Group bool `json:"group,omitempty"`
}

// KillResult is what became of one target.
type KillResult struct {
	KillTarget
	CPID  int64  `json:"cpid"`
	Error string `json:"error,omitempty"`
}

// procRoutes serves the process service's API.
func procRoutes(ctx context.Context, handle func(string, level, http.HandlerFunc), svc *proc.Service, log *slog.Logger) {
	handle("GET /v1/proc/ps", look, func(w http.ResponseWriter, r *http.Request) {
		nodes, err := ParseNodeList(r.URL.Query().Get("nodes"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ps, errs := svc.PS(r.Context(), nodes)
		reply := PSReply{Processes: ps, Unreachable: errs}
		if r.Header.Get("Accept") == GobType {
			// locus ps's own encoding: tens of thousands of rows cost a
			// third of their JSON.
			w.Header().Set("Content-Type", GobType)
			gob.NewEncoder(w).Encode(reply)
			return
		}
		writeJSON(w, reply)
	})
	handle("GET /v1/proc/where", look, func(w http.ResponseWriter, r *http.Request) {
		node, pid, err := proc.ParseCPID(r.URL.Query().Get("cpid"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p, err := svc.Where(r.Context(), node, pid)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		writeJSON(w, p)
	})
	handle("GET /v1/proc/loads", look, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, svc.Loads())
	})
	handle("GET /v1/proc/place", look, func(w http.ResponseWriter, r *http.Request) {
		count := 1
		if s := r.URL.Query().Get("count"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > 1024 {
				http.Error(w, fmt.Sprintf("count %q: want 1 to 1024", s), http.StatusBadRequest)
				return
			}
			count = n
		}
		writeJSON(w, svc.Place(count, false))
	})
	handle("POST /v1/proc/kill", run, func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Context().Value(callerKey{}).(Caller)
		u, ok := c.jobUser()
		if !ok {
			http.Error(w, "locusd: "+c.String()+" may not send signals", http.StatusForbidden)
			return
		}
		var req KillRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, "locusd: kill request: "+err.Error(), http.StatusBadRequest)
			return
		}
		out := make([]KillResult, len(req.Targets))
		for i, t := range req.Targets {
			out[i] = KillResult{KillTarget: t, CPID: proc.CPID(t.Node, t.PID)}
			if err := svc.Kill(r.Context(), u, t.Node, t.PID, t.Group, req.Signal); err != nil {
				out[i].Error = err.Error()
			}
		}
		log.Info("kill", "caller", c.String(), "signal", req.Signal, "targets", len(req.Targets))
		writeJSON(w, out)
	})
	handle("GET /v1/proc/exec", run, func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Context().Value(callerKey{}).(Caller)
		u, ok := c.jobUser()
		if !ok {
			http.Error(w, "locusd: "+c.String()+" may not run jobs", http.StatusForbidden)
			return
		}
		if !strings.EqualFold(r.Header.Get("Upgrade"), standin.Upgrade) {
			http.Error(w, "locusd: a job's stream upgrades to "+standin.Upgrade, http.StatusUpgradeRequired)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			http.Error(w, "locusd: this connection cannot carry a job", http.StatusInternalServerError)
			return
		}
		conn, brw, err := hj.Hijack()
		if err != nil {
			return
		}
		conn.SetDeadline(time.Time{})
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + standin.Upgrade + "\r\nConnection: Upgrade\r\n\r\n")
		if err := brw.Flush(); err != nil {
			conn.Close()
			return
		}
		log.Debug("job stream", "caller", c.String(), "uid", u.UID)
		svc.Exec(ctx, standin.NewConn(hijacked{Reader: brw.Reader, Conn: conn}), u, c.Kind == KindOperator)
	})
}

// hijacked is an upgraded connection: what the server buffered is read
// first.
type hijacked struct {
	*bufio.Reader
	net.Conn
}

func (h hijacked) Read(p []byte) (int, error) { return h.Reader.Read(p) }

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// ParseNodeList reads a node list as pdsh and bpsh write it: "2,4-6",
// "node2,node4". Empty is no list.
func ParseNodeList(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	seen := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimPrefix(strings.TrimSpace(part), "node")
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 1 || a > proc.MaxNode {
			return nil, fmt.Errorf("node list %q: %q is not a node number", s, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(strings.TrimPrefix(hi, "node")); err != nil || b < a || b > proc.MaxNode {
				return nil, fmt.Errorf("node list %q: %q is not a range of nodes", s, part)
			}
		}
		for n := a; n <= b; n++ {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// PS is GET /v1/proc/ps?nodes=nodes, in gob.
func (c *Client) PS(ctx context.Context, nodes string) (*PSReply, error) {
	path := "/v1/proc/ps"
	if nodes != "" {
		path += "?nodes=" + url.QueryEscape(nodes)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("locusd: %s: %w", c.Addr, err)
	}
	req.Header.Set("Accept", GobType)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("locusd: %s: %w", c.Addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusErr(c.Addr, path, resp)
	}
	var reply PSReply
	if resp.Header.Get("Content-Type") != GobType {
		err = json.NewDecoder(resp.Body).Decode(&reply)
	} else {
		err = gob.NewDecoder(resp.Body).Decode(&reply)
	}
	if err != nil {
		return nil, fmt.Errorf("locusd: %s%s: bad reply: %w", c.Addr, path, err)
	}
	return &reply, nil
}

// OpenJob opens a job's stream on the daemon: the frames of
// services/proc, both ways.
func (c *Client) OpenJob(ctx context.Context) (io.ReadWriteCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/proc/exec", nil)
	if err != nil {
		return nil, fmt.Errorf("locusd: %s: %w", c.Addr, err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", standin.Upgrade)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("locusd: %s: %w", c.Addr, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return nil, statusErr(c.Addr, "/v1/proc/exec", resp)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return nil, fmt.Errorf("locusd: %s: the upgraded stream is not writable", c.Addr)
	}
	return rwc, nil
}
