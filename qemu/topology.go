package qemu

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/locus-ssi/locus/images/clusterspec"
	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/services/locusd"
)

// Topology is what a cluster of VMs is made from: a built image and how
// many nodes, with what.
type Topology struct {
	// ImageDir is the directory `locus image build` wrote.
	ImageDir string
	// StateDir is the cluster's state directory (VM files, logs).
	StateDir string
	Nodes    int
	Accel    string
	MemoryMB int
	// APIPort is the host port forwarded to node 1's daemon (installed
	// topology only).
	APIPort int
	// DataDisk, if set, is a raw disk image attached to every node
	// (share-rw, as a SAN LUN every machine sees), for a cluster
	// filesystem of the user's (GFS2 under the nodes' DLM); installed
	// topology, and not with a GFS2 root, which takes that place.
	DataDisk string
}

// DirectTopology describes a direct-boot cluster from the image: every
// node boots the built kernel and initramfs with a static address and
// the MAC of the image's spec (or one derived from the state directory).
// An image with a CFS root is refused: node 1 serves it from the install
// disk, which a direct boot does not have.
func DirectTopology(t Topology) (ClusterConfig, error) {
	imageDir, dir, n, accel, memory := t.ImageDir, t.StateDir, t.Nodes, t.Accel, t.MemoryMB
	m, err := layout.ReadManifest(imageDir)
	if err != nil {
		return ClusterConfig{}, err
	}
	spec, _, err := clusterspec.Load(filepath.Join(imageDir, m.Spec))
	if err != nil {
		return ClusterConfig{}, err
	}
	if spec.Root.Source == clusterspec.RootGFS2 {
		return ClusterConfig{}, fmt.Errorf("the image in %s has a GFS2 root (root.source: gfs2), which node 1 fills from the install disk at the first boot: boot it without --direct", imageDir)
	}
	if spec.Root.Source == clusterspec.RootCFS {
		return ClusterConfig{}, fmt.Errorf("the image in %s has a CFS root (root.source: cfs), which node 1 serves from the install disk: boot it without --direct (or build with root.source: initramfs)", imageDir)
	}
	kernel, _ := filepath.Abs(filepath.Join(imageDir, m.Kernel))
	initrd, _ := filepath.Abs(filepath.Join(imageDir, m.Initramfs))
	cfg := ClusterConfig{Name: spec.Cluster.Name, Dir: dir, Kernel: kernel, Initrd: initrd, Accel: accel, MemoryMB: memory}
	for i := 1; i <= n; i++ {
		addr, err := spec.NodeAddr(i)
		if err != nil {
			return cfg, err
		}
		row, _ := spec.NodeByNumber(i)
		mac := row.MAC
		if mac == "" {
			mac = MACFor(dir, i)
		}
		cmdline := fmt.Sprintf("console=%s panic=-1 locus.node=%d locus.ip=%s", spec.Console, i, addr)
		if spec.Kernel.Cmdline != "" {
			cmdline += " " + spec.Kernel.Cmdline
		}
		identity, err := DirectIdentity(dir, spec.Cluster.Name, i, addr.Addr())
		if err != nil {
			return cfg, err
		}
		cfg.Nodes = append(cfg.Nodes, NodeConfig{Number: i, MAC: mac, Append: cmdline, Identity: identity})
	}
	return cfg, nil
}

// DirectIdentity issues node n's credential at addr for a cluster of VMs
// that is not netbooted: the harness keeps the cluster's CA and gossip key
// in the state directory (made the first time), as Talos's `talosctl gen
// secrets` keeps a cluster's on the operator's machine, and writes the
// node's identity file in its directory (mode 0600); it reaches the
// guest through fw_cfg.
func DirectIdentity(stateDir, cluster string, n int, addr netip.Addr) (string, error) {
	path := filepath.Join(stateDir, fmt.Sprintf("node%d", n), "identity.json")
	if err := locusd.IssueIdentityFile(filepath.Join(stateDir, "ca"), cluster, n, addr, path); err != nil {
		return "", fmt.Errorf("qemu: node %d's identity: %w", n, err)
	}
	return path, nil
}

// InstalledTopology describes the cluster as it is installed: node 1
// boots the install disk under UEFI and serves netboot; nodes 2..n
// PXE-boot from it. With a CFS root that has a standby, node 1's disk is
// shared storage the standby sees too.
func InstalledTopology(t Topology) (ClusterConfig, error) {
	imageDir, dir, n, accel, memory, apiPort := t.ImageDir, t.StateDir, t.Nodes, t.Accel, t.MemoryMB, t.APIPort
	m, err := layout.ReadManifest(imageDir)
	if err != nil {
		return ClusterConfig{}, err
	}
	if m.Disk == "" {
		return ClusterConfig{}, fmt.Errorf("the image in %s has no install disk; rebuild it (locus image build)", imageDir)
	}
	spec, _, err := clusterspec.Load(filepath.Join(imageDir, m.Spec))
	if err != nil {
		return ClusterConfig{}, err
	}
	disk, _ := filepath.Abs(filepath.Join(imageDir, m.Disk))
	if _, err := os.Stat(disk); err != nil {
		return ClusterConfig{}, fmt.Errorf("install disk: %w (run `locus image build`)", err)
	}
	cfg := ClusterConfig{Name: spec.Cluster.Name, Dir: dir, Accel: accel, MemoryMB: memory}
	var shared string
	if m.SharedDisk != "" {
		// The cluster's own copy of the shared disk (GFS2): kept with
		// its state, made from the image's empty one the first time.
		if n > spec.Root.GFS2.Journals {
			return cfg, fmt.Errorf("%d nodes, but the GFS2 root has %d journals (root.gfs2.journals): one per node that mounts it", n, spec.Root.GFS2.Journals)
		}
		shared = filepath.Join(dir, m.SharedDisk)
		if _, err := os.Stat(shared); err != nil {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return cfg, err
			}
			if out, err := exec.Command("cp", "--sparse=always", filepath.Join(imageDir, m.SharedDisk), shared).CombinedOutput(); err != nil {
				return cfg, fmt.Errorf("qemu: the cluster's shared disk: %v: %s", err, out)
			}
		}
	}
	if t.DataDisk != "" {
		if shared != "" {
			return cfg, fmt.Errorf("--shared-disk: the image's GFS2 root is already the disk every node shares")
		}
		if shared, err = filepath.Abs(t.DataDisk); err != nil {
			return cfg, err
		}
		if _, err := os.Stat(shared); err != nil {
			return cfg, fmt.Errorf("--shared-disk: %w", err)
		}
	}
	for i := 1; i <= n; i++ {
		row, _ := spec.NodeByNumber(i)
		mac := row.MAC
		if mac == "" {
			if i > 1 && spec.Netboot.Admission == clusterspec.AdmitDeny {
				return cfg, fmt.Errorf("node %d has no MAC in the spec's node table and netboot.admission is deny, so node 1 would not boot it: add it to the table, or set netboot.admission to accept", i)
			}
			mac = MACFor(dir, i)
		}
		// A CFS root with a standby: node 1's disk is shared storage that
		// the standby sees too (it mounts it only when it takes over).
		standby := 0
		if spec.Root.Source == clusterspec.RootCFS && spec.Root.CFS.Standby <= n {
			standby = spec.Root.CFS.Standby
		}
		nc := NodeConfig{Number: i, MAC: mac, Boot: "pxe", NIC: "virtio-net-pci"}
		if i == standby {
			nc.AttachDisk = 1
		}
		if i == 1 {
			nc = NodeConfig{Number: 1, MAC: mac, Boot: "disk", Disk: disk, Firmware: "uefi", APIPort: apiPort, DiskShared: standby != 0}
		}
		nc.SharedDisk = shared
		cfg.Nodes = append(cfg.Nodes, nc)
	}
	return cfg, nil
}
