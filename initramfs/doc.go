// Package initramfs builds a node's initramfs with u-root's Go API
// (github.com/u-root/mkuimage/uimage and gobusybox): a base archive with
// u-root's core commands, built once and cached by the Go version and the
// module requirements, followed by a small Locus archive holding /init and
// /bin/locus (one static binary), the kernel modules init loads with their
// modules.dep, and /etc/locus. Both parts are compressed deterministically,
// so the same inputs give the same bytes.
//
// The PID 1 that /init runs lives in initramfs/pid1.
package initramfs
