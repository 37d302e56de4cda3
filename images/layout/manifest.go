package layout

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Manifest records what a build put in the output directory.
type Manifest struct {
	Cluster         string   `json:"cluster"`
	KernelVersion   string   `json:"kernel_version"`
	KernelOrigin    string   `json:"kernel_origin"`
	Kernel          string   `json:"kernel"`
	Initramfs       string   `json:"initramfs"`
	InitramfsSize   int64    `json:"initramfs_size"`
	InitramfsSHA256 string   `json:"initramfs_sha256"`
	Modules         []string `json:"modules"`
	Spec            string   `json:"spec"`
	Disk            string   `json:"disk"`
	// SharedDisk, for a gfs2 root, is the disk every node mounts (made
	// empty; the first node to boot fills it from the install disk).
	SharedDisk string `json:"shared_disk,omitempty"`
}

// ReadManifest reads the manifest of a built output directory.
func ReadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("layout: no image in %s (run `locus image build` first): %w", dir, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("layout: %s/%s: %w", dir, ManifestFile, err)
	}
	return &m, nil
}
