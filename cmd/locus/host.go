//go:build !nodeonly

package main

// hostCommands are the verbs of the machine that builds images and runs
// QEMU clusters; the node build (-tags nodeonly, the image's /bin/locus)
// leaves them out, and with them the image builder and its Go toolchain
// code.
func hostCommands(e *env) []groupedCommand {
	return []groupedCommand{{groupBuild, newImageCmd(e)}, {groupQEMU, newQemuCmd(e)}}
}
