package qemu

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/locus-ssi/locus/qemu/execwire"
)

// TestWriteFile: a file larger than one exec message arrives whole, in
// order, with its directory made and mode 0755, also under a name a
// shell must be careful with. The fake node runs each request's busybox
// script with this host's sh.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "exec.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			req, err := execwire.NewReader(conn).ReadRequest()
			if err == nil && len(req.Argv) == 4 && req.Argv[1] == "sh" {
				cmd := exec.Command("sh", "-c", req.Argv[3])
				cmd.Stdin = bytes.NewReader(req.Stdin)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				code := 0
				if err := cmd.Run(); err != nil {
					code = 1
				}
				execwire.Write(conn, execwire.Response{ID: req.ID, Stderr: stderr.Bytes(), Exit: code})
			}
			conn.Close()
		}
	}()
	data := make([]byte, 9<<20+123) // three pieces
	for i := range data {
		data[i] = byte(i * 7)
	}
	path := filepath.Join(dir, "a b", "it's here")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := WriteFile(ctx, sock, path, data); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("wrote %d bytes, %d arrived (or in another order)", len(data), len(got))
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, %v; want 0755", fi.Mode(), err)
	}
	if err := WriteFile(ctx, sock, "/proc/no/such/dir/x", []byte("x")); err == nil {
		t.Error("a write where no directory can be made succeeded")
	}
}
