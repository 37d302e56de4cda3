// Package images is the recipe that turns a cluster spec
// (images/clusterspec) into boot artefacts: the kernel and its modules,
// the initramfs (package initramfs), the netboot tree and the install
// disk (package installer), with a manifest (images/layout).
//
// The kernel comes from Debian's linux-image-amd64 package, fetched with
// apt so that apt verifies it, or from a path the user gives; modules are
// resolved with their dependencies (modules.dep, or each module's own
// .modinfo when the tree ships none) so the initramfs carries exactly
// what init loads.
//
// Only the host that builds imports this package; what runs on a node
// imports the spec and the layout, never the builders.
package images
