package locusd

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/locus-ssi/locus/internal/privsock"
)

// SocketPath is the daemon's API for root on the node: a unix socket in
// a directory only root can enter.
const SocketPath = "/run/locus/private/locusd.sock"

// Client calls a node daemon's API: over TLS at host:port, with the
// caller's credential in its TLS configuration, or through the node's
// own unix socket.
type Client struct {
	// Addr is what the client reaches (host:port, or the socket's path).
	Addr string
	base string
	hc   *http.Client
}

// NewClient calls the daemon at addr (host:port) over TLS with tc (the
// credential and the server check; see locusconfig.Context.TLS).
func NewClient(addr string, tc *tls.Config) *Client {
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: false, MaxIdleConnsPerHost: 4,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext, TLSHandshakeTimeout: 5 * time.Second}
	return &Client{Addr: addr, base: "https://" + addr, hc: &http.Client{Transport: tr}}
}

// LocalClient calls this node's daemon through its unix socket at sock
// (root only), as local root.
func LocalClient(sock string) *Client {
	hc, base := privsock.HTTPClient(sock, 0)
	return &Client{Addr: sock, base: base, hc: hc}
}

// anonymous calls addr over TLS without a credential and without
// checking the server: all it can reach is /healthz.
func anonymous(addr string) *Client {
	return NewClient(addr, &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true})
}

// Close drops the client's idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Get decodes the JSON answer of GET path into v.
func (c *Client) Get(ctx context.Context, path string, v any) error {
	return c.call(ctx, http.MethodGet, path, nil, v)
}

// Post sends body as JSON to path and decodes the answer into v (if not
// nil).
func (c *Client) Post(ctx context.Context, path string, body, v any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return c.call(ctx, http.MethodPost, path, b, v)
}

// Open sends GET path and returns the response for the caller to read
// (a stream); a status other than 200 is an error.
func (c *Client) Open(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("locusd: %s: %w", c.Addr, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("locusd: %s: %w", c.Addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, statusErr(c.Addr, path, resp)
	}
	return resp, nil
}

func statusErr(addr, path string, resp *http.Response) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return &StatusError{Addr: addr, Path: path, Status: resp.Status, Code: resp.StatusCode, Msg: strings.TrimSpace(string(msg))}
}

// StatusError is the daemon's answer other than 200: Msg says why.
type StatusError struct {
	Addr, Path, Status string
	Code               int
	Msg                string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("locusd: %s%s: %s: %s", e.Addr, e.Path, e.Status, e.Msg)
}

func (c *Client) call(ctx context.Context, method, path string, body []byte, v any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("locusd: %s: %w", c.Addr, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("locusd: %s: %w", c.Addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusErr(c.Addr, path, resp)
	}
	if v == nil {
		return nil
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 16<<20)).Decode(v); err != nil {
		return fmt.Errorf("locusd: %s%s: bad reply: %w", c.Addr, path, err)
	}
	return nil
}

// Health is GET /healthz, the one answer the API gives without a
// credential: who the node is and whether it is up.
type Health struct {
	Node     int    `json:"node"`
	Cluster  string `json:"cluster"`
	State    string `json:"state"`
	RunLevel int    `json:"runlevel"`
}

// NodeInfo is the health as far as a node's info goes: who and how,
// without the rest only a credential gets.
func (h *Health) NodeInfo() *NodeInfo {
	return &NodeInfo{Node: h.Node, Cluster: h.Cluster, State: h.State, RunLevel: h.RunLevel}
}

// FetchHealth asks the daemon at addr (host:port) for its health,
// without a credential.
func FetchHealth(ctx context.Context, addr string) (*Health, error) {
	c := anonymous(addr)
	defer c.Close()
	var h Health
	if err := c.Get(ctx, "/healthz", &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// Fetch asks the daemon for its node info.
func (c *Client) Fetch(ctx context.Context) (*NodeInfo, error) {
	var info NodeInfo
	if err := c.Get(ctx, "/v1/node", &info); err != nil {
		return nil, err
	}
	return &info, nil
}
