#!/usr/bin/env bash
# make demo: the product's main job in QEMU. Node 1 boots the install disk
# under UEFI and serves netboot and the shared root; nodes 2..N PXE-boot
# from it and mount that root. Then show the nodes are one network of Up
# nodes on one root with one address in front of their web service
# (images/clusterspec/examples/demo.yaml), lose a node (the director of
# that address), lose the root's server (node 2, its standby, takes
# over), and stop the cluster.
set -euo pipefail
LOCUS=${1:-bin/locus}
OUT=${2:-out}
N=${N:-4}
STATE=${STATE:-}
flags=(--image-dir "$OUT")
[ -n "$STATE" ] && flags+=(--state-dir "$STATE")
trap '"$LOCUS" qemu "${flags[@]}" down >/dev/null 2>&1 || true' EXIT
"$LOCUS" qemu "${flags[@]}" down >/dev/null 2>&1 || true
echo "(to watch it in a browser: run \`$LOCUS dashboard\` in another terminal and open the address it prints)"
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
# One address for the cluster: web runs on nodes 2-4 (an HA service),
# the cluster IP 10.77.0.100 spreads it over them (IPVS); node 3 directs
# it (an operator's move, if node 2 came Up first). Node 1 asks it six
# times: every instance answers.
set +x
for _ in $(seq 120); do
	[ "$("$LOCUS" clusterip --output json | grep -o '"10\.77\.0\.[234]"' | wc -l)" -ge 3 ] && break
	sleep 1
done
set -x
"$LOCUS" service ls
"$LOCUS" clusterip move 3
set +x
for _ in $(seq 30); do
	j=$("$LOCUS" clusterip --output json | tr -d ' \n')
	case "$j" in *'"director":{"node":3,'*'"releasing":true'*) ;; *'"director":{"node":3,'*) break ;; esac
	sleep 1
done
set -x
"$LOCUS" clusterip
ask='for i in 1 2 3 4 5 6; do printf "GET /hostname HTTP/1.0\r\n\r\n" | /usr/local/bin/busybox nc -w 2 10.77.0.100 8080 | tail -n 1; done'
"$LOCUS" qemu "${flags[@]}" exec 1 -- sh -c "$ask"
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
# Node 3 directed the cluster IP: node 2 took it at node 3's Down, and
# node 3 left web's pool; the address goes on answering.
"$LOCUS" clusterip
"$LOCUS" service ls
"$LOCUS" qemu "${flags[@]}" exec 1 -- sh -c "$ask"
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
