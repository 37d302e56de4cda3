package cfs

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/locus-ssi/locus/internal/fsconform"
)

// fuseMount mounts the shared root of the server at addr through a relay
// and its FUSE front on a fresh directory.
func fuseMount(t *testing.T, addr string) (*Relay, string) {
	t.Helper()
	needRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE here: %v", err)
	}
	r := NewRelay(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}, slog.New(slog.DiscardHandler))
	r.SetPatience(10 * time.Second)
	dir := t.TempDir()
	srv, err := r.MountFUSE(dir)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; ; i++ {
			err := srv.Unmount()
			if err == nil {
				break
			}
			if i == 50 {
				t.Errorf("unmount %s: %v", dir, err)
				unix.Unmount(dir, unix.MNT_DETACH)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		srv.Wait()
	})
	return r, dir
}

// TestFUSEConformance: the conformance checks fail through the FUSE front
// only where they fail on the server's own filesystem.
func TestFUSEConformance(t *testing.T) {
	addr, export, _ := serve(t, nil)
	_, mnt := fuseMount(t, addr)
	// Other users must reach both (t.TempDir makes its directories 0700).
	for _, d := range []string{filepath.Dir(export), filepath.Dir(filepath.Dir(export)), filepath.Dir(mnt)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	local, err := fsconform.Run(ctx, export, nil)
	if err != nil {
		t.Fatal(err)
	}
	remote, err := fsconform.Run(ctx, mnt, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range remote.Failed() {
		if !slices.Contains(local.Failed(), name) {
			for _, c := range remote.Checks {
				if c.Name == name {
					t.Errorf("through FUSE only: %+v", c)
				}
			}
		}
	}
	t.Logf("%d checks; %d failures on the export's filesystem, %d through FUSE", len(remote.Checks), local.Failures, remote.Failures)
}

// TestFUSETimes: times set through the mount keep their nanoseconds.
func TestFUSETimes(t *testing.T) {
	addr, export, _ := serve(t, nil)
	_, mnt := fuseMount(t, addr)
	p := filepath.Join(mnt, "f")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := []unix.Timespec{{Sec: 1000, Nsec: 123456789}, {Sec: 2000, Nsec: 987654321}}
	if err := unix.UtimesNano(p, ts); err != nil {
		t.Fatal(err)
	}
	for _, at := range []string{p, filepath.Join(export, "f")} {
		st := lstat(t, at)
		if st.Atim != ts[0] || st.Mtim != ts[1] {
			t.Errorf("%s: times %v %v; want %v %v", at, st.Atim, st.Mtim, ts[0], ts[1])
		}
	}
}
