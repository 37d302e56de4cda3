// Package qemu is Locus's multi-VM harness, used by `locus qemu` and by the
// VM tests. It starts one QEMU process per node (TCG, or KVM when /dev/kvm
// works) with a virtio-rng, a NIC on the cluster's rootless L2 segment (a
// UDP multicast group on loopback, unique per cluster directory), a QMP
// socket for power control and fault injection, a virtio-serial exec
// channel that the node's init serves, and an event channel on which init
// writes the node's event feed (services/events). Each node's serial
// console is kept as a timestamped log and its events in events.jsonl;
// the node's boot stage and time to Up come from its events (only the
// kernel's own stage, before init runs, is read from the console), and
// WaitEvent waits for one.
//
// A Cluster runs VMs inside the calling process (tests). From the command
// line, Up starts a detached supervisor (`locus qemu supervise`) that owns
// the VMs, so they outlive the `up` command but never their supervisor.
package qemu
