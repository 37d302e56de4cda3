#!/usr/bin/env bash
# make netboot-demo: PXE-boot one QEMU VM from `locus netboot serve`, as a
# new node on real hardware would: no kernel, no disk, only the NIC's
# firmware. The server runs on a tap device inside a network namespace
# made here; everything is removed at the end.
#   FIRMWARE=bios|uefi (default bios)   NIC=e1000|virtio-net-pci
set -euo pipefail
cd "$(dirname "$0")/.."
LOCUS=${LOCUS:-bin/locus}
OUT=${OUT:-out}
FIRMWARE=${FIRMWARE:-bios}
NIC=${NIC:-e1000}
ns="locus-pxe-demo-$$"
work=$(mktemp -d)
srv=
cleanup() {
	[ -n "$srv" ] && kill "$srv" 2>/dev/null || true
	[ -n "${vm:-}" ] && kill "$vm" 2>/dev/null || true
	wait 2>/dev/null || true
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
# The spec the image carries decides admission; a MAC from its node table
# boots at once, any other one as netboot.admission says.
mac=$("$LOCUS" image spec "$OUT/locus.yaml" --output json | sed -n 's/.*"mac": "\([^"]*\)".*/\1/p' | head -1)
mac=${mac:-52:54:00:12:34:56}
subnet=$("$LOCUS" image spec "$OUT/locus.yaml" --output json | sed -n 's/.*"subnet": "\([^"]*\)".*/\1/p')
server=$(echo "$subnet" | awk -F'[./]' '{print $1"."$2"."$3"."$4+1"/"$5}')
ip netns add "$ns"
ip -n "$ns" tuntap add dev tap0 mode tap
ip -n "$ns" addr add "$server" dev tap0
ip -n "$ns" link set tap0 up
ip -n "$ns" link set lo up
echo "== locus netboot serve on tap0 ($server) in namespace $ns"
ip netns exec "$ns" "$LOCUS" netboot serve --interface tap0 --root "$OUT/netboot" --state-dir "$work/state" >"$work/netboot.log" 2>&1 &
srv=$!
sleep 1
fw=()
if [ "$FIRMWARE" = uefi ]; then
	cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"
	fw=(-drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd -drive if=pflash,format=raw,file="$work/vars.fd")
	NIC="$NIC,romfile="   # OVMF's own PXE, not QEMU's iPXE ROM
fi
echo "== PXE-booting a VM ($FIRMWARE, $NIC, MAC $mac); waiting for its run level"
start=$(date +%s)
ip netns exec "$ns" qemu-system-x86_64 -machine q35 -cpu max -m 768 -nodefaults -display none -vga none \
	-serial "file:$work/serial.log" -device virtio-rng-pci "${fw[@]}" \
	-netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device "$NIC,netdev=n0,mac=$mac,bootindex=1" -boot n &
vm=$!
for _ in $(seq 1 300); do
	if grep -q 'reached run level' "$work/serial.log" 2>/dev/null; then
		grep 'locus-init:' "$work/serial.log" | sed 's/^/   [node] /'
		echo "== PXE boot to run level in $(( $(date +%s) - start ))s; the server said:"
		sed 's/^/   [netboot] /' "$work/netboot.log"
		ip netns exec "$ns" "$LOCUS" node list
		exit 0
	fi
	sleep 1
done
echo "no run level after 300s; serial log tail:"; tail -20 "$work/serial.log"
exit 1
