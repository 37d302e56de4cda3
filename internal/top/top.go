// Package top is `locus top`: the whole cluster in one terminal view,
// refreshed every second. The nodes (state, role, run level, load,
// memory) and the busiest processes clusterwide, by cluster PID. Render
// draws a snapshot at any width (a narrow terminal gets the columns
// that fit).
package top

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/proc"
)

// Snapshot is the cluster at one moment.
type Snapshot struct {
	At     time.Time
	Status clms.Status
	Loads  []proc.Load
	Procs  []proc.Process
	// Unreachable are nodes whose processes did not come.
	Unreachable []string
}

// Sorts.
const (
	SortCPU = "cpu"
	SortMem = "mem"
	SortPID = "cpid"
)

// View is what the user chose to see.
type View struct {
	Sort string // SortCPU (default), SortMem, SortPID
	Node int    // 0: every node
	// Selected is the marked process's row, among those shown (-1:
	// none).
	Selected int
}

// Shown are the processes the view shows, in its order.
func (v View) Shown(s Snapshot) []proc.Process {
	var out []proc.Process
	for _, p := range s.Procs {
		if v.Node == 0 || p.Node == v.Node {
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(a, b proc.Process) int {
		switch v.Sort {
		case SortMem:
			return cmpDesc(float64(a.RSS), float64(b.RSS), a.CPID, b.CPID)
		case SortPID:
			return int(a.CPID - b.CPID)
		default:
			return cmpDesc(a.CPU, b.CPU, a.CPID, b.CPID)
		}
	})
	return out
}

func cmpDesc(a, b float64, ta, tb int64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return int(ta - tb)
}

// column is one column of a table: its header, width, and whether it
// may be dropped (right to left) when the terminal is narrow.
type column struct {
	head  string
	width int
	cell  func(i int) string
}

// table lays out rows in width columns of terminal, dropping the last
// columns that do not fit (the first always stays, cut to fit).
func table(cols []column, rows, width int) []string {
	used, keep := 0, 0
	for i, c := range cols {
		if i > 0 && used+1+c.width > width {
			break
		}
		used += c.width + 1
		keep = i + 1
	}
	cols = cols[:max(keep, 1)]
	line := func(cell func(c column) string) string {
		var b strings.Builder
		for i, c := range cols {
			s := cell(c)
			if i == len(cols)-1 {
				b.WriteString(s)
			} else {
				fmt.Fprintf(&b, "%-*s ", c.width, cut(s, c.width))
			}
		}
		return cut(b.String(), width)
	}
	out := []string{line(func(c column) string { return c.head })}
	for r := range rows {
		out = append(out, line(func(c column) string { return c.cell(r) }))
	}
	return out
}

func cut(s string, n int) string {
	if n <= 0 {
		return ""
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n])
}

// Render draws s for a terminal width columns wide and height lines
// high (0: no limit): a header line, the nodes, the processes.
func Render(s Snapshot, v View, width, height int) string {
	if width <= 0 {
		width = 80
	}
	var lines []string
	st := s.Status
	head := fmt.Sprintf("locus top  %s  master node %d, term %d, run level %d", s.At.Local().Format("15:04:05"), st.Master, st.Term, st.RunLevel)
	if !st.Quorum {
		head += ", NO QUORUM"
	}
	lines = append(lines, cut(head, width))
	loads := map[int]proc.Load{}
	for _, l := range s.Loads {
		loads[l.Node] = l
	}
	nodes := slices.Clone(st.Nodes)
	slices.SortFunc(nodes, func(a, b clms.NodeStatus) int { return a.Node - b.Node })
	role := func(n clms.NodeStatus) string {
		switch {
		case n.Node == st.Master:
			return "master"
		case n.Voter:
			return "voter"
		}
		return "member"
	}
	num := func(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) }
	lines = append(lines, table([]column{
		{"NODE", 4, func(i int) string { return strconv.Itoa(nodes[i].Node) }},
		{"STATE", 12, func(i int) string { return string(nodes[i].State) }},
		{"ROLE", 6, func(i int) string { return role(nodes[i]) }},
		{"LOAD", 5, func(i int) string {
			if l, ok := loads[nodes[i].Node]; ok {
				return num(l.Mean)
			}
			return "-"
		}},
		{"RUNQ", 5, func(i int) string {
			if l, ok := loads[nodes[i].Node]; ok {
				return num(l.RunQ)
			}
			return "-"
		}},
		{"CPUS", 4, func(i int) string {
			if l, ok := loads[nodes[i].Node]; ok {
				return strconv.Itoa(l.NCPU)
			}
			return "-"
		}},
		{"MEM USED", 9, func(i int) string {
			if l, ok := loads[nodes[i].Node]; ok && l.MemTotal > 0 {
				return fmt.Sprintf("%d%%", 100*(l.MemTotal-l.MemFree)/l.MemTotal)
			}
			return "-"
		}},
		{"PROCS", 5, func(i int) string {
			if l, ok := loads[nodes[i].Node]; ok {
				return strconv.Itoa(l.Procs)
			}
			return "-"
		}},
	}, len(nodes), width)...)
	filter := "every node"
	if v.Node != 0 {
		filter = fmt.Sprintf("node %d", v.Node)
	}
	lines = append(lines, "", cut(fmt.Sprintf("processes of %s by %s", filter, orDefault(v.Sort, SortCPU)), width))
	if len(s.Unreachable) > 0 {
		lines = append(lines, cut("not answering: "+strings.Join(s.Unreachable, ", "), width))
	}
	ps := v.Shown(s)
	if height > 0 {
		ps = ps[:min(len(ps), max(height-len(lines)-1, 0))]
	}
	rows := table([]column{
		{"CPID", 9, func(i int) string { return mark(i == v.Selected) + strconv.FormatInt(ps[i].CPID, 10) }},
		{"NODE", 4, func(i int) string { return strconv.Itoa(ps[i].Node) }},
		{"PID", 6, func(i int) string { return strconv.Itoa(ps[i].PID) }},
		{"USER", 8, func(i int) string { return ps[i].User }},
		{"S", 1, func(i int) string { return ps[i].State }},
		{"%CPU", 5, func(i int) string { return strconv.FormatFloat(ps[i].CPU, 'f', 1, 64) }},
		{"RSS", 7, func(i int) string { return strconv.FormatInt(ps[i].RSS, 10) }},
		{"COMMAND", 20, func(i int) string {
			if len(ps[i].Args) > 0 {
				return strings.Join(ps[i].Args, " ")
			}
			return "[" + ps[i].Comm + "]"
		}},
	}, len(ps), width)
	lines = append(lines, rows...)
	return strings.Join(lines, "\n") + "\n"
}

func mark(selected bool) string {
	if selected {
		return ">"
	}
	return " "
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
