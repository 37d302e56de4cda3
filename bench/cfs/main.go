// Command cfs-bench measures the Locus CFS server against diod, Debian's
// 9P2000.L server, side by side in one run on loopback: each serves its
// own directory of the same filesystem, from its own process (Locus as
// `locus daemon --cfs-export`), and the same Go 9P client with the same
// message size runs the same workloads against both, round by round:
// a large file written (with fsync) and read back, and small-file
// metadata (create, stat, unlink). It writes medians and ratios to
// bench/RESULTS.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/locus-ssi/locus/internal/benchresults"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "cfs-bench:", err)
		os.Exit(1)
	}
}

type options struct {
	locus, diod, results string
	sizeMiB, files       int
	rounds, msize        int
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("cfs-bench", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.locus, "locus", "bin/locus", "the locus binary")
	fs.StringVar(&o.diod, "diod", "/usr/sbin/diod", "the diod binary (Debian package diod)")
	fs.StringVar(&o.results, "results", "", "bench/RESULTS.md to update (empty: print only)")
	fs.IntVar(&o.sizeMiB, "size", 256, "MiB of the large file")
	fs.IntVar(&o.files, "files", 2000, "small files for the metadata workload")
	fs.IntVar(&o.rounds, "rounds", 5, "rounds, alternating the servers")
	fs.IntVar(&o.msize, "msize", 64<<10, "9P message size asked of both servers (diod's largest is 64 KiB)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	base, err := os.MkdirTemp("/var/tmp", "locus-bench-cfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	servers := []*server{{name: "Locus CFS"}, {name: "diod"}}
	for _, s := range servers {
		s.dir = filepath.Join(base, strings.Fields(s.name)[0])
		if err := os.Mkdir(s.dir, 0o755); err != nil {
			return err
		}
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	servers[0].addr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	servers[0].attach = "/"
	servers[0].cmd = exec.CommandContext(ctx, o.locus, "daemon", "--listen", "127.0.0.1:0", "--netboot-admin", "",
		"--node-file", filepath.Join(base, "node.json"), "--cfs-export", servers[0].dir, "--cfs-listen", servers[0].addr)
	servers[1].addr = fmt.Sprintf("127.0.0.1:%d", ports[1])
	servers[1].attach = servers[1].dir
	servers[1].cmd = exec.CommandContext(ctx, o.diod, "--foreground", "--no-auth", "--listen", servers[1].addr,
		"--export", servers[1].dir, "--logdest", filepath.Join(base, "diod.log"))
	for _, s := range servers {
		s.cmd.Stdout, s.cmd.Stderr = io.Discard, io.Discard
		if err := s.cmd.Start(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		defer func() { s.cmd.Process.Kill(); s.cmd.Wait() }()
		if err := waitListening(s.addr, 10*time.Second); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	fmt.Fprintf(stdout, "cfs-bench: %d rounds of %d MiB write+read and %d files create/stat/unlink, msize %d KiB\n", o.rounds, o.sizeMiB, o.files, o.msize>>10)
	for r := 1; r <= o.rounds; r++ {
		// Locus first in even rounds, diod first in odd ones.
		round := func(s *server) func() error {
			return func() error {
				if err := s.round(o); err != nil {
					return fmt.Errorf("%s, round %d: %w", s.name, r, err)
				}
				return nil
			}
		}
		if err := benchresults.Alternate(r, round(servers[0]), round(servers[1])); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "round %d/%d: write %.0f vs %.0f MB/s, read %.0f vs %.0f MB/s, metadata %.0f vs %.0f ops/s\n", r, o.rounds,
			last(servers[0].write), last(servers[1].write), last(servers[0].read), last(servers[1].read), last(servers[0].meta), last(servers[1].meta))
	}
	report := format(servers, o)
	fmt.Fprint(stdout, report)
	if o.results != "" {
		return benchresults.WriteSection(o.results, "cfs", report)
	}
	return nil
}

type server struct {
	name, dir, addr, attach string
	cmd                     *exec.Cmd
	write, read, meta       []float64 // MB/s, MB/s, ops/s per round
}

// round runs every workload once on a fresh connection.
func (s *server) round(o options) error {
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		return err
	}
	cl, err := p9.NewClient(c, p9.WithMessageSize(uint32(o.msize)), p9.WithPlain9P2000L())
	if err != nil {
		c.Close()
		return fmt.Errorf("version: %w", err)
	}
	defer cl.Close()
	root, err := cl.Attach(s.attach)
	if err != nil {
		return fmt.Errorf("attach %s: %w", s.attach, err)
	}
	defer root.Close()

	size := int64(o.sizeMiB) << 20
	buf := make([]byte, o.msize-4096)
	for i := range buf {
		buf[i] = byte(i)
	}
	// Write, fsync'ed: the data is on the server's disk when the clock stops.
	start := time.Now()
	f, err := create(root, "big")
	if err != nil {
		return err
	}
	for off := int64(0); off < size; {
		n, err := f.WriteAt(buf[:min(int64(len(buf)), size-off)], off)
		if err != nil {
			f.Close()
			return fmt.Errorf("write at %d: %w", off, err)
		}
		off += int64(n)
	}
	if err := f.FSync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync: %w", err)
	}
	f.Close()
	s.write = append(s.write, float64(size)/1e6/time.Since(start).Seconds())

	// Read it back.
	start = time.Now()
	_, f, err = root.Walk([]string{"big"})
	if err != nil {
		return fmt.Errorf("walk: %w", err)
	}
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		f.Close()
		return fmt.Errorf("open: %w", err)
	}
	var got int64
	for got < size {
		n, err := f.ReadAt(buf, got)
		if n == 0 || (err != nil && !errors.Is(err, io.EOF)) {
			f.Close()
			return fmt.Errorf("read at %d: %d bytes, %v", got, n, err)
		}
		got += int64(n)
	}
	f.Close()
	s.read = append(s.read, float64(size)/1e6/time.Since(start).Seconds())
	if err := unlink(root, "big", 0); err != nil {
		return fmt.Errorf("unlink: %w", err)
	}

	// Metadata: create, stat and unlink small files in a directory.
	if _, err := root.Mkdir("meta", 0o755, p9.NoUID, p9.NoGID); err != nil {
		return fmt.Errorf("mkdir: %w", err)
	}
	_, dir, err := root.Walk([]string{"meta"})
	if err != nil {
		return err
	}
	defer dir.Close()
	start = time.Now()
	for i := range o.files {
		f, err := create(dir, fmt.Sprintf("f%05d", i))
		if err != nil {
			return err
		}
		f.Close()
	}
	for i := range o.files {
		_, f, err := dir.Walk([]string{fmt.Sprintf("f%05d", i)})
		if err != nil {
			return err
		}
		_, _, _, err = f.GetAttr(p9.AttrMaskAll)
		f.Close()
		if err != nil {
			return err
		}
	}
	for i := range o.files {
		if err := unlink(dir, fmt.Sprintf("f%05d", i), 0); err != nil {
			return err
		}
	}
	s.meta = append(s.meta, float64(3*o.files)/time.Since(start).Seconds())
	return unlink(root, "meta", 0x200)
}

// unlink removes name from dir as the kernel client does: Tunlinkat, or
// where the server has none (diod), a walk and Tremove.
func unlink(dir p9.File, name string, flags uint32) error {
	err := dir.UnlinkAt(name, flags)
	if !errors.Is(err, linux.EOPNOTSUPP) && !errors.Is(err, linux.ENOSYS) {
		return err
	}
	_, f, err := dir.Walk([]string{name})
	if err != nil {
		return fmt.Errorf("walk %s: %w", name, err)
	}
	r, ok := f.(interface{ Remove() error })
	if !ok {
		f.Close()
		return fmt.Errorf("remove %s: the client has no Tremove", name)
	}
	return r.Remove()
}

// create makes name in dir and returns it open for writing (Tlcreate
// turns the fid it is sent on into the new file's, so dir is cloned).
func create(dir p9.File, name string) (p9.File, error) {
	_, d, err := dir.Walk(nil)
	if err != nil {
		return nil, err
	}
	f, _, _, err := d.Create(name, p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	return f, nil
}

func format(servers []*server, o options) string {
	l, d := servers[0], servers[1]
	var b strings.Builder
	fmt.Fprintf(&b, "## CFS server (make bench-cfs)\n\n%s. Locus's CFS server (`locus daemon --cfs-export`) and diod %s, each in its own process serving its own directory of the same ext4 filesystem (/var/tmp), on loopback; the same Go 9P2000.L client (hugelgupf/p9, plain 9P2000.L, msize %d KiB) against both, %d rounds, each running every workload on both servers, Locus first in even rounds and diod first in odd ones; medians. Higher is better; the ratio is the %s (Locus / diod).\n\n",
		benchresults.Machine(), diodVersion(o.diod), o.msize>>10, o.rounds, benchresults.RatioRule)
	fmt.Fprintf(&b, "| workload | Locus CFS | diod | ratio |\n|---|---|---|---|\n")
	var rows []benchresults.Row
	row := func(what, short, unit string, a, z []float64) {
		ma, mz := benchresults.Median(a), benchresults.Median(z)
		fmt.Fprintf(&b, "| %s | %.1f %s | %.1f %s | %.2f |\n", what, ma, unit, mz, unit, ma/mz)
		rows = append(rows, benchresults.Row{What: short, Ratio: ma / mz})
	}
	row(fmt.Sprintf("write %d MiB + fsync", o.sizeMiB), "write", "MB/s", l.write, d.write)
	row(fmt.Sprintf("read %d MiB", o.sizeMiB), "read", "MB/s", l.read, d.read)
	row(fmt.Sprintf("metadata: create, stat, unlink %d files", o.files), "metadata", "ops/s", l.meta, d.meta)
	fmt.Fprintf(&b, "\n%s\n", benchresults.Reading("diod", rows))
	b.WriteString("\ndiod has no Tunlinkat: as the kernel client does, the benchmark then walks to the file and sends Tremove (two round trips where Locus takes one).\n")
	b.WriteString("\nThe kernel's own 9P client is not used here: this host's kernel has no 9p module (the guests' has, and mounts the shared root with it).\n")
	return b.String()
}

func diodVersion(path string) string {
	out, _ := exec.Command("dpkg-query", "-W", "-f=${Version}", "diod").Output()
	if len(out) == 0 {
		return "(" + path + ")"
	}
	return string(out) + " (Debian)"
}

func last(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	return v[len(v)-1]
}

func freePorts(n int) ([]int, error) {
	var out []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func waitListening(addr string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after %s: %w", addr, wait, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
