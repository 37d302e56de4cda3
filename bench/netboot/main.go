// Command netboot-bench measures Locus's netboot service side by side with
// the peers an operator would pick instead — dnsmasq (DHCP), tftpd-hpa
// (TFTP) and nginx (HTTP) — in one run, on a veth pair inside a network
// namespace (scripts/bench-netboot.sh makes it and runs this inside), and
// writes the results as ratios to bench/RESULTS.md.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "netboot-bench:", err)
		os.Exit(1)
	}
}
