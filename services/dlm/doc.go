// Package dlm is the control daemon of the Linux kernel's DLM (fs/dlm),
// run in every node's locusd: what dlm_controld is on a corosync cluster,
// driven here by Locus's membership (CLMS) instead.
//
// The kernel's DLM grants and recovers locks itself but never decides
// who is in the cluster: user space configures the nodes (configfs
// comms), answers each lockspace join and leave (a uevent, then
// event_done), and on every change stops the lockspace on all its
// members before starting it on any with the new member list. This
// package does that:
//
//   - on each node, the kernel side (Kernel): the cluster's settings, a
//     comms entry per peer, the monitor device held for the daemon's
//     life, the uevents (joins, leaves, GFS2 withdraws, the misc devices
//     C clients look for under /dev/misc);
//   - on the membership's master, the coordinator: every change of a
//     lockspace is a round with a new epoch (the Raft term and a
//     sequence): stop on every old member, then start on every new one.
//     A member refuses an epoch older than one it has seen, so a deposed
//     master cannot start what a newer one stopped. A failed member is
//     dropped only once CLMS has committed its Down, which comes after
//     fencing: its locks are recovered and GFS2 replays its journal only
//     when it can no longer write. A new master learns every lockspace
//     from the nodes themselves (their kernels are the truth) and
//     finishes any change its predecessor left half done.
//
// A node that loses the quorum stops every lockspace at once and waits
// for a start from a master that has it. The package lockdev is the
// client side: applications' locks on the kernel's user lock device.
package dlm
