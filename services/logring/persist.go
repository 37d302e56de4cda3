package logring

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// DefaultFileBytes is how large a persisted log grows before it is
// moved aside (Persist).
const DefaultFileBytes = 8 << 20

// persist is where a ring writes its lines on disk.
type persist struct {
	path string
	max  int64
	f    *os.File
	n    int64
}

// Persist has the ring also write each line, as a JSON object, to path
// (on a node's state disk, so its log outlives a reboot). What the
// previous boot wrote there is kept as path.1, and the boot before as
// path.2; when this boot's file passes max bytes (DefaultFileBytes if
// 0) it is moved to path.old and a new one begun, so the files are
// bounded. Lines are written as they come, unbuffered: a crash loses
// none that were logged. If writing fails the ring says so in a line
// of its own and goes on without the file.
func (r *Ring) Persist(path string, max int64) error {
	if max <= 0 {
		max = DefaultFileBytes
	}
	if err := rotate(path); err != nil {
		return fmt.Errorf("logring: %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("logring: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.disk != nil {
		r.disk.f.Close()
	}
	r.disk = &persist{path: path, max: max, f: f}
	// What was logged before the disk was there (the daemon's first
	// lines) goes to it too.
	for _, l := range r.lines {
		r.disk.write(r, l)
	}
	return nil
}

// rotate keeps the previous boots' files: path.1 → path.2, path (and
// its moved-aside part, path.old, first) → path.1.
func rotate(path string) error {
	if err := os.Rename(path+".1", path+".2"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	old, err := os.ReadFile(path + ".old")
	switch {
	case err == nil:
		cur, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := os.WriteFile(path+".1", append(old, cur...), 0o600); err != nil {
			return err
		}
		os.Remove(path + ".old")
		return os.Remove(path)
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if err := os.Rename(path, path+".1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// write puts l in the file, under r.mu.
func (p *persist) write(r *Ring, l Line) {
	b, _ := json.Marshal(l)
	b = append(b, '\n')
	if p.n+int64(len(b)) > p.max {
		p.f.Close()
		err := os.Rename(p.path, p.path+".old")
		if err == nil {
			p.f, err = os.OpenFile(p.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		}
		if err != nil {
			r.disk = nil
			r.addLocked(Line{At: time.Now(), Level: "ERROR", Msg: "logring: the log file stopped", Attrs: fmt.Sprintf("file=%s err=%q", p.path, err)})
			return
		}
		p.n = 0
	}
	n, err := p.f.Write(b)
	p.n += int64(n)
	if err != nil {
		p.f.Close()
		r.disk = nil
		r.addLocked(Line{At: time.Now(), Level: "ERROR", Msg: "logring: the log file stopped", Attrs: fmt.Sprintf("file=%s err=%q", p.path, err)})
	}
}

// Previous returns the lines the previous boot persisted (path.1) that
// f matches; an error if there is no file (no state disk, or no boot
// before this one).
func (r *Ring) Previous(f Filter) ([]Line, error) {
	r.mu.Lock()
	d := r.disk
	r.mu.Unlock()
	if d == nil {
		return nil, errors.New("logs: this node keeps no log on disk (no state disk)")
	}
	file, err := os.Open(d.path + ".1")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errors.New("logs: no log of a previous boot on this node's disk")
		}
		return nil, fmt.Errorf("logs: %w", err)
	}
	defer file.Close()
	var out []Line
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			// A line cut by a crash, or not ours: skipped, not fatal.
			continue
		}
		if f.Match(l) {
			out = append(out, l)
		}
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("logs: %s: %w", d.path+".1", err)
	}
	return out, nil
}

// Close closes the ring's file, if it has one.
func (r *Ring) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.disk == nil {
		return nil
	}
	err := r.disk.f.Close()
	r.disk = nil
	return err
}
