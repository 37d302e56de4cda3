package benchresults

import (
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	sectionRE = regexp.MustCompile(`(?s)<!-- (\w+):begin -->\n(.*?)<!-- (\w+):end -->\n`)
	valueRE   = regexp.MustCompile(`([0-9]+(?:\.[0-9]+)?)\s*(ns|µs|ms|s|[A-Za-z]+/s|ops/s)?`)
	// A ratio or speed-up in prose: "0.83", "1.07", "27.0x" or "1.08×".
	proseRatioRE = regexp.MustCompile(`\b[0-9]+\.[0-9]+\s*[×x]\b|\b[0-9]+\.[0-9]+×|\b[01]\.[0-9]{2}\b`)
)

// quantity reads the first number of a table cell with its unit: times
// as seconds (time true), anything else as it is.
func quantity(cell string) (v float64, time_ bool, ok bool) {
	m := valueRE.FindStringSubmatch(cell)
	if m == nil {
		return 0, false, false
	}
	v, _ = strconv.ParseFloat(m[1], 64)
	switch m[2] {
	case "ns", "µs", "ms", "s":
		d, err := time.ParseDuration(m[1] + m[2])
		if err != nil {
			return 0, false, false
		}
		return d.Seconds(), true, true
	}
	return v, false, true
}

// checkTables checks every table row of a generated section whose header
// has a ratio column: the ratio printed is the ratio of the two sides'
// values printed beside it (RatioRule).
func checkTables(name, body string) []string {
	var bad []string
	var header []string
	for _, l := range strings.Split(body, "\n") {
		if !strings.HasPrefix(l, "|") {
			header = nil
			continue
		}
		cells := strings.Split(strings.Trim(l, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if header == nil {
			header = cells
			continue
		}
		if strings.HasPrefix(cells[0], "---") {
			continue
		}
		ri := -1
		for i, h := range header {
			if strings.HasPrefix(strings.ToLower(h), "ratio") {
				ri = i
			}
		}
		if ri < 3 || len(cells) <= ri {
			continue
		}
		locus, lt, ok1 := quantity(cells[1])
		peer, pt, ok2 := quantity(strings.TrimSpace(cells[2][strings.Index(cells[2], ":")+1:]))
		printed, err := strconv.ParseFloat(strings.Trim(cells[ri], "* "), 64)
		if !ok1 || !ok2 || err != nil || lt != pt || locus == 0 || peer == 0 {
			bad = append(bad, fmt.Sprintf("%s: row %q: cannot read its values and ratio", name, cells[0]))
			continue
		}
		want := locus / peer
		if lt {
			want = peer / locus // times: above 1 is Locus faster
		}
		if math.Abs(printed-want) > 0.011+0.01*want {
			bad = append(bad, fmt.Sprintf("%s: row %q: ratio %s, but its values give %.2f (%s)", name, cells[0], cells[ri], want, RatioRule))
		}
		if strings.Contains(cells[ri], "*") {
			bad = append(bad, fmt.Sprintf("%s: row %q: a bolded ratio (no ratio is set apart from the others)", name, cells[0]))
		}
	}
	return bad
}

// TestResultsFileAgrees keeps bench/RESULTS.md honest: in each section a
// benchmark wrote, every ratio is the ratio of the values beside it; the
// prose outside those sections quotes no ratio (a number written by hand
// goes stale the next run; the generated reading under each table
// carries the numbers).
func TestResultsFileAgrees(t *testing.T) {
	b, err := os.ReadFile("../../bench/RESULTS.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, m := range sectionRE.FindAllStringSubmatch(s, -1) {
		if m[1] != m[3] {
			t.Errorf("section %q ends with %q's marker", m[1], m[3])
		}
		for _, bad := range checkTables(m[1], m[2]) {
			t.Error(bad)
		}
	}
	prose := sectionRE.ReplaceAllString(s, "")
	for i, l := range strings.Split(prose, "\n") {
		if r := proseRatioRE.FindString(l); r != "" {
			t.Errorf("RESULTS.md, hand-written line %d quotes a ratio (%q), which goes stale: say it in the generated reading, or without the number:\n%s", i+1, r, l)
		}
	}
}

func TestCheckTablesCatchesAStaleRatio(t *testing.T) {
	body := "| what | Locus | peer | ratio |\n|---|---|---|---|\n" +
		"| HTTP | 2190.2 MB/s | nginx: 2195.8 MB/s | **1.07** |\n" +
		"| Down, p50 | 227ms (n=90) | 6.129s (n=30) | 27.0 |\n"
	bad := checkTables("t", body)
	if len(bad) != 2 || !strings.Contains(bad[0], "give 1.00") || !strings.Contains(bad[1], "bolded") {
		t.Errorf("checkTables = %q, want the HTTP row's wrong and bolded ratio, and the p50 row passing", bad)
	}
}

func TestAlternateAndReading(t *testing.T) {
	var order []string
	for r := range 2 {
		Alternate(r, func() error { order = append(order, "locus"); return nil }, func() error { order = append(order, "peer"); return nil })
	}
	if strings.Join(order, " ") != "locus peer peer locus" {
		t.Errorf("order = %v, want Locus first in round 0, the peer first in round 1", order)
	}
	if got := Median([]float64{3, 1, 2, 10}); got != 2.5 {
		t.Errorf("Median = %v, want 2.5", got)
	}
	r := Reading("dnsmasq", []Row{{"DHCP", 0.54}, {"HTTP", 0.997}})
	if !strings.Contains(r, "at or above dnsmasq for HTTP (1.00)") || !strings.Contains(r, "below it for DHCP (0.54)") {
		t.Errorf("Reading = %q", r)
	}
}
