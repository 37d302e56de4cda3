package locusd

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"
)

// ProbeResult is one node's answer to a probe.
type ProbeResult struct {
	Addr  string    `json:"addr"`
	Info  *NodeInfo `json:"info,omitempty"`
	RTTms float64   `json:"rtt_ms"`
	Error string    `json:"error,omitempty"`
}

// ProbeTarget resolves what a user names a node by: a bare number is a
// node number, its address taken from spec (loaded only then); anything
// else is HOST or HOST:PORT, the port defaulting to DefaultPort.
func ProbeTarget(arg string, spec func() (*clusterspec.Spec, error)) (string, error) {
	if n, err := strconv.Atoi(arg); err == nil {
		s, err := spec()
		if err != nil {
			return "", err
		}
		p, err := s.NodeAddr(n)
		if err != nil {
			return "", err
		}
		arg = p.Addr().String()
	}
	if _, _, err := net.SplitHostPort(arg); err != nil {
		arg = net.JoinHostPort(arg, strconv.Itoa(DefaultPort))
	}
	return arg, nil
}

// Probe asks each daemon at addrs (HOST:PORT) who it is, one at a time,
// each within timeout, and returns their answers with the round-trip
// times (of a fresh TLS connection: the handshake included); failed says
// how many did not answer. With a credential (tc) the answer is the
// node's whole info; without one, its health (node, state, run level).
func Probe(ctx context.Context, addrs []string, timeout time.Duration, tc *tls.Config) (rows []ProbeResult, failed int) {
	for _, a := range addrs {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		start := time.Now()
		var info *NodeInfo
		var err error
		if tc != nil {
			c := NewClient(a, tc)
			info, err = c.Fetch(pctx)
			c.Close()
		} else {
			var h *Health
			if h, err = FetchHealth(pctx, a); err == nil {
				info = h.NodeInfo()
			}
		}
		cancel()
		r := ProbeResult{Addr: a, Info: info, RTTms: float64(time.Since(start).Microseconds()) / 1000}
		if err != nil {
			r.Error = err.Error()
			failed++
		}
		rows = append(rows, r)
	}
	return rows, failed
}

// ProbeError is the error of a probe some nodes did not answer.
func ProbeError(failed, of int) error {
	if failed == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d node(s) did not answer", failed, of)
}
