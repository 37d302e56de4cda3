#!/usr/bin/env bash
# make bench-netboot: Locus's DHCP, TFTP and HTTP against dnsmasq,
# tftpd-hpa and nginx. Servers run in one network namespace, the load
# generator in another, joined by a veth pair; both are made here and
# removed afterwards. Results go to bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
srv="locus-bench-srv-$$"
cli="locus-bench-cli-$$"
trap 'ip netns del "$srv" 2>/dev/null || true; ip netns del "$cli" 2>/dev/null || true' EXIT
ip netns add "$srv"
ip netns add "$cli"
ip -n "$srv" link add nb0 type veth peer name nb1 netns "$cli"
ip -n "$srv" addr add 10.77.0.1/16 dev nb0
ip -n "$cli" addr add 10.77.0.2/16 dev nb1
for ns in "$srv" "$cli"; do ip -n "$ns" link set lo up; done
ip -n "$srv" link set nb0 up
ip -n "$cli" link set nb1 up
go build -o bin/netboot-bench ./bench/netboot
ip netns exec "$cli" bin/netboot-bench -server-ns "$srv" -locus bin/locus -root out/netboot -results bench/RESULTS.md "$@"
