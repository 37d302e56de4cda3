// Package layout is where things are in what the build makes, shared by
// the host that builds and the node that boots: the names of the
// artefacts in an output directory and its manifest, the files the
// initramfs carries for init, the install disk's partitions (found at
// boot by their GPT names) and how init reads a kernel module file.
//
// It imports no builder (neither go-diskfs nor u-root's mkuimage), so the
// node's daemon and PID 1 can use it without pulling the disk writer in.
package layout
