package main

import (
	"os"
	"testing"

	"github.com/locus-ssi/locus/services/proc"
)

// TestPSLeavesItselfOut: `locus ps --command X` run on a node matches its
// own command line; like pgrep, it leaves itself out, and only itself.
func TestPSLeavesItselfOut(t *testing.T) {
	self := proc.Process{PID: os.Getpid(), Args: os.Args}
	if !isSelf(self) {
		t.Fatal("the command's own process is not taken for itself")
	}
	other := proc.Process{PID: os.Getpid(), Args: append(append([]string{}, os.Args...), "sleep")}
	if isSelf(other) {
		t.Fatal("a process with this PID but other arguments (another node's) is taken for this command")
	}
	if isSelf(proc.Process{PID: os.Getpid() + 1, Args: os.Args}) {
		t.Fatal("a process with the same arguments but another PID is taken for this command")
	}
}
