//go:build nodeonly

package main

// hostCommands: none in the node build (make build's bin/locus-node,
// which locus image build puts in the image as /bin/locus): a node
// neither builds images nor runs QEMU clusters.
func hostCommands(*env) []groupedCommand { return nil }
