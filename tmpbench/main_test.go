package main

import (
	"context"
	"io"
	"os/exec"
	"testing"
	"time"

	"github.com/locus-ssi/locus/internal/testutil"
	"github.com/locus-ssi/locus/services/clms"
	"github.com/locus-ssi/locus/services/locusd"
	"github.com/locus-ssi/locus/services/proc/standin"
)

func TestRT(t *testing.T) {
	d := &testutil.Daemons{T: t, Bin: "/work/main/bin/locus", Dir: t.TempDir(), Procs: map[int]*exec.Cmd{}, Net: "127.0.81"}
	defer func() {
		for n := range d.Procs {
			d.Kill(n)
		}
	}()
	d.Start(1)
	d.Start(2)
	d.Wait("up", map[int]clms.State{1: clms.Up, 2: clms.Up})
	c := locusd.LocalClient(d.UserSocket(1))
	for _, node := range []int{1, 2} {
		for i := 0; i < 8; i++ {
			start := time.Now()
			rwc, err := c.OpenJob(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			t1 := time.Since(start)
			_, e := standin.Attach(context.Background(), standin.NewConn(rwc), standin.Start{Node: node, Argv: []string{"true"}, Dir: "/"}, standin.Stdio{Stdout: io.Discard, Stderr: io.Discard})
			t.Log(node, t1, time.Since(start), e.Code)
		}
	}
	for i := 0; i < 5; i++ {
		start := time.Now()
		cmd := exec.Command("/work/main/bin/onnode", "2", "--", "true")
		cmd.Env = []string{"LOCUS_ENDPOINT=" + d.UserSocket(1)}
		cmd.Run()
		t.Log("cli", time.Since(start))
	}
}
