package fsconform

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// Cost is the measured cost of one operation.
type Cost struct {
	Op     string        `json:"op"`
	N      int           `json:"n"`
	Median time.Duration `json:"median_ns"`
	P90    time.Duration `json:"p90_ns"`
}

// Bench measures what a user of a filesystem waits for, each operation
// n times in a new directory under dir: lstat of a path four levels
// deep, open and close, create and unlink, mkdir and rmdir, a 100-entry
// directory listing, a 64 KiB write with fsync, and starting a program
// (exe, which must exit 0 at once when run with arg) from dir's
// filesystem.
func Bench(ctx context.Context, dir string, n int, exe string, arg ...string) ([]Cost, error) {
	work, err := os.MkdirTemp(dir, "fsbench-")
	if err != nil {
		return nil, fmt.Errorf("fsbench: %w", err)
	}
	defer os.RemoveAll(work)
	deep := filepath.Join(work, "a", "b", "c")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		return nil, fmt.Errorf("fsbench: %w", err)
	}
	file := filepath.Join(deep, "f")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		return nil, fmt.Errorf("fsbench: %w", err)
	}
	list := filepath.Join(work, "list")
	os.Mkdir(list, 0o755)
	for i := range 100 {
		os.WriteFile(filepath.Join(list, fmt.Sprint(i)), nil, 0o644)
	}
	block := make([]byte, 64<<10)
	ops := []struct {
		name string
		do   func(i int) error
	}{
		{"lstat (4 levels)", func(int) error {
			var st unix.Stat_t
			return unix.Lstat(file, &st)
		}},
		{"open+close", func(int) error {
			fd, err := unix.Open(file, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"create+unlink", func(i int) error {
			p := filepath.Join(work, fmt.Sprint("c", i))
			fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err != nil {
				return err
			}
			unix.Close(fd)
			return unix.Unlink(p)
		}},
		{"mkdir+rmdir", func(i int) error {
			p := filepath.Join(work, fmt.Sprint("d", i))
			if err := unix.Mkdir(p, 0o755); err != nil {
				return err
			}
			return unix.Rmdir(p)
		}},
		{"readdir (100 entries)", func(int) error {
			_, err := os.ReadDir(list)
			return err
		}},
		{"write 64 KiB+fsync", func(int) error {
			f, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := f.Write(block); err != nil {
				return err
			}
			return f.Sync()
		}},
	}
	if exe != "" {
		ops = append(ops, struct {
			name string
			do   func(i int) error
		}{"exec " + filepath.Base(exe), func(int) error {
			return exec.CommandContext(ctx, exe, arg...).Run()
		}})
	}
	var out []Cost
	for _, op := range ops {
		times := make([]time.Duration, 0, n)
		for i := range n {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			start := time.Now()
			if err := op.do(i); err != nil {
				return out, fmt.Errorf("fsbench: %s: %w", op.name, err)
			}
			times = append(times, time.Since(start))
		}
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		out = append(out, Cost{Op: op.name, N: n, Median: times[len(times)/2], P90: times[len(times)*9/10]})
	}
	return out, nil
}
