package proc

import (
	"fmt"
	"strconv"
	"strings"
)

// Layout of a cluster PID.
const (
	// PIDBits is the width of the local PID: the kernel's PID_MAX_LIMIT
	// on 64-bit is 1<<22.
	PIDBits = 22
	// MaxPID is the largest local PID a CPID holds.
	MaxPID = 1<<PIDBits - 1
	// MaxNode is the largest node number whose CPIDs fit an int32.
	MaxNode = 511
)

// CPID is node n's process pid as a cluster PID.
func CPID(node, pid int) int64 { return int64(node)<<PIDBits | int64(pid) }

// SplitCPID is the node and local PID of a cluster PID.
func SplitCPID(cpid int64) (node, pid int) {
	return int(cpid >> PIDBits), int(cpid & MaxPID)
}

// ParseCPID reads a cluster PID as a user writes it: "N:pid" (node N's
// local pid) or the CPID's decimal number. Node and PID must both be
// positive and in range.
func ParseCPID(s string) (node, pid int, err error) {
	if n, p, ok := strings.Cut(s, ":"); ok {
		node, err = strconv.Atoi(strings.TrimPrefix(n, "node"))
		if err != nil || node < 1 || node > MaxNode {
			return 0, 0, fmt.Errorf("cluster PID %q: node %q is not a node number (1-%d)", s, n, MaxNode)
		}
		pid, err = strconv.Atoi(p)
		if err != nil || pid < 1 || pid > MaxPID {
			return 0, 0, fmt.Errorf("cluster PID %q: %q is not a process ID (1-%d)", s, p, MaxPID)
		}
		return node, pid, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 1 {
		return 0, 0, fmt.Errorf("cluster PID %q: not a number, nor NODE:PID", s)
	}
	node, pid = SplitCPID(v)
	if node < 1 || node > MaxNode || pid < 1 {
		return 0, 0, fmt.Errorf("cluster PID %q: names no process of a node (node %d, pid %d); a CPID is node<<%d|pid, or write NODE:PID", s, node, pid, PIDBits)
	}
	return node, pid, nil
}

// FormatCPID is how a CPID prints: its number.
func FormatCPID(node, pid int) string { return strconv.FormatInt(CPID(node, pid), 10) }
