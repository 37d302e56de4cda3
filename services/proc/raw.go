package proc

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// RawNode is what a node's /proc says, as the clusterwide /proc needs
// it: its own files and every process's, unparsed.
type RawNode struct {
	Node    int       `json:"node"`
	Btime   int64     `json:"btime"`
	Stat    []byte    `json:"stat"`
	Meminfo []byte    `json:"meminfo"`
	Loadavg []byte    `json:"loadavg"`
	Uptime  []byte    `json:"uptime"`
	Cpuinfo []byte    `json:"cpuinfo"`
	Procs   []RawProc `json:"procs"`
}

// RawProc is one process's files.
type RawProc struct {
	PID     int    `json:"pid"`
	Stat    []byte `json:"stat"`
	Status  []byte `json:"status"`
	Cmdline []byte `json:"cmdline,omitempty"`
	Statm   []byte `json:"statm"`
}

// Raw reads the node's /proc.
func (h *Host) Raw() (RawNode, error) {
	rd := func(name string) []byte {
		b, _ := os.ReadFile(filepath.Join(h.ProcDir, name))
		return b
	}
	r := RawNode{Node: h.Node, Btime: h.btime, Stat: rd("stat"), Meminfo: rd("meminfo"), Loadavg: rd("loadavg"),
		Uptime: rd("uptime"), Cpuinfo: rd("cpuinfo")}
	ents, err := os.ReadDir(h.ProcDir)
	if err != nil {
		return RawNode{}, fmt.Errorf("proc: %w", err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid < 1 {
			continue
		}
		if p, ok := h.rawProc(pid); ok {
			r.Procs = append(r.Procs, p)
		}
	}
	slices.SortFunc(r.Procs, func(a, b RawProc) int { return a.PID - b.PID })
	return r, nil
}

func (h *Host) rawProc(pid int) (RawProc, bool) {
	dir := filepath.Join(h.ProcDir, strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return RawProc{}, false
	}
	p := RawProc{PID: pid, Stat: stat}
	p.Status, _ = os.ReadFile(filepath.Join(dir, "status"))
	p.Cmdline, _ = os.ReadFile(filepath.Join(dir, "cmdline"))
	p.Statm, _ = os.ReadFile(filepath.Join(dir, "statm"))
	return p, true
}

// clusterTime puts a node's process start times on the cluster's
// clock: ticks since the cluster's boot (the earliest node's).
type clusterTime struct {
	btime int64 // the cluster's: the earliest node's boot
}

// shift is how many ticks to add to node's start times.
func (c clusterTime) shift(nodeBtime int64) int64 { return (nodeBtime - c.btime) * clockTicks }

// rewriteStat rewrites a process's stat for the clusterwide /proc: its
// PIDs (pid, ppid, pgrp, session, tpgid) to cluster PIDs of node, its
// start time by shift ticks, and, for another node's process, its
// terminal to none (its name means nothing here).
func rewriteStat(b []byte, node int, shift int64, remote bool) ([]byte, error) {
	close := bytes.LastIndexByte(b, ')')
	if close < 0 {
		return nil, fmt.Errorf("stat without (comm)")
	}
	open := bytes.IndexByte(b, '(')
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return nil, fmt.Errorf("stat pid: %w", err)
	}
	f := strings.Fields(string(b[close+1:]))
	if len(f) < 20 {
		return nil, fmt.Errorf("stat: %d fields after comm", len(f))
	}
	// field k (1-based) is f[k-3]
	cp := func(k int) {
		if v, err := strconv.Atoi(f[k-3]); err == nil && v > 0 {
			f[k-3] = FormatCPID(node, v)
		}
	}
	for _, k := range []int{4, 5, 6, 8} {
		cp(k)
	}
	if remote {
		f[7-3] = "0"
		f[8-3] = "-1"
	}
	if st, err := strconv.ParseInt(f[22-3], 10, 64); err == nil {
		f[22-3] = strconv.FormatInt(st+shift, 10)
	}
	var out bytes.Buffer
	out.WriteString(FormatCPID(node, pid))
	out.WriteString(" ")
	out.Write(b[open : close+1])
	out.WriteString(" ")
	out.WriteString(strings.Join(f, " "))
	out.WriteString("\n")
	return out.Bytes(), nil
}

// rewriteStatus rewrites the PID lines of a process's status to cluster
// PIDs of node.
func rewriteStatus(b []byte, node int) []byte {
	var out bytes.Buffer
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		switch k {
		case "Tgid", "Pid", "PPid", "TracerPid", "NSpid", "NStgid", "NSpgid", "NSsid":
			if ok {
				var vs []string
				for _, x := range strings.Fields(v) {
					if n, err := strconv.Atoi(x); err == nil && n > 0 {
						x = FormatCPID(node, n)
					}
					vs = append(vs, x)
				}
				out.WriteString(k + ":\t" + strings.Join(vs, "\t") + "\n")
				continue
			}
		}
		out.WriteString(line)
	}
	return out.Bytes()
}

// ids is the effective uid and gid a process's status gives.
func ids(status []byte) (uint32, uint32) {
	var uid, gid uint32
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(v); len(f) > 1 {
				n, _ := strconv.ParseUint(f[1], 10, 32)
				uid = uint32(n)
			}
		}
		if v, ok := strings.CutPrefix(line, "Gid:"); ok {
			if f := strings.Fields(v); len(f) > 1 {
				n, _ := strconv.ParseUint(f[1], 10, 32)
				gid = uint32(n)
			}
		}
	}
	return uid, gid
}

// aggregateStat is the cluster's /proc/stat (Kerrighed's rules): the
// cpu line summed, cpuN lines renumbered node by node, counters summed,
// btime the earliest.
func aggregateStat(nodes []RawNode, btime int64) []byte {
	var cpu []int64
	var cpus []string
	sums := map[string][]int64{}
	var order []string
	ncpu := 0
	for _, n := range nodes {
		for line := range strings.Lines(string(n.Stat)) {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			switch {
			case f[0] == "cpu":
				cpu = addVec(cpu, f[1:])
			case strings.HasPrefix(f[0], "cpu"):
				cpus = append(cpus, "cpu"+strconv.Itoa(ncpu)+" "+strings.Join(f[1:], " "))
				ncpu++
			case f[0] == "btime":
			default:
				if _, ok := sums[f[0]]; !ok {
					order = append(order, f[0])
				}
				sums[f[0]] = addVec(sums[f[0]], f[1:])
			}
		}
	}
	var out bytes.Buffer
	out.WriteString("cpu  " + joinVec(cpu) + "\n")
	for _, c := range cpus {
		out.WriteString(c + "\n")
	}
	for _, k := range order {
		out.WriteString(k + " " + joinVec(sums[k]) + "\n")
		if k == "ctxt" {
			out.WriteString("btime " + strconv.FormatInt(btime, 10) + "\n")
		}
	}
	if !slices.Contains(order, "ctxt") {
		out.WriteString("btime " + strconv.FormatInt(btime, 10) + "\n")
	}
	return out.Bytes()
}

func addVec(v []int64, fs []string) []int64 {
	for i, s := range fs {
		n, _ := strconv.ParseInt(s, 10, 64)
		if i < len(v) {
			v[i] += n
		} else {
			v = append(v, n)
		}
	}
	return v
}

func joinVec(v []int64) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.FormatInt(n, 10)
	}
	return strings.Join(s, " ")
}

// aggregateMeminfo sums every field.
func aggregateMeminfo(nodes []RawNode) []byte {
	sums := map[string]int64{}
	var order []string
	unit := map[string]string{}
	for _, n := range nodes {
		for line := range strings.Lines(string(n.Meminfo)) {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			f := strings.Fields(v)
			if len(f) == 0 {
				continue
			}
			x, _ := strconv.ParseInt(f[0], 10, 64)
			if _, seen := sums[k]; !seen {
				order = append(order, k)
				if len(f) > 1 {
					unit[k] = " " + f[1]
				}
			}
			sums[k] += x
		}
	}
	var out bytes.Buffer
	for _, k := range order {
		fmt.Fprintf(&out, "%-15s %8d%s\n", k+":", sums[k], unit[k])
	}
	return out.Bytes()
}

// aggregateLoadavg sums the averages and the task counts.
func aggregateLoadavg(nodes []RawNode) []byte {
	var avg [3]float64
	var running, total, last int
	for _, n := range nodes {
		f := strings.Fields(string(n.Loadavg))
		if len(f) < 5 {
			continue
		}
		for i := range 3 {
			x, _ := strconv.ParseFloat(f[i], 64)
			avg[i] += x
		}
		r, t, _ := strings.Cut(f[3], "/")
		a, _ := strconv.Atoi(r)
		b, _ := strconv.Atoi(t)
		running, total = running+a, total+b
		if l, err := strconv.Atoi(f[4]); err == nil {
			last = max(last, int(CPID(n.Node, l)))
		}
	}
	return fmt.Appendf(nil, "%.2f %.2f %.2f %d/%d %d\n", avg[0], avg[1], avg[2], running, total, last)
}

// aggregateUptime is the cluster's uptime (since the earliest node's
// boot) and the idle time summed.
func aggregateUptime(nodes []RawNode, btime, now int64) []byte {
	var idle float64
	for _, n := range nodes {
		if f := strings.Fields(string(n.Uptime)); len(f) > 1 {
			x, _ := strconv.ParseFloat(f[1], 64)
			idle += x
		}
	}
	return fmt.Appendf(nil, "%.2f %.2f\n", float64(now-btime), idle)
}

// aggregateCpuinfo lists every node's CPUs, renumbered.
func aggregateCpuinfo(nodes []RawNode) []byte {
	var out bytes.Buffer
	i := 0
	for _, n := range nodes {
		for line := range strings.Lines(string(n.Cpuinfo)) {
			if k, _, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "processor" {
				fmt.Fprintf(&out, "processor\t: %d\n", i)
				i++
				continue
			}
			out.WriteString(line)
		}
	}
	return out.Bytes()
}
