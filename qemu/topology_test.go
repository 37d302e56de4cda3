package qemu

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/locus-ssi/locus/images/layout"
)

// imageDir writes a built image's manifest and spec (and an empty disk)
// into a temporary directory.
func imageDir(t *testing.T, spec string) string {
	t.Helper()
	dir := t.TempDir()
	m := layout.Manifest{Cluster: "topo", Kernel: layout.KernelFile, Initramfs: layout.InitramfsFile, Spec: layout.SpecFile, Disk: layout.DiskFile}
	b, _ := json.Marshal(m)
	for name, data := range map[string][]byte{layout.ManifestFile: b, layout.SpecFile: []byte(spec), layout.DiskFile: nil} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestInstalledTopologyWithStandby(t *testing.T) {
	img := imageDir(t, "cluster: {name: topo}\nroot: {source: cfs, cfs: {standby: 2}}\n")
	cfg, err := InstalledTopology(Topology{ImageDir: img, StateDir: t.TempDir(), Nodes: 3, Accel: "tcg", MemoryMB: 512, APIPort: 17999})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Nodes) != 3 {
		t.Fatalf("nodes = %d, want 3", len(cfg.Nodes))
	}
	n1, n2, n3 := cfg.Nodes[0], cfg.Nodes[1], cfg.Nodes[2]
	if n1.Boot != "disk" || n1.Firmware != "uefi" || !n1.DiskShared || n1.APIPort != 17999 || !strings.HasSuffix(n1.Disk, layout.DiskFile) {
		t.Errorf("node 1 = %+v, want the shared install disk under UEFI with the API port", n1)
	}
	if n2.Boot != "pxe" || n2.AttachDisk != 1 {
		t.Errorf("node 2 = %+v, want PXE with node 1's disk attached (the standby)", n2)
	}
	if n3.Boot != "pxe" || n3.AttachDisk != 0 {
		t.Errorf("node 3 = %+v, want PXE only", n3)
	}
	if cfg.Name != "topo" || cfg.MemoryMB != 512 {
		t.Errorf("cluster = %q, %d MiB; want topo, 512", cfg.Name, cfg.MemoryMB)
	}
}

func TestDirectTopology(t *testing.T) {
	img := imageDir(t, "cluster: {name: topo}\ninterconnect: {subnet: 10.99.0.0/24}\n")
	cfg, err := DirectTopology(Topology{ImageDir: img, StateDir: t.TempDir(), Nodes: 2, Accel: "tcg", MemoryMB: 512})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Nodes[1].Append; !strings.Contains(got, "locus.node=2 locus.ip=10.99.0.2/24") {
		t.Errorf("node 2 command line = %q, want its number and static address", got)
	}
	cfs := imageDir(t, "root: {source: cfs}\n")
	if _, err := DirectTopology(Topology{ImageDir: cfs, StateDir: t.TempDir(), Nodes: 2}); err == nil || !strings.Contains(err.Error(), "without --direct") {
		t.Errorf("DirectTopology of a CFS image = %v, want it refused, saying to boot without --direct", err)
	}
}

func TestInstalledTopologyDenyWithoutMAC(t *testing.T) {
	img := imageDir(t, "netboot: {admission: deny}\n")
	if _, err := InstalledTopology(Topology{ImageDir: img, StateDir: t.TempDir(), Nodes: 2}); err == nil || !strings.Contains(err.Error(), "node 2 has no MAC") {
		t.Errorf("InstalledTopology = %v, want node 2 refused for want of a MAC", err)
	}
}
