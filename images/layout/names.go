package layout

// Names of the artefacts in a build's output directory.
const (
	KernelFile    = "vmlinuz"
	InitramfsFile = "initramfs.cpio"
	SpecFile      = "locus.yaml"
	ManifestFile  = "manifest.json"
	// NetbootDir is the tree `locus netboot serve` serves.
	NetbootDir = "netboot"
	// DiskFile is the install disk (raw): node 1 boots it under UEFI.
	DiskFile = "disk.img"
	// GFS2DiskFile is a gfs2 root's shared disk.
	GFS2DiskFile = "gfs2root.img"
	// DiskQCOW2File is the install disk as qcow2 (--format qcow2).
	DiskQCOW2File = "disk.qcow2"
)

// Files the initramfs carries for init, relative to its root.
const (
	SpecPath       = "etc/locus/locus.yaml"
	ModuleListPath = "etc/locus/modules"
	KernelVerPath  = "etc/locus/kernel-release"
)

// Where the init node keeps its state (the state partition, mounted by
// init), and the cluster's CAs on it.
const (
	StateMount = "/var/lib/locus"
	CADir      = StateMount + "/ca"
)

// GPT partition names of the install disk, which the init node looks for.
const (
	ESPName   = "locus-esp"
	RootName  = "locus-root"
	StateName = "locus-state"
	// BootPath is the UEFI default boot file on the ESP.
	BootPath = "/EFI/BOOT/BOOTX64.EFI"
	// DiskNetbootDir is where the boot tree lives on the root partition.
	DiskNetbootDir = "boot/netboot"
)
