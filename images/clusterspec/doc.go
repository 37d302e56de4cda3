// Package clusterspec is the cluster spec (locus.yaml): its types, strict
// decoding, defaults, validation and the addressing derived from it (each
// node's interconnect address, the DHCP pool, the CFS service address).
//
// A spec is decoded strictly: every key must be known and every value must
// have the right type, and errors name the file, the line and the key
// (with "did you mean" for a near miss). An empty spec is valid and gets
// defaults. It imports no builder, so the node's daemon, PID 1 and the
// netboot service read it without pulling the disk writer or u-root's
// builder in.
package clusterspec
