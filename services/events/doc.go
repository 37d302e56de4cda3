// Package events is a node's event feed: typed records of what init and
// the node daemon did (a boot phase started or finished, the run level
// reached, a membership transition applied, a role taken, a service
// started or stopped, a node fenced), each with a sequence number that
// only grows during a boot.
//
// Progress and state are events, not log lines: the QEMU harness, `locus
// cluster events` and the VM tests read the feed; console lines are for
// people and may change wording freely.
//
// On a node, PID 1 holds the feed (it lives from the first phase to
// power-off). It serves it on a unix socket in a root-only directory,
// where the node daemon publishes its own events and follows the feed
// (Dial), and writes it to the QEMU event channel when the VM has one.
// A daemon run on its own keeps a feed of its own (NewFeed).
package events
