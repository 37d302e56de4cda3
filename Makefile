# Locus: make demo (the main job) and make test. Run as root on Debian 12.
SHELL := /bin/bash
GO ?= go
LOCUS := bin/locus
OUT ?= out
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X github.com/locus-ssi/locus.Version=$(VERSION)"
export PATH := /usr/local/go/bin:$(PATH)

DEB_PACKAGES := qemu-system-x86 qemu-utils ovmf ipxe-qemu ipxe e2fsprogs zstd cpio iproute2 binutils systemd-boot-efi debootstrap procps gfs2-utils gcc libc6-dev libdlm-dev resource-agents chromium-headless-shell

.PHONY: deps bench-deps build image demo demo-gfs2 netboot-demo test test-unit test-vm bench bench-netboot bench-membership bench-cfs bench-proc bench-dlm bench-ha clean

# deps installs the Debian packages the build and the tests need; it skips
# what is already there.
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing $$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else echo "deps: all present"; fi
	@if [ -z "$$(find /var/lib/apt/lists -name '*Packages*' -print -quit 2>/dev/null)" ]; then apt-get update -q; fi
	@command -v $(GO) >/dev/null || { echo "deps: Go is not installed (https://go.dev/dl)"; exit 1; }

build:
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build $(GOFLAGS_BUILD) -o $(LOCUS) ./cmd/locus
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build $(GOFLAGS_BUILD) -o $(dir $(LOCUS))onnode ./cmd/onnode
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build $(GOFLAGS_BUILD) -tags nodeonly -o $(dir $(LOCUS))locus-node ./cmd/locus

image: deps build
	$(LOCUS) image build --out $(OUT)

# demo: build everything, boot a 4-node cluster in QEMU (node 1 from the
# install disk, 2-4 by PXE), show it working and surviving faults, then
# stop it.
demo: deps build
	$(LOCUS) image build --spec images/clusterspec/examples/demo.yaml --out $(OUT)-demo
	./scripts/demo.sh $(LOCUS) $(OUT)-demo

# demo-gfs2: the same journey on a GFS2 root every node mounts itself
# (images/clusterspec/examples/gfs2.yaml): a write on one node read on another, a lock
# across nodes, a node killed and the others going on.
demo-gfs2: deps build
	$(LOCUS) image build --spec images/clusterspec/examples/gfs2.yaml --out $(OUT)-gfs2
	./scripts/demo-gfs2.sh $(LOCUS) $(OUT)-gfs2

# netboot-demo: PXE-boot one VM from `locus netboot serve` (FIRMWARE=uefi
# for OVMF).
netboot-demo: image
	./scripts/netboot-demo.sh

test: deps build
	./scripts/test.sh

test-unit: build
	$(GO) test -count=1 ./...

test-vm: deps build
	LOCUS_BIN=$(CURDIR)/$(LOCUS) $(GO) test -count=1 -tags vm -timeout 40m -v -run VM $$(grep -rl --include="*_test.go" "^//go:build vm" . | xargs -n1 dirname | sort -u)

# The peers the benchmarks compare against. Installed with services kept
# from starting (policy-rc.d), since the benchmarks start them themselves.
BENCH_PACKAGES := dnsmasq-base tftpd-hpa nginx wrk diod corosync openssh-server openssh-client etcd-server keepalived
bench-deps: deps
	@missing=$$(for p in $(BENCH_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "bench-deps: installing $$missing"; \
		made=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made=1; fi; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; rc=$$?; \
		[ -n "$$made" ] && rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi

bench: bench-netboot bench-membership bench-cfs bench-proc bench-dlm bench-ha

# The cluster IP's failover against Debian's keepalived (VRRP, defaults
# and tuned), both on the same three QEMU nodes; HA restart times and
# throughput through the cluster IP (about 10 minutes under TCG).
bench-ha: bench-deps build
	$(GO) run ./bench/ha -locus $(LOCUS) -results bench/RESULTS.md

# The kernel DLM against an etcd concurrency.Mutex on a 3-member etcd
# (Debian's etcd-server), both on the same three QEMU nodes (about 10
# minutes under TCG).
bench-dlm: bench-deps build
	$(GO) run ./bench/dlm -locus $(LOCUS) -results bench/RESULTS.md

# Remote execution and the process table on loopback daemons: onnode
# against Debian's openssh (fresh and ControlMaster), fast launches, ps
# over 8 nodes (about 2 minutes).
bench-proc: bench-deps build
	$(GO) run ./bench/proc -locus $(LOCUS) -results bench/RESULTS.md

# Failure detection and master failover on 5-node loopback clusters:
# Locus's timing against memberlist's defaults and Debian's corosync in
# network namespaces (about 8 minutes).
bench-membership: bench-deps
	$(GO) run ./bench/membership -results bench/RESULTS.md

# The CFS server against diod (Debian's 9P2000.L server) on loopback, the
# same Go 9P client against both (about a minute).
bench-cfs: bench-deps build
	$(GO) run ./bench/cfs -locus $(LOCUS) -results bench/RESULTS.md

bench-netboot: bench-deps image
	./scripts/bench-netboot.sh

clean:
	rm -rf bin $(OUT)
