#!/usr/bin/env bash
# make demo: the product's main job in QEMU. Node 1 boots the install disk
# under UEFI and serves netboot; nodes 2..N PXE-boot from it. Then show
# the nodes are one network of Up nodes, and stop the cluster.
set -euo pipefail
LOCUS=${1:-bin/locus}
OUT=${2:-out}
N=${N:-4}
STATE=${STATE:-}
flags=(--image-dir "$OUT")
[ -n "$STATE" ] && flags+=(--state-dir "$STATE")
trap '"$LOCUS" qemu "${flags[@]}" down >/dev/null 2>&1 || true' EXIT
"$LOCUS" qemu "${flags[@]}" down >/dev/null 2>&1 || true
set -x
"$LOCUS" qemu "${flags[@]}" up -n "$N"
"$LOCUS" qemu "${flags[@]}" status
"$LOCUS" qemu "${flags[@]}" exec 1 -- uname -a
# From the last node, a TCP round trip to every node's daemon.
"$LOCUS" qemu "${flags[@]}" exec "$N" -- locus probe $(seq 1 "$N")
"$LOCUS" qemu "${flags[@]}" exec 2 -- cat /run/locus/node.json
# Node 1's netboot registry: every PXE node and the stage it reached.
"$LOCUS" qemu "${flags[@]}" exec 1 -- locus netboot nodes
"$LOCUS" qemu "${flags[@]}" logs 1 | grep 'locus-init:' | tail -8
"$LOCUS" qemu "${flags[@]}" down
