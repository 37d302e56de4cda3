#!/usr/bin/env bash
# make demo-gfs2: a cluster on one GFS2 root. Node 1 boots the install
# disk, nodes 2..N PXE-boot from it; every node mounts the one GFS2 disk
# itself (the kernel's DLM under the membership keeps them coherent).
# Show a write on one node read on another, a lock that serialises a
# command across nodes, then kill a node and show the others carry on
# once the DLM has recovered (its journal replayed after its fence).
set -euo pipefail
LOCUS=${1:-bin/locus}
OUT=${2:-out-gfs2}
N=${N:-3}
STATE=${STATE:-}
flags=(--image-dir "$OUT")
[ -n "$STATE" ] && flags+=(--state-dir "$STATE")
q() { "$LOCUS" qemu "${flags[@]}" "$@"; }
trap 'q down >/dev/null 2>&1 || true' EXIT
q down >/dev/null 2>&1 || true
set -x
q up -n "$N"
# Every node's root is the GFS2 disk, mounted by the node itself.
q exec 2 -- grep gfs2 /proc/self/mountinfo
q exec 2 -- locus lock spaces
# A write on node 2, read on node 3 at once.
q exec 2 -- sh -c 'echo "written on $(hostname) at $(date)" > /shared-note'
q exec 3 -- cat /shared-note
# A lock serialises a command across nodes: node 3 waits for node 2's.
q exec 2 -- locus lock demo -- sleep 5 &
sleep 2
q exec 3 -- locus lock ls
q exec 3 -- locus lock --wait 0 demo -- echo never || echo "node 3: demo is held (exit $?)"
q exec 3 -- locus lock demo -- echo "node 3 got demo after node 2"
wait
# Node 3 dies while writing; once it is fenced and Down, node 2 writes on.
q exec 3 -- /usr/local/bin/busybox sh -c 'i=0; while true; do echo $i >> /node3-log; i=$((i+1)); done' 2>/dev/null &
sleep 4
q exec 2 -- tail -n 1 /node3-log
q kill 3
start=$(date +%s)
q exec 2 -- sh -c 'echo "node 2 writes after node 3 died" >> /node3-log; tail -n 2 /node3-log'
echo "node 2 wrote again $(( $(date +%s) - start ))s after node 3 was killed"
q exec 2 -- locus cluster status
q exec 2 -- locus lock spaces
wait || true
