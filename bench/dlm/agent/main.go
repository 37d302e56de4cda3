// Command agent is bench-dlm's load generator, run on the cluster's
// nodes: lock+unlock round trips and throughput against the kernel DLM
// (through the node's default lockspace, services/dlm/lockdev) and
// against an etcd cluster (go.etcd.io/etcd/client/v3/concurrency's
// Mutex). It prints one JSON object.
//
//	agent dlm-hold -for DUR RES...        hold RES in NL (their master stays this node)
//	agent dlm-rtt -n N RES                N lock(EX)+unlock round trips of RES
//	agent dlm-tput -clients K -dur D -start MS PREFIX
//	agent etcd-rtt -endpoints E -n N KEY
//	agent etcd-tput -endpoints E -clients K -dur D -start MS PREFIX
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/locus-ssi/locus/services/dlm"
	"github.com/locus-ssi/locus/services/dlm/lockdev"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// Result is what the agent prints.
type Result struct {
	SamplesUS []int64 `json:"samples_us,omitempty"` // round trips, microseconds
	Ops       int64   `json:"ops,omitempty"`        // lock+unlock pairs done in Seconds
	Seconds   float64 `json:"seconds,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: agent dlm-hold|dlm-rtt|dlm-tput|etcd-rtt|etcd-tput [flags] ARG")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	n := fs.Int("n", 200, "round trips")
	clients := fs.Int("clients", 1, "concurrent clients, each on its own resource")
	dur := fs.Duration("dur", 10*time.Second, "how long throughput runs, or a hold lasts (-for)")
	hold := fs.Duration("for", time.Minute, "how long dlm-hold holds")
	start := fs.Int64("start", 0, "Unix milliseconds at which throughput starts (0: now), so that every node's agent starts together")
	endpoints := fs.String("endpoints", "", "etcd client URLs, comma-separated")
	fs.Parse(os.Args[2:])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var r Result
	var err error
	switch os.Args[1] {
	case "dlm-hold":
		err = dlmHold(ctx, fs.Args(), *hold)
	case "dlm-rtt":
		r, err = dlmRTT(ctx, arg(fs), *n)
	case "dlm-tput":
		r, err = dlmTput(ctx, arg(fs), *clients, *dur, *start)
	case "etcd-rtt":
		r, err = etcdRTT(ctx, *endpoints, arg(fs), *n)
	case "etcd-tput":
		r, err = etcdTput(ctx, *endpoints, arg(fs), *clients, *dur, *start)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(r)
}

func arg(fs *flag.FlagSet) string {
	if fs.NArg() != 1 {
		fmt.Fprintf(os.Stderr, "agent %s: want one resource or key\n", fs.Name())
		os.Exit(2)
	}
	return fs.Arg(0)
}

func dlmHold(ctx context.Context, names []string, d time.Duration) error {
	ls, err := lockdev.Open(dlm.DefaultLockspace)
	if err != nil {
		return err
	}
	defer ls.Close()
	for _, name := range names {
		if _, err := ls.Lock(ctx, name, lockdev.NL, lockdev.Options{}); err != nil {
			return fmt.Errorf("hold %s: %w", name, err)
		}
	}
	fmt.Println("held")
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	return nil
}

func dlmRTT(ctx context.Context, name string, n int) (Result, error) {
	ls, err := lockdev.Open(dlm.DefaultLockspace)
	if err != nil {
		return Result{}, err
	}
	defer ls.Close()
	var r Result
	for i := 0; i < n+n/10; i++ { // the first tenth warms up
		t0 := time.Now()
		l, err := ls.Lock(ctx, name, lockdev.EX, lockdev.Options{})
		if err != nil {
			return r, fmt.Errorf("lock %s: %w", name, err)
		}
		if err := l.Unlock(0, nil); err != nil {
			return r, fmt.Errorf("unlock %s: %w", name, err)
		}
		if i >= n/10 {
			r.SamplesUS = append(r.SamplesUS, time.Since(t0).Microseconds())
		}
	}
	return r, nil
}

// waitStart sleeps until the Unix millisecond ms.
func waitStart(ms int64) {
	if ms > 0 {
		time.Sleep(time.Until(time.UnixMilli(ms)))
	}
}

// throughput runs one loop per client for d and counts the pairs done.
func throughput(ctx context.Context, clients int, d time.Duration, start int64, setup func(i int) (func(context.Context) error, func(), error)) (Result, error) {
	loops := make([]func(context.Context) error, clients)
	for i := range loops {
		loop, done, err := setup(i)
		if err != nil {
			return Result{}, err
		}
		defer done()
		loops[i] = loop
	}
	waitStart(start)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var ops atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	t0 := time.Now()
	for _, loop := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := loop(ctx); err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				ops.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	select {
	case err := <-errs:
		return Result{}, err
	default:
	}
	return Result{Ops: ops.Load(), Seconds: el.Seconds()}, nil
}

func dlmTput(ctx context.Context, prefix string, clients int, d time.Duration, start int64) (Result, error) {
	ls, err := lockdev.Open(dlm.DefaultLockspace)
	if err != nil {
		return Result{}, err
	}
	defer ls.Close()
	return throughput(ctx, clients, d, start, func(i int) (func(context.Context) error, func(), error) {
		name := fmt.Sprintf("%s-%d", prefix, i)
		return func(ctx context.Context) error {
			l, err := ls.Lock(ctx, name, lockdev.EX, lockdev.Options{})
			if err != nil {
				return fmt.Errorf("lock %s: %w", name, err)
			}
			return l.Unlock(0, nil)
		}, func() {}, nil
	})
}

func etcdClient(endpoints string) (*clientv3.Client, error) {
	log, err := zap.NewProductionConfig().Build() // warnings and errors to stderr, none dropped
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{Endpoints: strings.Split(endpoints, ","), DialTimeout: 10 * time.Second, Logger: log})
}

func etcdRTT(ctx context.Context, endpoints, key string, n int) (Result, error) {
	cli, err := etcdClient(endpoints)
	if err != nil {
		return Result{}, err
	}
	defer cli.Close()
	s, err := concurrency.NewSession(cli)
	if err != nil {
		return Result{}, fmt.Errorf("etcd session: %w", err)
	}
	defer s.Close()
	m := concurrency.NewMutex(s, key)
	var r Result
	for i := 0; i < n+n/10; i++ {
		t0 := time.Now()
		if err := m.Lock(ctx); err != nil {
			return r, fmt.Errorf("etcd lock %s: %w", key, err)
		}
		if err := m.Unlock(ctx); err != nil {
			return r, fmt.Errorf("etcd unlock %s: %w", key, err)
		}
		if i >= n/10 {
			r.SamplesUS = append(r.SamplesUS, time.Since(t0).Microseconds())
		}
	}
	return r, nil
}

func etcdTput(ctx context.Context, endpoints, prefix string, clients int, d time.Duration, start int64) (Result, error) {
	cli, err := etcdClient(endpoints)
	if err != nil {
		return Result{}, err
	}
	defer cli.Close()
	return throughput(ctx, clients, d, start, func(i int) (func(context.Context) error, func(), error) {
		s, err := concurrency.NewSession(cli)
		if err != nil {
			return nil, nil, fmt.Errorf("etcd session: %w", err)
		}
		key := fmt.Sprintf("%s-%d", prefix, i)
		m := concurrency.NewMutex(s, key)
		return func(ctx context.Context) error {
			if err := m.Lock(ctx); err != nil {
				return fmt.Errorf("etcd lock %s: %w", key, err)
			}
			return m.Unlock(ctx)
		}, func() { s.Close() }, nil
	})
}
