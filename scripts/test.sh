#!/usr/bin/env bash
# make test: every tier. Unit and loopback tests first, then the VM tests
# (real kernel, real initramfs, QEMU), which print each node's boot time.
set -euo pipefail
cd "$(dirname "$0")/.."
export LOCUS_BIN="$PWD/bin/locus"
echo "== tree: no binaries or oversized files"
./scripts/check-tree.sh
echo "== unit and loopback tests"
# Test artefacts (the dashboard's screenshot from headless Chromium) are
# kept in out-test/_artifacts.
mkdir -p out-test
go test -count=1 -timeout 15m -artifacts -outputdir "$PWD/out-test" ./...
echo "== VM tests (QEMU; TCG unless KVM works here)"
# The packages that have VM tests (files built with the vm tag).
mapfile -t pkgs < <(grep -rl --include='*_test.go' '^//go:build vm' . | xargs -n1 dirname | sort -u)
go test -count=1 -tags vm -timeout 40m -run VM -v "${pkgs[@]}" 2>&1 | grep -Ev '^(=== RUN|=== PAUSE|=== CONT)'
exit "${PIPESTATUS[0]}"
