// Command onnode is the lean stand-in for a job on another node: the
// image's onnode and fast. It carries only services/proc/standin, so it
// starts in a fraction of the time the whole locus binary takes.
package main

import (
	"os"

	"github.com/locus-ssi/locus/services/proc/standin"
)

func main() {
	os.Exit(standin.Main(os.Args, os.Stdin, os.Stdout, os.Stderr))
}
