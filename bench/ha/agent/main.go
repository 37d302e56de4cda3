// Command agent is bench-ha's client, run on a node of the cluster
// (node 1, neither a director nor a real server). It prints one JSON
// object.
//
//	agent probe -for DUR -every D ADDR...   ask each ADDR (host:port) for /hostname every D, in turn,
//	                                        the first asked alternating; per address, when each
//	                                        answer came (ms after the agent started) and from whom
//	agent load -for DUR -clients K ADDR     K clients asking ADDR for /cgi-bin/work back to back
//	agent restart -pid PID ADDR             kill -9 PID, then how long until ADDR answers again
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Probe is what probe found for one address.
type Probe struct {
	Addr     string         `json:"addr"`
	Asked    int            `json:"asked"`
	Answered int            `json:"answered"`
	From     map[string]int `json:"from"`
	// AtMS is when each answer came, milliseconds after the agent
	// started (its monotonic clock); By who gave it.
	AtMS []float64 `json:"at_ms"`
	By   []string  `json:"by"`
}

// Result is what the agent prints.
type Result struct {
	Probes []Probe `json:"probes,omitempty"`
	Ops    int64   `json:"ops,omitempty"`
	// OpsBy is load's answers by who gave them.
	OpsBy     map[string]int64 `json:"ops_by,omitempty"`
	Errors    int64            `json:"errors,omitempty"`
	Seconds   float64          `json:"seconds,omitempty"`
	RestartMS float64          `json:"restart_ms,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: agent probe|load|restart [flags] ADDR...")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dur := fs.Duration("for", 30*time.Second, "how long to run")
	every := fs.Duration("every", 20*time.Millisecond, "probe: the pause between rounds of asks")
	timeout := fs.Duration("timeout", 200*time.Millisecond, "one ask's time limit")
	clients := fs.Int("clients", 8, "load: concurrent clients")
	pid := fs.Int("pid", 0, "restart: the process to kill")
	fs.Parse(os.Args[2:])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var r Result
	var err error
	switch {
	case os.Args[1] == "probe" && fs.NArg() > 0:
		r.Probes = probe(ctx, fs.Args(), *dur, *every, *timeout)
	case os.Args[1] == "load" && fs.NArg() == 1:
		r.OpsBy, r.Errors, r.Seconds = load(ctx, fs.Arg(0), *clients, *dur)
		for _, n := range r.OpsBy {
			r.Ops += n
		}
	case os.Args[1] == "restart" && fs.NArg() == 1 && *pid > 0:
		r.RestartMS, err = restart(ctx, fs.Arg(0), *pid, *dur, *timeout)
	default:
		err = fmt.Errorf("agent %s: bad arguments %q", os.Args[1], os.Args[2:])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(r)
}

// client makes a new connection for every request, as a fresh client
// would (so each is scheduled by IPVS, and a dead path shows at once).
func client(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: (&net.Dialer{Timeout: timeout}).DialContext}}
}

// get asks addr for path and returns the body's first line.
func get(ctx context.Context, c *http.Client, addr, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s%s: %s", addr, path, resp.Status)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return line, nil
}

func probe(ctx context.Context, addrs []string, dur, every, timeout time.Duration) []Probe {
	c := client(timeout)
	out := make([]Probe, len(addrs))
	for i, a := range addrs {
		out[i] = Probe{Addr: a, From: map[string]int{}}
	}
	start := time.Now()
	for round := 0; time.Since(start) < dur && ctx.Err() == nil; round++ {
		for k := range addrs {
			i := (k + round) % len(addrs) // each address first in turn
			from, err := get(ctx, c, addrs[i], "/hostname")
			at := float64(time.Since(start).Microseconds()) / 1000
			out[i].Asked++
			if err != nil {
				continue
			}
			out[i].Answered++
			out[i].From[from]++
			out[i].AtMS = append(out[i].AtMS, at)
			out[i].By = append(out[i].By, from)
		}
		time.Sleep(every)
	}
	return out
}

func load(ctx context.Context, addr string, clients int, dur time.Duration) (by map[string]int64, errs int64, secs float64) {
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	var mu sync.Mutex
	by = map[string]int64{}
	var nErrs atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client(10 * time.Second)
			for ctx.Err() == nil {
				from, err := get(ctx, c, addr, "/cgi-bin/work")
				if err != nil {
					if ctx.Err() == nil {
						nErrs.Add(1)
					}
					continue
				}
				mu.Lock()
				by[from]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return by, nErrs.Load(), time.Since(start).Seconds()
}

// restart kills pid and measures until addr answers again (the
// supervisor restarted the service).
func restart(ctx context.Context, addr string, pid int, limit, timeout time.Duration) (float64, error) {
	c := client(timeout)
	if _, err := get(ctx, c, addr, "/hostname"); err != nil {
		return 0, fmt.Errorf("%s does not answer before the kill: %w", addr, err)
	}
	start := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return 0, fmt.Errorf("kill %d: %w", pid, err)
	}
	for time.Since(start) < limit {
		if _, err := get(ctx, c, addr, "/hostname"); err == nil {
			return float64(time.Since(start).Microseconds()) / 1000, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s not answering %v after pid %d was killed", addr, limit, pid)
}
