#!/usr/bin/env bash
# make demo: boot a 3-node cluster from the image just built, show that
# the nodes are one network of Up nodes, then stop it.
set -euo pipefail
LOCUS=${1:-bin/locus}
OUT=${2:-out}
N=${N:-3}
STATE=${STATE:-}
flags=(--image-dir "$OUT")
[ -n "$STATE" ] && flags+=(--state-dir "$STATE")
trap '"$LOCUS" qemu "${flags[@]}" down >/dev/null 2>&1 || true' EXIT
"$LOCUS" qemu "${flags[@]}" down >/dev/null 2>&1 || true
set -x
"$LOCUS" qemu "${flags[@]}" up -n "$N" --direct
"$LOCUS" qemu "${flags[@]}" status
"$LOCUS" qemu "${flags[@]}" exec 1 -- uname -a
# From the last node, a TCP round trip to every node's daemon.
"$LOCUS" qemu "${flags[@]}" exec "$N" -- locus probe $(seq 1 "$N")
"$LOCUS" qemu "${flags[@]}" exec 2 -- cat /run/locus/node.json
"$LOCUS" qemu "${flags[@]}" logs 1 | grep 'locus-init:' | tail -8
"$LOCUS" qemu "${flags[@]}" down
