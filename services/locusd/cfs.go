package locusd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/locus-ssi/locus/internal/privsock"

	"github.com/locus-ssi/locus/services/events"

	"golang.org/x/sys/unix"

	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/services/cfs"
	"github.com/locus-ssi/locus/services/clms"
)

// startCFSRoles starts this node's parts of the cluster filesystem: the
// server (node 1), the relay the kernel mounts through (the other nodes,
// when the service can move), and the standby's takeover.
// done counts the cleanups that must finish before the daemon exits.
func startCFSRoles(ctx context.Context, cfg Config, m *clms.Member, done *sync.WaitGroup) error {
	if cfg.CFSExport != "" {
		if _, err := startCFS(ctx, cfg, cfg.CFSExport, m); err != nil {
			return err
		}
	}
	var relay *cfs.Relay
	if cfg.CFSRelay != "" {
		var err error
		if relay, err = startRelay(ctx, cfg); err != nil {
			return err
		}
	}
	if m == nil {
		return nil
	}
	var once sync.Once
	m.OnTransition(func(t clms.Transition) {
		if t.State != clms.Down || t.Node == cfg.Node() {
			return
		}
		if relay != nil && (t.Node == cfg.CFSServer || t.Node == cfg.standby()) {
			// The connection to a dead server would wait out TCP's
			// timeouts: drop it and dial the service address again.
			relay.Reconnect(fmt.Sprintf("node %d, which may serve CFS, is Down (transition %d)", t.Node, t.ID))
		}
		if cfg.CFSTakeover != "" && t.Node == cfg.CFSServer && !strings.HasSuffix(t.Reason, clms.ReasonFenced) {
			// Mounting a disk that a live node may still write would
			// corrupt it: without a fence there is no takeover.
			if strings.HasPrefix(t.Reason, "shut down") {
				cfg.Log.Info("cfs: the server shut down; a standby takes over only a failed, fenced server", "server", t.Node)
				return
			}
			cfg.Log.Error("cfs: the server is Down but was not fenced (no fence agent?); the standby does not take over", "server", t.Node, "reason", t.Reason)
			return
		}
		if cfg.CFSTakeover != "" && t.Node == cfg.CFSServer {
			// Transitions replayed while this node catches up are
			// history: take over only on a Down committed since this
			// boot joined (ComingUp is enough: the master may not have
			// taken this node Up yet when the server died).
			if !m.Live(t) {
				cfg.Log.Info("cfs: the server's Down transition is history; not taking over", "transition", t.ID)
				return
			}
			go once.Do(func() { takeOver(ctx, cfg, m, t, done) })
		}
	})
	return nil
}

// Node is this node's number (0 without membership).
func (cfg Config) Node() int {
	if cfg.CLMS == nil {
		return 0
	}
	return cfg.CLMS.Node
}

func (cfg Config) standby() int {
	if cfg.CFSTakeover != "" {
		return cfg.Node()
	}
	return -1
}

// takeOver makes this node, the standby, the CFS server after the
// master fenced the server's node and committed it Down (t): mount the
// shared disk's root partition (replaying its journal), serve it, and
// claim the service address. Clients' relays, told of the same
// transition, are dialing the address meanwhile.
func takeOver(ctx context.Context, cfg Config, m *clms.Member, t clms.Transition, done *sync.WaitGroup) {
	start := time.Now()
	log := cfg.Log.With("svc", "cfs")
	log.Info("cfs: the server is fenced and Down; taking the shared root over", "server", cfg.CFSServer, "transition", t.ID)
	dev := layout.FindPartition(cfg.CFSTakeover)
	if dev == "" {
		log.Error("cfs: cannot take over: no partition named "+cfg.CFSTakeover+" on this node (is the server's disk attached here?)", "server", cfg.CFSServer)
		return
	}
	// The server is fenced (off): the multi-mount protection block it
	// left need not be watched for the kernel's two check intervals
	// (22 s) to know nobody updates it; clear it, as tune2fs -E
	// clear_mmp would, and mount at once.
	if err := cfs.ClearMMP(dev); err != nil {
		log.Warn("cfs: cannot clear the fenced server's multi-mount protection block; the mount waits it out", "device", dev, "err", err)
	}
	if err := cfs.MountShared(dev, cfg.CFSTakeoverDir); err != nil {
		log.Error("cfs: cannot take over", "err", err)
		return
	}
	mounted := time.Since(start)
	served, err := startCFS(ctx, cfg, cfg.CFSTakeoverDir, m)
	if err != nil {
		log.Error("cfs: cannot take over", "err", err)
		unix.Unmount(cfg.CFSTakeoverDir, 0)
		return
	}
	if cfg.cfsMetrics != nil {
		cfg.cfsMetrics.TookOver()
	}
	if err := cfs.ClaimAddress(ctx, cfg.CFSIface, cfg.CFSService); err != nil {
		log.Error("cfs: serving, but clients cannot reach the service address", "err", err)
	}
	if cfg.NodeFile != "" {
		// Init reads it at shutdown: this node now serves the root, so
		// it goes last, as node 1 would have.
		if err := os.WriteFile(ServingFile(cfg.NodeFile), []byte(dev+"\n"), 0o644); err != nil {
			log.Warn("cfs: cannot tell init this node serves the root", "err", err)
		}
	}
	cfg.publish(events.Event{Source: events.SourceLocusd, Kind: events.RoleTaken, Name: events.RoleCFSServer,
		Subject: cfg.CFSServer, Transition: t.ID, Millis: time.Since(start).Milliseconds(), Detail: "took over from the fenced server"})
	log.Info("cfs: took the shared root over", "device", dev, "mount", cfg.CFSTakeoverDir, "service", cfg.CFSService.Addr().String(),
		"mounted_in", mounted.Round(time.Millisecond), "took", time.Since(start).Round(time.Millisecond))
	done.Add(1)
	context.AfterFunc(ctx, func() {
		defer done.Done()
		// The daemon stops (shutdown): what the standby mounted goes
		// back to the disk clean, once the server has let go of it.
		select {
		case <-served: // every client gone, the export's descriptors closed
		case <-time.After(10 * time.Second):
		}
		unix.Sync()
		how := "unmounted"
		if err := unix.Unmount(cfg.CFSTakeoverDir, 0); err != nil {
			how = "remounted read-only"
			if err := unix.Mount("", cfg.CFSTakeoverDir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				log.Error("cfs: the shared root is still mounted read-write", "err", err)
				return
			}
		}
		log.Info("cfs: shared root "+how+": clean", "device", dev)
	})
}

// ServingFile is where the daemon records, beside init's node file, that
// this node took the CFS service over (its content: the device).
func ServingFile(nodeFile string) string {
	return filepath.Join(filepath.Dir(nodeFile), "cfs-serving")
}

// startCFS serves dir until ctx ends. A connection is admitted when it
// comes from the address of a node in the membership table that is not
// Down (without membership: from loopback only). With a movable service
// address, the server claims it. The channel is closed once serving has
// stopped and the export let go of dir.
func startCFS(ctx context.Context, cfg Config, dir string, m *clms.Member) (<-chan struct{}, error) {
	export, err := cfs.NewExport(dir)
	if err != nil {
		return nil, fmt.Errorf("locusd: %w", err)
	}
	listen := cfg.CFSListen
	if listen == "" {
		listen = ":" + strconv.Itoa(cfs.DefaultPort)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		export.Close()
		return nil, fmt.Errorf("locusd: cfs: listen on %s: %w", listen, err)
	}
	allow := func(a netip.Addr) bool {
		if m == nil {
			return a.IsLoopback()
		}
		return admittedAddr(m.Status(), a)
	}
	srv := cfs.NewServer(export, allow, cfg.Log.With("svc", "cfs"))
	if cfg.cfsMetrics != nil {
		srv.SetMetrics(cfg.cfsMetrics)
	}
	if m != nil {
		// Only root on an admitted node: the kernel client mounts with
		// privport, relays dial from a reserved port.
		srv.RequirePrivilegedPort()
		// A node taken Down, fenced or not, writes nothing more: its
		// connections close as the transition is applied.
		m.OnTransition(func(t clms.Transition) {
			if t.State != clms.Down {
				return
			}
			addr, ok := m.Status().NodeIP(t.Node)
			if !ok {
				return
			}
			if n := srv.DropFrom(addr); n > 0 {
				cfg.Log.Warn("cfs: closed the connections of a Down node", "node", t.Node, "addr", addr.String(), "connections", n, "transition", t.ID)
			}
		})
	}
	cfg.Log.Info("cfs: serving the shared root", "export", dir, "addr", ln.Addr().String())
	cfg.publish(events.Event{Source: events.SourceLocusd, Kind: events.ServiceStarted, Name: events.ServiceCFS, Detail: ln.Addr().String()})
	served := make(chan struct{})
	go func() {
		defer close(served)
		defer export.Close()
		if err := srv.Serve(ctx, ln); err != nil {
			cfg.Log.Error("cfs stopped", "err", err)
		}
		cfg.publish(events.Event{Source: events.SourceLocusd, Kind: events.ServiceStopped, Name: events.ServiceCFS})
	}()
	if cfg.CFSService.IsValid() && cfg.CFSExport == dir && cfg.CFSIface != "" {
		if err := cfs.ClaimAddress(ctx, cfg.CFSIface, cfg.CFSService); err != nil {
			return served, fmt.Errorf("locusd: %w", err)
		}
		cfg.Log.Info("cfs: service address claimed", "addr", cfg.CFSService.String(), "iface", cfg.CFSIface)
	}
	return served, nil
}

// startRelay takes the kernel's FUSE mount of the shared root from init
// on cfg.CFSRelay and relays it to the CFS service.
func startRelay(ctx context.Context, cfg Config) (*cfs.Relay, error) {
	service := net.JoinHostPort(cfg.CFSService.Addr().String(), strconv.Itoa(cfs.DefaultPort))
	relay := cfs.NewRelay(func(ctx context.Context) (net.Conn, error) {
		// From this node's own address, the one the server admits (once
		// the service address is this node's, the kernel would pick
		// that), and a privileged port: the server serves only root.
		c, err := cfs.DialPrivileged(ctx, cfg.CFSLocal, service)
		if err != nil {
			return nil, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
			// A server that stops answering mid-request is given up on
			// in seconds, not TCP's quarter of an hour.
			if raw, err := tc.SyscallConn(); err == nil {
				raw.Control(func(fd uintptr) {
					unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 5000)
				})
			}
			tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: time.Second, Count: 3})
		}
		return c, nil
	}, cfg.Log.With("svc", "cfs-relay"))
	relay.SetPatience(cfg.CFSPatience)
	if cfg.cfsMetrics != nil {
		cfg.cfsMetrics.WatchRelay(relay)
	}
	// Init mounts the shared root over FUSE and hands the connection to
	// the relay here (cfs.HandOff). The socket's directory is root's
	// alone: only init (root) hands mounts over.
	ln, err := privsock.Listen(cfg.CFSRelay)
	if err != nil {
		return nil, fmt.Errorf("locusd: cfs relay: listen on %s: %w", cfg.CFSRelay, err)
	}
	cfg.Log.Info("cfs: relay taking the shared root's FUSE mount", "addr", ln.Addr().String(), "service", service)
	cfg.publish(events.Event{Source: events.SourceLocusd, Kind: events.ServiceStarted, Name: events.ServiceCFSRelay, Detail: service})
	context.AfterFunc(ctx, relay.Close)
	go func() {
		if err := relay.ServeHandOffs(ctx, ln.(*net.UnixListener)); err != nil {
			cfg.Log.Error("cfs relay: FUSE hand-offs stopped", "err", err)
		}
	}()
	return relay, nil
}
