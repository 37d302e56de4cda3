// Package clms is Locus's cluster membership service (openSSI's CLMS): it
// decides which nodes are in the cluster, and every node holds the same
// view of it.
//
// The CLMS master is the Raft leader (github.com/hashicorp/raft). It alone
// decides node transitions (NeverUp, ComingUp, Up, ShuttingDown,
// GoingDown, Down) and commits each as a Raft log entry; the replicated
// state machine numbers them, so every node applies the same transitions
// with the same ids in the same order. A transition decided on stale
// information (the node moved since) is refused when applied.
//
// Failures are detected with SWIM gossip (github.com/hashicorp/memberlist)
// tuned for a LAN, Lifeguard included, so a node whose CPU is saturated
// is not declared dead. When gossip declares a node dead, the master
// fences it (if a fence agent is configured) and commits Down. When the
// master itself is lost, Raft elects another among the voters (at most
// five; the rest are non-voters), which reconciles the table with what
// gossip sees.
//
// The code is split by concern: member.go (configuration, start, stop),
// profile.go (timing profiles), raft.go (Raft: transport, commits,
// voters), gossip.go (SWIM gossip: join, node metadata, publishing this
// node's state), dispatch.go (running transitions' handlers in order),
// master.go (the master's reconciliation of the table with gossip,
// quorum), status.go (this node's view), fsm.go (the replicated table),
// twonode.go, tls.go and faults.go (fault injection for tests).
package clms
