// Command locus builds Locus cluster images, runs QEMU clusters and talks
// to a running cluster. The same binary is every node's /init (PID 1) and
// its node daemon.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/locus-ssi/locus/initramfs/pid1"
	"github.com/locus-ssi/locus/internal/userland"
	"github.com/locus-ssi/locus/services/proc"
	"github.com/locus-ssi/locus/services/proc/standin"
)

func main() {
	if filepath.Base(os.Args[0]) == "init" && os.Getpid() == 1 {
		pid1.Main() // never returns
	}
	args := os.Args[1:]
	if applet, ok := userland.Applets()[filepath.Base(os.Args[0])]; ok {
		// useradd, su, chown, chgrp, stat: the minimal root's own.
		if err := applet(args, os.Stdout, os.Stderr); err != nil {
			var ee userland.ExitError
			if errors.As(err, &ee) {
				os.Exit(ee.Code)
			}
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if verb, ok := proc.Commands()[filepath.Base(os.Args[0])]; ok {
		// openSSI's names: onnode 3 cmd is locus onnode 3 cmd.
		args = append([]string{verb}, args...)
	}
	if filepath.Base(os.Args[0]) == "cluster" {
		// openSSI's cluster command: `cluster` is `locus cluster status`,
		// `cluster events` is `locus cluster events`.
		if len(args) == 0 || args[0] != "events" {
			args = append([]string{"status"}, args...)
		}
		args = append([]string{"cluster"}, args...)
	}
	if err := run(args, os.Stdin, os.Stdout, os.Stderr); err != nil {
		var je jobExitError
		if errors.As(err, &je) {
			standin.Reraise(je.exit) // the job's status, or its signal, as this process's
		}
		var ec exitCodeError
		if errors.As(err, &ec) {
			os.Exit(ec.code) // a remote command's status, passed through
		}
		fmt.Fprintln(os.Stderr, "locus:", err)
		os.Exit(1)
	}
}

// run executes the command line args.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	root := newRootCmd(stdin, stdout, stderr)
	root.SetArgs(args)
	return root.Execute()
}
