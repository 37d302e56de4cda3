package main

import (
	"fmt"
	"path/filepath"

	"github.com/locus-ssi/locus/images/layout"

	"github.com/spf13/cobra"

	"github.com/locus-ssi/locus/installer"
)

func newInstallCmd(e *env) *cobra.Command {
	var o installer.InstallOptions
	var imageDir string
	var yes bool
	cmd := &cobra.Command{
		Use:   "install --disk DEVICE --yes",
		Short: "Write the install disk image onto a disk (node 1 on real hardware)",
		Long: `Install writes out/disk.img onto a disk: a USB stick to boot node 1 from,
or node 1's own disk. Everything on the disk is lost, so --yes is
required. A disk that is mounted, or has a mounted partition, or is
smaller than the image is refused. A disk image file works as a target
too.`,
		Example: `  locus install --disk /dev/sdb --yes
  locus install --disk node1.img --yes --image-dir out`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Target == "" {
				return fmt.Errorf("--disk is required (the device to write, e.g. /dev/sdb)")
			}
			if !yes {
				return fmt.Errorf("this erases %s: add --yes to go on", o.Target)
			}
			m, err := layout.ReadManifest(imageDir)
			if err != nil {
				return err
			}
			o.Image = filepath.Join(imageDir, m.Disk)
			o.Progress = e.stderr
			if err := installer.Install(o); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "installed %s on %s; boot it with UEFI\n", m.Disk, o.Target)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Target, "disk", "", "device (or image file) to write")
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm that the disk is erased")
	cmd.Flags().StringVar(&imageDir, "image-dir", "out", "directory locus image build wrote")
	return cmd
}
