//go:build !nodeonly

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/locus-ssi/locus/images/clusterspec"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/locus-ssi/locus/images"
	"github.com/locus-ssi/locus/initramfs"
)

func newImageCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build boot artefacts from a cluster spec",
		Example: `  locus image spec --example > locus.yaml
  locus image build --spec locus.yaml --out out`,
	}
	cmd.AddCommand(newImageBuildCmd(e), newImageSpecCmd(e))
	return cmd
}

func newImageBuildCmd(e *env) *cobra.Command {
	var o images.BuildOptions
	var compress string
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build the kernel, initramfs, netboot tree and install disk into the output directory",
		Long: `Build fetches the kernel (Debian's linux-image-amd64 through apt, or your own
with --kernel/--modules), builds the u-root initramfs with the Locus init,
the modules the spec needs and the spec itself, and writes them to --out:

  vmlinuz              the kernel
  initramfs.cpio.zst   u-root base + Locus archive
  locus.yaml           the spec the image carries
  netboot/             the tree locus netboot serve serves
  disk.img             the install disk node 1 boots (UEFI); disk.qcow2 with --format qcow2
  manifest.json        what went in

The u-root base is built once per Go version and cached under
$XDG_CACHE_HOME/locus (or $LOCUS_CACHE_DIR); later builds take seconds.`,
		Example: `  locus image build
  locus image build --spec locus.yaml --out out
  locus image build --kernel /boot/vmlinuz-$(uname -r) --modules /lib/modules/$(uname -r)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := initramfs.ParseCompression(compress); err != nil {
				return err
			}
			o.Compress = compress
			var err error
			if o.Locus == "" {
				if o.Locus, err = os.Executable(); err != nil {
					return err
				}
			}
			o.Progress = e.stderr
			start := time.Now()
			m, err := images.Build(cmd.Context(), o, initramfs.ForImages)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "built %s in %s: kernel %s, initramfs %.1f MB, %d modules\n",
				o.Out, time.Since(start).Round(100*time.Millisecond), m.KernelVersion, float64(m.InitramfsSize)/1e6, len(m.Modules))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.SpecPath, "spec", defaultSpec(), "cluster spec (default: ./locus.yaml if present, else the default cluster: see locus image spec)")
	f.StringVar(&o.Out, "out", "out", "output directory")
	f.StringVar(&o.KernelImage, "kernel", "", "use this kernel image instead of Debian's package")
	f.StringVar(&o.KernelModules, "modules", "", "module tree of --kernel (lib/modules/<version>)")
	f.StringVar(&o.Locus, "locus", "", "static locus binary to put in the image (default: this one)")
	f.StringVar(&compress, "compress", "zstd", "initramfs compression: zstd or gzip")
	f.StringVar(&o.DiskFormat, "format", "raw", "install disk format: raw (disk.img), or qcow2 (disk.qcow2 as well)")
	cmd.MarkFlagFilename("spec", "yaml", "yml")
	cmd.MarkFlagDirname("out")
	return cmd
}

func newImageSpecCmd(e *env) *cobra.Command {
	var example bool
	var output string
	cmd := &cobra.Command{
		Use:   "spec [FILE]",
		Short: "Check a cluster spec and print it with defaults filled in",
		Long: `Spec checks FILE (default: ./locus.yaml) and prints it with every default
filled in. With no file it prints the default cluster, the one locus image
build makes without a spec: a CFS root served by node 1 from the install
disk, node 2 its standby. --example prints a commented spec with every
key.`,
		Example: `  locus image spec --example > locus.yaml
  locus image spec locus.yaml
  locus image spec locus.yaml --output json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if example {
				_, err := e.stdout.Write(clusterspec.ExampleSpec())
				return err
			}
			if err := checkOutput(output); err != nil {
				return err
			}
			path := defaultSpec()
			if len(args) == 1 {
				path = args[0]
			}
			s, _, err := clusterspec.LoadForBuild(path)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			if path == "" {
				fmt.Fprintf(e.stdout, "# no spec file: the default cluster, as locus image build makes it, with defaults filled in:\n")
			} else {
				fmt.Fprintf(e.stdout, "# %s is valid; with defaults filled in:\n", filepath.Base(path))
			}
			enc := yaml.NewEncoder(e.stdout)
			enc.SetIndent(2)
			return enc.Encode(s)
		},
	}
	cmd.Flags().BoolVar(&example, "example", false, "print a commented example spec showing every key")
	addOutputFlag(cmd, &output)
	return cmd
}
