package locusd

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWatchFile: replacing the node file by rename (as init writes it),
// or writing it in place, is seen at once; another file in the same
// directory is not.
func TestWatchFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.json")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := watchFile(ctx, path, slog.New(slog.DiscardHandler))
	if ch == nil {
		t.Fatal("no inotify watch")
	}
	expect := func(what string, want bool) {
		t.Helper()
		select {
		case <-ch:
			if !want {
				t.Errorf("%s: seen as a change of the node file", what)
			}
		case <-time.After(500 * time.Millisecond):
			if want {
				t.Errorf("%s: not seen within 500ms", what)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "other"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect("another file written", false)
	if err := os.WriteFile(path+".tmp", []byte(`{"runlevel":3}`), 0o644); err != nil {
		t.Fatal(err)
	}
	<-time.After(50 * time.Millisecond)
	for len(ch) > 0 {
		<-ch
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	expect("renamed onto", true)
	if err := os.WriteFile(path, []byte(`{"runlevel":2}`), 0o644); err != nil {
		t.Fatal(err)
	}
	expect("written in place", true)
	cancel()
}
