// Package benchresults writes a benchmark's section of bench/RESULTS.md:
// each `make bench-*` target owns the text between its markers and leaves
// the rest of the file (other sections, hand-written analysis) alone.
package benchresults

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Machine describes where a benchmark ran, for the section's first line.
func Machine() string {
	host, _ := os.Hostname()
	cpu := "unknown CPU"
	if ci, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(ci), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%s on %s: %d cores (%s), Debian 12", time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), cpu)
}

// WriteSection replaces the section named name in the results file at
// path (between <!-- name:begin --> and <!-- name:end -->) with body, or
// appends it.
func WriteSection(path, name, body string) error {
	begin, end := "<!-- "+name+":begin -->\n", "<!-- "+name+":end -->\n"
	section := begin + strings.TrimRight(body, "\n") + "\n" + end
	old, _ := os.ReadFile(path)
	s := string(old)
	if s == "" {
		s = "# Benchmark results\n\nEach section is written by its `make bench-*` target; absolute numbers on this machine are noisy, ratios are not.\n\n"
	}
	if i, j := strings.Index(s, begin), strings.Index(s, end); i >= 0 && j > i {
		s = s[:i] + section + s[j+len(end):]
	} else {
		s += "\n" + section
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		return fmt.Errorf("benchresults: %w", err)
	}
	return nil
}

// Every benchmark reports the same ratio: the ratio of the two sides'
// medians (for rates Locus / peer, for times peer / Locus, so that above
// 1 always means Locus is faster), and says so in its section.
const RatioRule = "ratio of the medians, above 1: Locus is faster"

// Median is the middle of v (the mean of the two middle values for an
// even count); 0 for none. v is not changed.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Alternate runs one round's two measurements, Locus's and the peer's,
// Locus first in even rounds and the peer first in odd ones, so that
// neither side always gets the warmer (or the colder) machine.
func Alternate(round int, locus, peer func() error) error {
	first, second := locus, peer
	if round%2 == 1 {
		first, second = peer, locus
	}
	if err := first(); err != nil {
		return err
	}
	return second()
}

// Row is one line of a benchmark's table, as the reading of it needs.
type Row struct {
	What  string
	Ratio float64
}

// Reading is the sentence under a table that says where Locus meets the
// goal of at least the peer's speed (ratio >= 1.0) and where not, made
// from the table's own numbers so that it cannot disagree with them.
func Reading(peer string, rows []Row) string {
	var at, below []string
	for _, r := range rows {
		s := fmt.Sprintf("%s (%.2f)", r.What, r.Ratio)
		if math.Round(r.Ratio*100) >= 100 {
			at = append(at, s)
		} else {
			below = append(below, s)
		}
	}
	var b strings.Builder
	b.WriteString("Reading (generated from the table): ")
	switch {
	case len(below) == 0:
		fmt.Fprintf(&b, "at or above %s everywhere: %s.", peer, strings.Join(at, ", "))
	case len(at) == 0:
		fmt.Fprintf(&b, "below %s everywhere: %s; the goal (at least %s's speed) is not met.", peer, strings.Join(below, ", "), peer)
	default:
		fmt.Fprintf(&b, "at or above %s for %s; below it for %s, where the goal (at least %s's speed) is not met.", peer, strings.Join(at, ", "), strings.Join(below, ", "), peer)
	}
	return b.String()
}
