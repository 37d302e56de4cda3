// Package lvs gives the cluster one address (openSSI's cluster virtual
// IP, CVIP): the director node holds it and load-levels each of its
// ports over the nodes running the port's service with the kernel's
// IPVS, by direct routing.
//
// Direct routing, not NAT: the director rewrites only the destination
// MAC of a client's packets and sends them to a real server, which has
// the address on its loopback (with arp_ignore=1 and arp_announce=2, so
// that only the director answers ARP for it) and answers the client
// itself. The director sees only what clients send, so what a new
// director needs is its table and the connections IPVS's own
// synchronisation sent it; NAT would fail for a client on the same
// segment (the real server's answer would not come from the address
// the client asked).
//
// The CLMS master chooses the director (a record in the membership's
// Raft log), among the spec's directors, and moves it only when the
// director is fenced Down (or shuts down): there is no VRRP election
// and no failback. The new director adds the address to its interface,
// turns its IPVS sync daemon from backup to master and sends gratuitous
// ARP at once. Every other node runs the backup sync daemon (with the
// kernel's backup_only, so its preloaded copy of the table does not
// reschedule what the director forwards to it) and keeps the table the
// director publishes, so connections survive a director change.
//
// Real servers: the nodes where the port's HA service has a running
// instance, or (register: listen) every node listening on the port, as
// openSSI registered listeners; the director asks every Up node each
// second.
package lvs
