package locusd

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/services/cfs"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/fence"
)

// NodeOptions is what init tells the daemon about this node beyond the
// spec: its interconnect MAC and bootstrap secret (admission), where the
// cluster CA lives (the init node) and whom to ask for a certificate.
type NodeOptions struct {
	MAC    string
	Secret string
	// CADir, on the init node, keeps the cluster CA; the node admits
	// others.
	CADir string
	// Admitter is the init node's daemon (host:port); default: node 1 of
	// the spec.
	Admitter string
	// IdentityFile is the node's given credential (no admission).
	IdentityFile string
	// CAPin is the cluster CA the admitter must present (sha256:<hex>).
	CAPin string
}

// ConfigureNode gives the daemon its roles in the cluster from the spec:
// the membership service mc (fencing, run level, quorum options,
// self-fencing), its ICS identity and admission, and its part in an
// HA-CFS root. cfg.CLMS and cfg.ICS are set; mc.Node must be set.
func ConfigureNode(cfg *Config, mc *clms.Config, spec *clusterspec.Spec, o NodeOptions, log *slog.Logger) error {
	if agent := fence.AgentFor(spec.Fencing.Agent, time.Duration(spec.Fencing.TimeoutSeconds)*time.Second); agent != nil {
		mc.Fence = func(ctx context.Context, node int) error {
			_, err := agent.Run(ctx, spec.FenceAction(node), node)
			return err
		}
		log.Info("fencing", "agent", strings.Join(agent.Argv, " "), "action", cmp.Or(spec.Fencing.Action, "reboot (off for the nodes of an HA-CFS disk)"))
	} else {
		log.Warn("no fence agent: a failed node is taken Down without being powered off (set fencing.agent in the spec)")
	}
	mc.RunLevel = spec.RunLevel
	mc.WaitForAll = spec.WaitForAll()
	mc.TwoNode = spec.Membership.TwoNode
	if spec.Fencing.SelfFenceSeconds > 0 {
		mc.SelfFenceAfter = time.Duration(spec.Fencing.SelfFenceSeconds) * time.Second
		mc.SelfFence = func() {
			// Cut off from the majority: stop now, before the majority's
			// fence does, so nothing more is written.
			unix.Sync()
			unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
		}
	}
	cfg.CLMS = mc
	ic := &ICSConfig{Node: mc.Node, Addr: mc.Addr, MAC: o.MAC, Secret: o.Secret,
		CADir: o.CADir, Admitter: o.Admitter, IdentityFile: o.IdentityFile, CAPin: o.CAPin, NetbootAdmin: cfg.NetbootAdmin, Spec: spec}
	if ic.Admitter == "" && o.CADir == "" && o.IdentityFile == "" {
		if p, err := spec.NodeAddr(1); err == nil {
			ic.Admitter = net.JoinHostPort(p.Addr().String(), strconv.Itoa(DefaultPort))
		}
	}
	cfg.ICS = ic
	return configureCFS(cfg, spec, mc)
}

// configureCFS gives the daemon its part in a CFS root: every node but
// node 1 mounts the shared root through its relay. If it fails over
// (root.cfs.standby), node 1 claims the service address with the
// service and the standby watches for node 1's fencing to take the
// service over; the relays follow the address.
func configureCFS(cfg *Config, spec *clusterspec.Spec, mc *clms.Config) error {
	if spec.Root.Source != clusterspec.RootCFS {
		return nil
	}
	svc, moves, err := spec.CFSService()
	if err != nil {
		return err
	}
	local, err := netip.ParseAddr(mc.Addr)
	if err != nil {
		return fmt.Errorf("locusd: cluster address %q: %w", mc.Addr, err)
	}
	cfg.CFSService, cfg.CFSServer = svc, 1
	if mc.Node != 1 {
		// Every client mounts the shared root through its relay (init
		// hands it the FUSE mount).
		cfg.CFSRelay, cfg.CFSLocal = cfs.FUSESocket, local
		if cfg.CFSPatience, err = spec.Root.CFS.Wait(); err != nil {
			return fmt.Errorf("locusd: root.cfs.patience: %w", err)
		}
	}
	if !moves {
		return nil
	}
	// The service address moves: whichever node serves claims it.
	if cfg.CFSIface, err = ifaceWith(local); err != nil {
		return err
	}
	if mc.Node == spec.Root.CFS.Standby {
		cfg.CFSTakeover, cfg.CFSTakeoverDir = layout.RootName, CFSTakeoverDir
	}
	return nil
}

// CFSTakeoverDir is where the standby mounts the shared root's partition
// when it takes the service over: where node 1 has it.
const CFSTakeoverDir = "/media/locus-root"

// ifaceWith names the interface that has address a.
func ifaceWith(a netip.Addr) (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, i := range ifs {
		addrs, _ := i.Addrs()
		for _, ad := range addrs {
			if p, err := netip.ParsePrefix(ad.String()); err == nil && p.Addr() == a {
				return i.Name, nil
			}
		}
	}
	return "", fmt.Errorf("locusd: no interface has the interconnect address %s", a)
}
