#!/usr/bin/env bash
# make demo: the product's main job in QEMU. Node 1 boots the install disk
# under UEFI and serves netboot and the shared root; nodes 2..N PXE-boot
# from it and mount that root. Then show the nodes are one network of Up
# nodes on one root, lose a node, lose the root's server (node 2, its
# standby, takes over), and stop the cluster.
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
# From the last node, a TLS round trip to every node's daemon (without a
# credential, each answers its health only).
"$LOCUS" qemu "${flags[@]}" exec "$N" -- locus probe $(seq 1 "$N")
"$LOCUS" qemu "${flags[@]}" exec 2 -- cat /run/locus/node.json
# From the host, with the context qemu up saved (node 1's admin
# credential, fetched through its exec channel): node 1's netboot
# registry, and the cluster's membership.
"$LOCUS" config info
"$LOCUS" node list
"$LOCUS" cluster status
# Node 1's boot, as its init and daemon published it (its event feed).
"$LOCUS" cluster events --kind phase.done,runlevel.reached,role.taken,service.started
# One process space: run on another node, on all, on the least loaded;
# every node's processes by cluster PID; a signal across nodes.
"$LOCUS" qemu "${flags[@]}" exec 2 -- onnode 4 -- uname -n
"$LOCUS" qemu "${flags[@]}" exec 2 -- onall -- uname -n
"$LOCUS" qemu "${flags[@]}" exec 1 -- sh -c 'i=0; while [ $i -lt 20 ]; do fast -v -- hostname >/dev/null; i=$((i+1)); done 2>&1' | sort | uniq -c
cpid=$("$LOCUS" qemu "${flags[@]}" exec 2 -- onnode 3 --detach -- sleep 600)
"$LOCUS" qemu "${flags[@]}" exec 1 -- locus ps --command sleep
"$LOCUS" qemu "${flags[@]}" exec 4 -- locus kill "$cpid"
"$LOCUS" qemu "${flags[@]}" exec 1 -- sh -c "where_pid $cpid || true"
# A job on node 3, its stand-in on node 1, when node 3 dies below.
job=$(mktemp)
"$LOCUS" qemu "${flags[@]}" exec 1 -- sh -c 'onnode 3 -- sleep 600; echo "onnode exited $?"' > "$job" 2>&1 &
sleep 3
# A fault: node 3 loses power. The master fences it (a reboot, through
# the virtual BMC) and commits its Down; every node applies the same
# transition, and node 3 boots again.
"$LOCUS" qemu "${flags[@]}" kill 3
set +x
for _ in $(seq 60); do
	"$LOCUS" cluster status --output json | grep -q '"state": "Down"' && break
	sleep 1
done
set -x
"$LOCUS" cluster status
"$LOCUS" qemu "${flags[@]}" events 2 --kind transition.applied | tail -3
# The stand-in of the job on node 3 ended with 255 as the Down was applied.
wait
cat "$job"
rm -f "$job"
# One root: a file written on node 2 is read on node 4.
"$LOCUS" qemu "${flags[@]}" exec 2 -- sh -c 'echo written-on-node-2 > /demo.txt'
"$LOCUS" qemu "${flags[@]}" exec "$N" -- cat /demo.txt
# A fault on the root's server: node 1 (the CFS server and the master)
# loses power. The new master fences it; node 2, which sees node 1's
# disk, mounts it and serves the root at the service address; the other
# nodes' relays reconnect and carry on.
"$LOCUS" qemu "${flags[@]}" kill 1
set +x
for _ in $(seq 120); do
	"$LOCUS" qemu "${flags[@]}" events 2 --kind role.taken --output json | grep -q '"name":"cfs-server"' && break
	sleep 1
done
set -x
"$LOCUS" qemu "${flags[@]}" events 2 --kind transition.applied,role.taken,node.fenced | tail -4
"$LOCUS" qemu "${flags[@]}" exec "$N" -- cat /demo.txt
"$LOCUS" qemu "${flags[@]}" exec 2 -- locus cluster status
"$LOCUS" qemu "${flags[@]}" down
