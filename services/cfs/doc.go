// Package cfs is the cluster filesystem: the shared root that one node
// serves to every other over the interconnect, as openSSI's CFS does.
//
// The server speaks 9P2000.L (github.com/hugelgupf/p9 does the protocol);
// this package supplies the file tree behind it, an Export of one local
// directory. Every file is held as an O_PATH descriptor opened relative to
// its parent with O_NOFOLLOW, and a name is always one component (the p9
// server refuses "", ".", ".." and names with "/"), so nothing a client
// sends resolves outside the export: symlinks are handed to the client to
// resolve in its own namespace, never followed on the server. I/O goes
// straight to the exported filesystem with no server-side cache, so the
// server's page cache is the one copy every client reads and writes.
//
// Only nodes the cluster admitted may connect: Server asks an Allow
// function (membership: is this address a node that is not Down?) for
// every connection before it reads a byte. A client node's kernel mounts
// the shared root over FUSE, served by the node's Relay (fuse.go), which
// forwards to the server over one 9P2000.L connection and follows the
// service through a failover; see docs/cfs.md.
package cfs
