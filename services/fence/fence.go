// Package fence powers failed nodes off before the cluster takes them
// Down (STONITH), the way Pacemaker drives fence-agents: an agent is a
// command given its options on standard input, one key=value per line
// (action=off, plug=<node>), whose exit status says what happened (0:
// done, or for status "on"; 2: status "off"; anything else: failed).
//
// On a Locus QEMU cluster the agent is `locus fence`, which asks the
// host's supervisor through the VM's org.locus.fence virtio-serial port:
// a virtual BMC.
package fence

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/locus-ssi/locus/internal/virtioport"
)

// Actions an agent is asked for.
const (
	ActionOff    = "off"
	ActionOn     = "on"
	ActionReboot = "reboot"
	ActionStatus = "status"
)

// ExitOff is the status exit code of a node that is powered off.
const ExitOff = 2

// Agent is a fence-agent command.
type Agent struct {
	Argv    []string
	Timeout time.Duration
}

// Run asks the agent to apply action to node; for ActionStatus it reports
// whether the node is on.
func (a Agent) Run(ctx context.Context, action string, node int) (on bool, err error) {
	if len(a.Argv) == 0 {
		return false, errors.New("fence: no agent")
	}
	if a.Timeout == 0 {
		a.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, a.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.Argv[0], a.Argv[1:]...)
	cmd.Stdin = strings.NewReader(fmt.Sprintf("action=%s\nplug=%d\nport=%d\nnodename=node%d\n", action, node, node, node))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case action == ActionStatus && errors.As(err, &ee) && ee.ExitCode() == ExitOff:
		return false, nil
	case ctx.Err() != nil:
		return false, fmt.Errorf("fence: %s node %d with %s: no answer within %s", action, node, a.Argv[0], a.Timeout)
	}
	return false, fmt.Errorf("fence: %s node %d with %s: %v: %s", action, node, a.Argv[0], err, strings.TrimSpace(out.String()))
}

// Options are a fence request as fence-agents take it.
type Options struct {
	Action string
	Plug   int
}

// ParseOptions reads fence-agents options (key=value lines; blank lines
// and # comments ignored; unknown keys ignored, as agents do).
func ParseOptions(data []byte) (Options, error) {
	var o Options
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return o, fmt.Errorf("fence: options line %d: %q is not key=value", line, l)
		}
		switch strings.TrimSpace(k) {
		case "action", "option": // "option" is the old name
			o.Action = strings.TrimSpace(v)
		case "plug", "port":
			n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(v), "node"))
			if err != nil || n < 1 {
				return o, fmt.Errorf("fence: options line %d: plug %q is not a node number", line, v)
			}
			o.Plug = n
		}
	}
	if err := sc.Err(); err != nil {
		return o, fmt.Errorf("fence: options: %w", err)
	}
	return o, nil
}

// QEMUPortName is the virtio-serial port of a Locus QEMU VM through
// which it asks the host's supervisor, its virtual BMC, to power nodes of
// its cluster off or on.
const QEMUPortName = "org.locus.fence"

// AgentFor is the membership master's fence agent: argv (the spec's
// fencing.agent) if given, else `locus fence` through the virtual BMC on
// a Locus QEMU VM, else none (nil).
func AgentFor(argv []string, timeout time.Duration) *Agent {
	if len(argv) > 0 {
		return &Agent{Argv: argv, Timeout: timeout}
	}
	if virtioport.Find(QEMUPortName) != "" {
		if self, err := os.Executable(); err == nil {
			return &Agent{Argv: []string{self, "fence"}, Timeout: timeout}
		}
	}
	return nil
}

// QEMU sends one request to the virtual BMC on device (the VM's
// org.locus.fence port) and returns its reply.
func QEMU(ctx context.Context, device, action string, node int) (string, error) {
	f, err := os.OpenFile(device, os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("fence: virtual BMC %s: %w", device, err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s %d\n", action, node); err != nil {
		return "", fmt.Errorf("fence: virtual BMC %s: %w", device, err)
	}
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(f).ReadString('\n')
		ch <- result{strings.TrimSpace(line), err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return "", fmt.Errorf("fence: virtual BMC %s: %w", device, r.err)
		}
		if msg, ok := strings.CutPrefix(r.line, "error: "); ok {
			return "", fmt.Errorf("fence: virtual BMC: %s", msg)
		}
		return r.line, nil
	case <-ctx.Done():
		f.Close() // ends the reader
		return "", fmt.Errorf("fence: virtual BMC %s: %w", device, ctx.Err())
	}
}
