// Package pid1 is Locus's init: the cluster-aware PID 1 of every node.
//
// Boot is a list of named phases (early, network, join, root, runlevel);
// the tasks of a phase run in parallel and every phase logs
// "locus-init: phase <name> done in <ms>ms" on the console. Once the node
// reaches the cluster's run level init prints
// "locus-init: node <N> reached run level <L> in <S>s" (S counted from
// kernel start), then keeps a shell on the console, restarting it when it
// exits. PID 1 never returns: a failed phase is logged and the node drops
// to the same console shell (the emergency shell), still serving the QEMU
// exec channel when there is one.
package pid1

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/locus-ssi/locus/services/events"
	"github.com/locus-ssi/locus/services/locusd"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/images/layout"
)

// Node is the state of this node's init.
type Node struct {
	console io.Writer
	log     *slog.Logger
	cmdline Cmdline
	spec    *clusterspec.Spec
	procs   *Procs
	// feed is the node's event feed (services/events): init owns it for
	// the whole boot; locusd publishes to it through its socket.
	feed *events.Feed
	// daemon calls this node's locusd on its local socket, keeping its
	// connection between calls (init asks every second).
	daemon *locusd.Client
	// portWritten is the last event written to the QEMU event port.
	portWritten atomic.Uint64

	mu       sync.Mutex
	number   int
	hostname string
	iface    string
	addr     netip.Prefix
	runLevel int
	state    string
	rootDev  string
	stateDev string
	root     string // chroot of the node's processes; "" is the initramfs
	services []service
	// locusdCancel stops the node daemon; locusdDone is closed once it
	// has exited.
	locusdCancel context.CancelFunc
	locusdDone   chan struct{}
}

// Main is PID 1's entry point. It never returns.
func Main() {
	console := openConsole()
	defer func() {
		// A panic in PID 1 would panic the kernel: log it and keep the
		// console alive instead.
		if r := recover(); r != nil {
			fmt.Fprintf(console, "locus-init: panic: %v\n%s\n", r, debug.Stack())
			emergency(console)
		}
	}()
	// The kernel starts init with no PATH; commands init runs (and the
	// exec channel's) are looked up in the image's bin directories.
	for _, kv := range Env() {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	n := &Node{
		console: console,
		log:     slog.New(newConsoleHandler(console)),
		procs:   NewProcs(),
		feed:    events.NewFeed(0),
		daemon:  locusd.LocalClient(locusd.SocketPath),
		state:   "ComingUp",
	}
	ctx := context.Background()
	go n.procs.Reap(ctx)
	if err := n.boot(ctx); err != nil {
		n.publish(events.Event{Kind: events.PhaseFailed, Name: "boot", Error: err.Error()})
		fmt.Fprintf(console, "locus-init: boot failed: %v\nlocus-init: emergency shell on the console\n", err)
		n.setState("Failed")
	}
	n.consoleShell(ctx)
}

// boot runs the boot phases and announces the run level.
func (n *Node) boot(ctx context.Context) error {
	if err := mountPseudoFS(); err != nil {
		return fmt.Errorf("mount /proc /sys /dev: %w", err)
	}
	raw, _ := os.ReadFile("/proc/cmdline")
	c, err := ParseCmdline(string(raw))
	if err != nil {
		return err
	}
	n.cmdline = c
	specYAML, err := os.ReadFile("/" + layout.SpecPath)
	if err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	if n.spec, err = clusterspec.Parse("/"+layout.SpecPath, specYAML); err != nil {
		return err
	}
	go n.serveExec(ctx)
	go n.serveEventPort(ctx)
	if err := RunPhases(ctx, n.console, n.feed, n.phases()); err != nil {
		return err
	}
	n.setState("Up")
	up := uptime()
	n.publish(events.Event{Kind: events.RunLevelReached, Level: n.RunLevel(), Millis: int64(up * 1000)})
	fmt.Fprintf(n.console, "locus-init: node %d reached run level %d in %.1fs\n", n.Number(), n.RunLevel(), up)
	go n.follow(ctx)
	if n.cmdline.PowerOff {
		n.powerOff()
	}
	return nil
}

func (n *Node) phases() []Phase {
	return []Phase{
		{Name: "early", Tasks: []Task{{"mount", n.mountRun}, {"modules", n.loadModules}, {"entropy", n.seedEntropy}}},
		{Name: "network", Tasks: []Task{{"interconnect", n.interconnectUp}, {"initdisk", n.mountInitDisk}}},
		{Name: "join", Tasks: []Task{{"locusd", n.startLocusd}, {"join", n.joinCluster}, {"initnode", n.startInitNode}}},
		{Name: "root", Tasks: []Task{{"root", n.mountRoot}}},
		{Name: "runlevel", Tasks: []Task{{"climb", n.climbToRunLevel}}},
	}
}

// Number returns the node number, 0 before it is known.
func (n *Node) Number() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.number
}

// RunLevel returns the run level reached.
func (n *Node) RunLevel() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.runLevel
}

func (n *Node) setState(s string) {
	n.mu.Lock()
	n.state = s
	n.mu.Unlock()
	n.writeNodeFile()
	n.publish(events.Event{Kind: events.StateChanged, State: s})
}

// publish puts an event of init's on the node's feed.
func (n *Node) publish(e events.Event) {
	e.Source = events.SourceInit
	n.feed.Publish(e)
}

// NodeFile is what init tells locusd about this node, in /run/locus/node.json.
const NodeFile = "/run/locus/node.json"

func (n *Node) writeNodeFile() {
	n.mu.Lock()
	s := fmt.Sprintf(`{"node":%d,"hostname":%q,"cluster":%q,"iface":%q,"addr":%q,"runlevel":%d,"state":%q,"root":%q}`+"\n",
		n.number, n.hostname, n.clusterName(), n.iface, n.addr.String(), n.runLevel, n.state, n.root)
	n.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(NodeFile), 0o755); err != nil {
		n.log.Warn("write node file", "err", err)
		return
	}
	tmp := NodeFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err == nil {
		err = os.Rename(tmp, NodeFile)
		if err != nil {
			n.log.Warn("write node file", "err", err)
		}
	}
}

func (n *Node) clusterName() string {
	if n.spec == nil {
		return ""
	}
	return n.spec.Cluster.Name
}

// uptime returns seconds since the kernel started.
func uptime() float64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return f
}

// openConsole returns the console for init's own messages.
func openConsole() io.Writer {
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		return f
	}
	return os.Stdout
}

// emergency keeps PID 1 alive when nothing else can run.
func emergency(console io.Writer) {
	for {
		fmt.Fprintln(console, "locus-init: halted; nothing more to do")
		time.Sleep(time.Hour)
	}
}
