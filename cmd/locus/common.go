package main

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// defaultSpec is locus.yaml in the working directory when there is one.
func defaultSpec() string {
	if _, err := os.Stat("locus.yaml"); err == nil {
		return "locus.yaml"
	}
	return ""
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// exitCodeError carries a remote command's exit code out of run.
type exitCodeError struct{ code int }

func (e exitCodeError) Error() string { return fmt.Sprintf("command exited with status %d", e.code) }
