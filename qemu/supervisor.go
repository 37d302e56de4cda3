package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// The supervisor is the process that owns a cluster's VMs when the cluster
// is started from the command line: `locus qemu up` starts it detached and
// returns; it keeps the serial logs, serves consoles, and takes start, kill
// and down requests on a unix socket in the cluster directory. Its VMs die
// with it (Pdeathsig), so no VM outlives its supervisor.

func controlPath(dir string) string { return filepath.Join(dir, "control.sock") }

// PIDFile holds the supervisor's process id.
func PIDFile(dir string) string { return filepath.Join(dir, "supervisor.pid") }

type request struct {
	Op   string `json:"op"`
	Node int    `json:"node,omitempty"`
}

type response struct {
	OK    bool         `json:"ok"`
	Error string       `json:"error,omitempty"`
	Nodes []NodeStatus `json:"nodes,omitempty"`
}

// Supervise starts the cluster saved in dir and serves it until a down
// request or ctx ends; then it stops every VM and returns.
func Supervise(ctx context.Context, dir string, log *slog.Logger) error {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return err
	}
	c, err := NewCluster(cfg)
	if err != nil {
		return err
	}
	c.log = log
	os.Remove(controlPath(dir))
	ln, err := net.Listen("unix", controlPath(dir))
	if err != nil {
		return fmt.Errorf("qemu: supervisor socket: %w", err)
	}
	defer os.Remove(controlPath(dir))
	if err := os.WriteFile(PIDFile(dir), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(PIDFile(dir))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer c.Stop()
	// Serve status while the nodes start: disk-boot clusters start their
	// PXE nodes only once the init node is Up.
	startErr := make(chan error, 1)
	go func() {
		err := c.StartAll()
		if err != nil {
			log.Error("cluster start failed", "err", err)
			cancel()
		} else {
			log.Info("cluster started", "name", cfg.Name, "nodes", len(cfg.Nodes), "accel", c.Config().Accel, "segment", fmt.Sprintf("%s:%d", cfg.Segment.Group, cfg.Segment.Port))
		}
		startErr <- err
	}()
	go c.WatchNetboot(ctx)
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				log.Info("supervisor stopping")
				select {
				case err := <-startErr:
					return err
				default:
					return nil
				}
			}
			return fmt.Errorf("qemu: supervisor accept: %w", err)
		}
		go serveControl(ctx, c, conn, cancel, log)
	}
}

func serveControl(ctx context.Context, c *Cluster, conn net.Conn, down func(), log *slog.Logger) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := br.ReadBytes('\n')
	if err != nil {
		return
	}
	conn.SetReadDeadline(time.Time{})
	var req request
	reply := func(r response) { json.NewEncoder(conn).Encode(r) }
	if err := json.Unmarshal(line, &req); err != nil {
		reply(response{Error: "bad request: " + err.Error()})
		return
	}
	switch req.Op {
	case "status":
		reply(response{OK: true, Nodes: c.Status()})
	case "start":
		if _, err := c.Start(req.Node); err != nil {
			reply(response{Error: err.Error()})
			return
		}
		log.Info("node started", "node", req.Node)
		reply(response{OK: true})
	case "kill":
		if err := c.Kill(req.Node); err != nil {
			reply(response{Error: err.Error()})
			return
		}
		log.Info("node killed", "node", req.Node)
		reply(response{OK: true})
	case "link-up", "link-down":
		if err := c.SetLink(req.Node, req.Op == "link-up"); err != nil {
			reply(response{Error: err.Error()})
			return
		}
		log.Info("node link set", "node", req.Node, "op", req.Op)
		reply(response{OK: true})
	case "down":
		c.Stop()
		reply(response{OK: true})
		down()
	case "console":
		vm := c.VM(req.Node)
		if vm == nil {
			reply(response{Error: fmt.Sprintf("node %d is not running", req.Node)})
			return
		}
		reply(response{OK: true})
		out, cancel := vm.Console.Subscribe()
		defer cancel()
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := br.Read(buf)
				if n > 0 {
					vm.Input(buf[:n])
				}
				if err != nil {
					cancel()
					return
				}
			}
		}()
		for {
			select {
			case p, ok := <-out:
				if !ok {
					return
				}
				if _, err := conn.Write(p); err != nil {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	default:
		reply(response{Error: fmt.Sprintf("unknown op %q", req.Op)})
	}
}

// ErrNotRunning means no supervisor answers for the cluster directory.
var ErrNotRunning = errors.New("cluster is not running")

// call sends one request to the supervisor of dir.
func call(ctx context.Context, dir string, req request) (*response, net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", controlPath(dir))
	if err != nil {
		return nil, nil, fmt.Errorf("qemu: %s: %w (start it with `locus qemu up`)", dir, ErrNotRunning)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	b, _ := json.Marshal(req)
	if _, err := conn.Write(append(b, '\n')); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("qemu: supervisor: %w", err)
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadBytes('\n')
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("qemu: supervisor did not answer: %w", err)
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("qemu: supervisor: bad answer: %w", err)
	}
	if !resp.OK {
		conn.Close()
		return nil, nil, fmt.Errorf("qemu: %s", resp.Error)
	}
	conn.SetDeadline(time.Time{})
	return &resp, &bufConn{Conn: conn, r: br}, nil
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// RemoteStatus asks the supervisor of dir for every node's status.
func RemoteStatus(ctx context.Context, dir string) ([]NodeStatus, error) {
	resp, conn, err := call(ctx, dir, request{Op: "status"})
	if err != nil {
		return nil, err
	}
	conn.Close()
	return resp.Nodes, nil
}

// RemoteOp asks the supervisor of dir to start or kill a node, or to take
// the whole cluster down (op "down").
func RemoteOp(ctx context.Context, dir, op string, node int) error {
	_, conn, err := call(ctx, dir, request{Op: op, Node: node})
	if err != nil {
		return err
	}
	conn.Close()
	return nil
}

// RemoteConsole attaches in and out to node n's serial console until in
// ends, the connection drops or ctx ends.
func RemoteConsole(ctx context.Context, dir string, n int, in io.Reader, out io.Writer) error {
	_, conn, err := call(ctx, dir, request{Op: "console", Node: n})
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	go func() { io.Copy(conn, in); conn.Close() }()
	_, err = io.Copy(out, conn)
	if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// ExecPath is node n's exec socket in the cluster directory dir.
func ExecPath(dir string, n int) string {
	return execPath(filepath.Join(dir, fmt.Sprintf("node%d", n)))
}

// SerialLog is node n's serial log in the cluster directory dir.
func SerialLog(dir string, n int) string {
	return serialPath(filepath.Join(dir, fmt.Sprintf("node%d", n)))
}
