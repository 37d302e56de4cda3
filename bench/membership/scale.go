package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/locus-ssi/locus/internal/benchresults"
	"github.com/locus-ssi/locus/services/clms"
)

// scaleResult is what the scale run measured.
type scaleResult struct {
	n           int
	joined      time.Duration // first start to every member seeing n Up
	voters      int
	detect      []time.Duration
	rssPer      int64 // bytes of resident memory per member
	heapPer     int64 // bytes of Go heap in use per member
	goroutines  int   // per member
	profile     string
	killsWanted int
	wave        int // members started at once (each wave Up before the next); n: all at once
}

// runScale starts n members of one cluster in this process (each with
// its own Raft and gossip sockets on its own loopback address), waits
// until every member sees all n Up, then kills non-voters one at a time
// (sockets closed, no goodbye) and times each until every survivor has
// applied its Down; the killed member starts again before the next.
// Members start in waves of wave (0: all at once), each wave Up on
// every member before the next starts.
func runScale(stdout io.Writer, n, kills, wave int) (scaleResult, error) {
	if wave <= 0 || wave > n {
		wave = n
	}
	r := scaleResult{n: n, profile: clms.ProfileSteady, killsWanted: kills, wave: wave}
	rss0, heap0, g0 := memNow()
	start := time.Now()
	c := &cluster{profile: r.profile, net: "127.2", members: map[int]*clms.Member{}, downs: make(chan down, 4*n), progress: stdout}
	defer c.close()
	for i := 1; i <= n; i++ {
		if err := c.start(i, i == 1); err != nil {
			return r, fmt.Errorf("scale: start member %d: %w", i, err)
		}
		if i%32 == 0 {
			fmt.Fprintf(stdout, "scale: %d/%d members started (%.1fs)\n", i, n, time.Since(start).Seconds())
		}
		if i%wave == 0 || i == n {
			if err := c.waitUp(i, 10*time.Minute); err != nil {
				return r, err
			}
			if i < n {
				fmt.Fprintf(stdout, "scale: %d members Up everywhere (%.1fs)\n", i, time.Since(start).Seconds())
			}
		}
	}
	r.joined = time.Since(start)
	fmt.Fprintf(stdout, "scale: %d members Up everywhere in %v\n", n, r.joined.Round(time.Millisecond))
	runtime.GC()
	rss1, heap1, g1 := memNow()
	r.rssPer, r.heapPer, r.goroutines = (rss1-rss0)/int64(n), (heap1-heap0)/int64(n), (g1-g0)/n
	for _, row := range c.members[1].Status().Nodes {
		if row.Voter {
			r.voters++
		}
	}
	for i := 0; i < kills; i++ {
		victim := n - i%(n-r.voters) // the last to join: non-voters
		d, err := c.kill(victim)
		if err != nil {
			return r, fmt.Errorf("scale: kill %d: %w", i+1, err)
		}
		r.detect = append(r.detect, d)
		fmt.Fprintf(stdout, "scale: kill %d/%d: Down on all %d survivors in %v\n", i+1, kills, n-1, d.Round(time.Millisecond))
	}
	return r, nil
}

// memNow is the process's resident memory and Go heap in use, and its
// goroutines.
func memNow() (rss, heap int64, goroutines int) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			rss = kb << 10
		}
	}
	return rss, int64(ms.HeapInuse), runtime.NumGoroutine()
}

func formatScale(r scaleResult) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "## Membership at scale (make bench-membership)\n\n")
	how := "all started at once"
	if r.wave < r.n {
		how = fmt.Sprintf("started in waves of %d, each wave Up on every member before the next starts", r.wave)
	}
	fmt.Fprintf(&b, "Run %s. One cluster of %d members in one process (%s), each with its own Raft and gossip sockets on its own loopback address, Locus's default timing (`steady`); %d voters (the rest follow Raft as non-voters). Killed: non-voters, one at a time (sockets closed, no goodbye; the port then refuses, as a dead daemon's kernel does); the time is until every one of the %d survivors has applied the Down; the member starts again before the next kill.\n\n",
		benchresults.Machine(), r.n, how, r.voters, r.n-1)
	fmt.Fprintf(&b, "| what | measured |\n|---|---|\n")
	fmt.Fprintf(&b, "| all %d members Up on every member, from the first start | %v |\n", r.n, r.joined.Round(100*time.Millisecond))
	fmt.Fprintf(&b, "| killed member Down on all survivors, p50 | %v (n=%d) |\n", pct(r.detect, 50).Round(time.Millisecond), len(r.detect))
	fmt.Fprintf(&b, "| killed member Down on all survivors, p99 | %v (n=%d) |\n", pct(r.detect, 99).Round(time.Millisecond), len(r.detect))
	fmt.Fprintf(&b, "| resident memory per member | %.1f MiB |\n", float64(r.rssPer)/(1<<20))
	fmt.Fprintf(&b, "| Go heap in use per member | %.1f MiB |\n", float64(r.heapPer)/(1<<20))
	fmt.Fprintf(&b, "| goroutines per member | %d |\n", r.goroutines)
	v := "met"
	if pct(r.detect, 99) > time.Second || len(r.detect) < r.killsWanted {
		v = "not met"
	}
	fmt.Fprintf(&b, "\nGoal: a killed member Down on every survivor within 1 s p99 with the default timing. Reading (generated from the table): %s (p99 %v over %d kills).\n", v, pct(r.detect, 99).Round(time.Millisecond), len(r.detect))
	return b.String()
}
