package cfs

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"
)

// recorder keeps what a client sends.
type recorder struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (r *recorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	r.out.Write(b)
	r.mu.Unlock()
	return r.Conn.Write(b)
}

// recordSession runs a short client session against a server and returns
// the bytes the client sent: a seed the fuzzer mutates from.
func recordSession(t testing.TB, session func(root p9.File)) []byte {
	addr, _, _ := serve(t, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{Conn: c}
	cl, err := p9.NewClient(rec)
	if err != nil {
		t.Fatal(err)
	}
	root, err := cl.Attach("/")
	if err != nil {
		t.Fatal(err)
	}
	session(root)
	cl.Close()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return bytes.Clone(rec.out.Bytes())
}

// feed writes stream to srv as one client's connection, closes it, and
// fails t unless srv is done with it within wait.
func feed(t *testing.T, srv *p9.Server, stream []byte, wait time.Duration) {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		srv.Handle(guard(server), server)
		close(done)
	}()
	go io.Copy(io.Discard, client)
	client.SetWriteDeadline(time.Now().Add(2 * time.Second))
	client.Write(stream)
	client.Close()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("the server did not finish with a closed connection")
	}
}

// FuzzServer feeds a byte stream to the 9P server as one client's
// connection: it must answer or hang up, never crash or hang, and nothing
// outside the export may change.
func FuzzServer(f *testing.F) {
	f.Add(recordSession(f, func(root p9.File) {
		_, d, _ := root.Walk(nil)
		d.Mkdir("d", 0o755, p9.NoUID, p9.NoGID)
		nf, _, _, _ := d.Create("f", p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
		if nf != nil {
			nf.WriteAt([]byte("hello"), 0)
			nf.ReadAt(make([]byte, 5), 0)
			nf.Close()
		}
		root.RenameAt("f", root, "g")
		root.Symlink("../outside", "s", p9.NoUID, p9.NoGID)
		root.UnlinkAt("g", 0)
	}))
	f.Add(recordSession(f, func(root p9.File) {
		root.Open(p9.ReadOnly)
		root.Readdir(0, 4096)
		root.StatFS()
		root.GetAttr(p9.AttrMaskAll)
	}))
	f.Fuzz(func(t *testing.T, stream []byte) {
		dir := t.TempDir()
		export := filepath.Join(dir, "export")
		os.Mkdir(export, 0o755)
		os.WriteFile(filepath.Join(dir, "outside"), []byte("keep"), 0o600)
		os.WriteFile(filepath.Join(export, "f"), []byte("keep"), 0o644)
		e, err := NewExport(export)
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		s := NewServer(e, nil, slog.New(slog.DiscardHandler))
		feed(t, s.p9, stream, 4*time.Second)
		entries, _ := os.ReadDir(dir)
		if len(entries) != 2 {
			t.Errorf("something was made beside the export: %v", entries)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "outside")); string(b) != "keep" {
			t.Errorf("the file outside the export changed: %q", b)
		}
	})
}
