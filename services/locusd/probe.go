package locusd

import (
	"context"
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
// times; failed says how many did not answer.
func Probe(ctx context.Context, addrs []string, timeout time.Duration) (rows []ProbeResult, failed int) {
	for _, a := range addrs {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		start := time.Now()
		info, err := Fetch(pctx, a)
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
