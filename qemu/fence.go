package qemu

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/locus-ssi/locus/services/fence"
)

// FencePortName is the virtio-serial port through which a VM asks the
// host to power VMs of its cluster off or on: the cluster's virtual BMC,
// what IPMI is to a rack. Only the VM itself can write to its port, so a
// request's origin is known.
const FencePortName = fence.QEMUPortName

func fencePath(dir string) string { return filepath.Join(dir, "fence.sock") }

// serveFence answers vm's fence requests until it exits. One request per
// line, "<action> <node>" with action off, on, reboot or status; one
// reply per line: "ok", "on", "off", or "error: <why>".
func (c *Cluster) serveFence(vm *VM, log *slog.Logger) {
	var conn net.Conn
	for conn == nil {
		var err error
		conn, err = net.Dial("unix", fencePath(vm.dir))
		if err == nil {
			break
		}
		select {
		case <-vm.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	go func() { <-vm.Done(); conn.Close() }()
	defer conn.Close()
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		start := time.Now()
		reply := c.fence(vm.cfg.Number, sc.Text())
		log.Info("fence request", "from", vm.cfg.Number, "request", sc.Text(), "reply", reply, "took", time.Since(start).Round(time.Millisecond))
		if _, err := fmt.Fprintln(conn, reply); err != nil {
			return
		}
	}
}

// fence carries out one fence request from node from.
func (c *Cluster) fence(from int, line string) string {
	f := strings.Fields(line)
	if len(f) != 2 {
		return "error: want <off|on|reboot|status> <node>"
	}
	n, err := strconv.Atoi(f[1])
	if _, ok := c.nodeConfig(n); err != nil || !ok {
		return fmt.Sprintf("error: no node %q in cluster %s", f[1], c.cfg.Name)
	}
	running := func() bool {
		vm := c.VM(n)
		if vm == nil {
			return false
		}
		select {
		case <-vm.Done():
			return false
		default:
			return true
		}
	}
	switch f[0] {
	case "status":
		if running() {
			return "on"
		}
		return "off"
	case "off", "reboot":
		if running() {
			if err := c.Kill(n); err != nil {
				return "error: " + err.Error()
			}
			if vm := c.VM(n); vm != nil {
				select {
				case <-vm.Done():
				case <-time.After(10 * time.Second):
					return fmt.Sprintf("error: node %d still running 10s after power-off", n)
				}
			}
		}
		if f[0] == "off" {
			return "ok"
		}
		fallthrough
	case "on":
		if running() {
			return "ok"
		}
		if _, err := c.Start(n); err != nil {
			return "error: " + err.Error()
		}
		return "ok"
	}
	return fmt.Sprintf("error: action %q: want off, on, reboot or status", f[0])
}
