// Package ha keeps a cluster's services running: application
// monitoring, restart and failover, openSSI's keepalive and spawndaemon
// and NonStop Clusters' process pairs, with Pacemaker's recovery rules.
//
// A service (the spec's services with an ha: block) is a command or an
// OCF resource agent (run unchanged: OCF_ROOT, OCF_RESKEY_* and the
// start, stop and monitor actions with their exit codes). The CLMS
// master decides which node runs each instance and commits it as a
// record in the membership's Raft log, so a new master inherits every
// assignment and failure count, and nothing is started twice after a
// master failover. A node runs exactly the instances assigned to it:
// it starts them, monitors them (agent monitor, command, TCP or HTTP
// probe), restarts a local failure at once and reports it; the master
// counts failures per service and node (migration_threshold within
// failure_timeout) and moves an instance when a node reaches the
// threshold, fails hard (OCF 2, 4, 5), or goes Down. A Down is fenced
// before it commits, so the dead node no longer runs what moves; a
// move from a live node waits until that node has stopped the
// instance. A node without quorum stops its instances: the other side
// fences it before it starts them elsewhere.
package ha
