// Package benchresults writes a benchmark's section of bench/RESULTS.md:
// each `make bench-*` target owns the text between its markers and leaves
// the rest of the file (other sections, hand-written analysis) alone.
package benchresults

import (
	"fmt"
	"os"
	"runtime"
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
