#!/usr/bin/env bash
# make bench-netboot: Locus's DHCP, TFTP and HTTP against dnsmasq,
# tftpd-hpa and nginx, on a veth pair in a network namespace made here and
# removed afterwards. Results go to bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ns="locus-bench-$$"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip netns add "$ns"
ip -n "$ns" link add nb0 type veth peer name nb1
ip -n "$ns" addr add 10.77.0.1/24 dev nb0
ip -n "$ns" link set nb0 up
ip -n "$ns" link set nb1 up
ip -n "$ns" link set lo up
go build -o bin/netboot-bench ./bench/netboot
ip netns exec "$ns" bin/netboot-bench -locus bin/locus -root out/netboot -results bench/RESULTS.md "$@"
