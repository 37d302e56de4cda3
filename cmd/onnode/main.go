// Command onnode is the lean stand-in for a job on another node: the
// image's onnode and fast. It carries only services/proc/standin, so it
// starts in a fraction of the time the whole locus binary takes.
//
// A stand-in has no use for GOMAXPROCS from the cgroup: the runtime
// skips reading it at every start.
//
//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0
package main

import (
	"os"

	"github.com/locus-ssi/locus/services/proc/standin"
)

func main() {
	os.Exit(standin.Main(os.Args, os.Stdin, os.Stdout, os.Stderr))
}
