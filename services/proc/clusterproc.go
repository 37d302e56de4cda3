package proc

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The clusterwide /proc (mounted at ProcMount on every node): a
// directory per cluster PID, owned by the process's user, whose stat and
// status carry cluster PIDs and start times on one cluster clock; the
// cluster's stat, meminfo, loadavg, uptime and cpuinfo (Kerrighed's
// rules); each node's own under nodes/N; self the caller's CPID; what
// else /proc has, passed through from this node's. Every file is read
// with direct I/O (its size is 0, as in /proc), and each node's
// processes are fetched at most every SnapshotEvery.

// ProcMount is where every node mounts the clusterwide /proc.
const ProcMount = "/cluster/proc"

// ProcSocket is where locusd takes init's FUSE mount of the clusterwide
// /proc (internal/fusefd).
const ProcSocket = "/run/locus/private/proc-fuse.sock"

// SnapshotEvery is how often a node's processes are fetched at most.
const SnapshotEvery = 500 * time.Millisecond

const methodRaw = "proc.raw"

// procView is the clusterwide /proc's data: every Up node's RawNode,
// each kept for SnapshotEvery.
type procView struct {
	s *Service

	mu    sync.Mutex
	nodes map[int]*snapshot
}

type snapshot struct {
	mu  sync.Mutex
	at  time.Time
	raw *RawNode
	err error
}

// node is node n's snapshot, fetched again if older than SnapshotEvery.
func (v *procView) node(ctx context.Context, n int) (*RawNode, error) {
	v.mu.Lock()
	sn := v.nodes[n]
	if sn == nil {
		sn = &snapshot{}
		v.nodes[n] = sn
	}
	v.mu.Unlock()
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if time.Since(sn.at) < SnapshotEvery {
		return sn.raw, sn.err
	}
	var raw RawNode
	var err error
	if n == v.s.cfg.Node {
		raw, err = v.s.host.Raw()
	} else {
		err = v.s.call(ctx, n, methodRaw, nil, &raw)
	}
	sn.at, sn.raw, sn.err = time.Now(), &raw, err
	if err != nil {
		sn.raw = nil
	}
	return sn.raw, err
}

// all is every Up node's snapshot (those that answer), in node order.
func (v *procView) all(ctx context.Context) []*RawNode {
	up := v.s.cfg.Up()
	out := make([]*RawNode, len(up))
	var wg sync.WaitGroup
	for i, n := range up {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], _ = v.node(ctx, n)
		}()
	}
	wg.Wait()
	out = slices.DeleteFunc(out, func(r *RawNode) bool { return r == nil })
	slices.SortFunc(out, func(a, b *RawNode) int { return a.Node - b.Node })
	return out
}

// clock is the cluster's boot time: the earliest node's.
func (v *procView) clock(nodes []*RawNode) clusterTime {
	c := clusterTime{btime: v.s.host.btime}
	for _, n := range nodes {
		if n.Btime > 0 && n.Btime < c.btime {
			c.btime = n.Btime
		}
	}
	return c
}

// process is the files of the process a cluster PID names; this node's
// own are read as they are now, the others' from their node's snapshot.
func (v *procView) process(ctx context.Context, cpid int64) (*RawProc, *RawNode, error) {
	node, pid := SplitCPID(cpid)
	if node == v.s.cfg.Node {
		p, ok := v.s.host.rawProc(pid)
		if !ok {
			return nil, nil, syscall.ENOENT
		}
		return &p, &RawNode{Node: node, Btime: v.s.host.btime}, nil
	}
	if !slices.Contains(v.s.cfg.Up(), node) {
		return nil, nil, syscall.ENOENT
	}
	raw, err := v.node(ctx, node)
	if err != nil {
		return nil, nil, syscall.EIO
	}
	i, ok := slices.BinarySearchFunc(raw.Procs, pid, func(p RawProc, pid int) int { return p.PID - pid })
	if !ok {
		return nil, nil, syscall.ENOENT
	}
	return &raw.Procs[i], raw, nil
}

// MountProc serves the clusterwide /proc on dir (tests; on a node init
// mounts it and hands the connection over: ServeProcFD).
func (s *Service) MountProc(dir string) (*fuse.Server, error) {
	opts := s.procOptions()
	opts.MountOptions.DirectMountStrict = true
	srv, err := fs.Mount(dir, s.procRoot(), opts)
	if err != nil {
		return nil, fmt.Errorf("proc: mount the clusterwide /proc on %s: %w", dir, err)
	}
	return srv, nil
}

// ProcMountOptions are the options init mounts the clusterwide /proc
// with (fusefd.Mount): every user may read it.
const ProcMountOptions = "rootmode=40555,user_id=0,group_id=0,allow_other"

// ServeProcFD serves the clusterwide /proc on an already mounted FUSE
// connection fd; it returns once the kernel is served.
func (s *Service) ServeProcFD(fd int) error {
	raw := fs.NewNodeFS(s.procRoot(), s.procOptions())
	srv, err := fuse.NewServer(raw, fmt.Sprintf("/dev/fd/%d", fd), &s.procOptions().MountOptions)
	if err != nil {
		return fmt.Errorf("proc: serve the clusterwide /proc: %w", err)
	}
	go func() {
		srv.Serve()
		s.cfg.Log.Info("the clusterwide /proc is unmounted")
	}()
	if err := srv.WaitMount(); err != nil {
		return fmt.Errorf("proc: serve the clusterwide /proc: %w", err)
	}
	s.cfg.Log.Info("serving the clusterwide /proc")
	return nil
}

func (s *Service) procOptions() *fs.Options {
	second := time.Second
	zero := time.Duration(0)
	return &fs.Options{EntryTimeout: &second, AttrTimeout: &second, NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{AllowOther: true, FsName: "locus", Name: "locus-proc", DisableXAttrs: true,
			MaxBackground: 64, Logger: nil}}
}

func (s *Service) procRoot() *procRoot {
	return &procRoot{v: &procView{s: s, nodes: map[int]*snapshot{}}}
}

// rawHandler serves this node's RawNode over ICS.
func rawHandler(s *Service) func(context.Context, int, []byte) ([]byte, error) {
	return func(context.Context, int, []byte) ([]byte, error) {
		r, err := s.host.Raw()
		if err != nil {
			return nil, err
		}
		return json.Marshal(r)
	}
}

// procRoot is /cluster/proc.
type procRoot struct {
	fs.Inode
	v *procView
}

var (
	_ fs.NodeLookuper  = (*procRoot)(nil)
	_ fs.NodeReaddirer = (*procRoot)(nil)
	_ fs.NodeGetattrer = (*procRoot)(nil)
)

// aggregates are the cluster's own files at the root (and each node's
// under nodes/N).
func aggregates() []string { return []string{"stat", "meminfo", "loadavg", "uptime", "cpuinfo"} }

// fileEntries lists files names.
func fileEntries(names []string) []fuse.DirEntry {
	es := make([]fuse.DirEntry, 0, len(names))
	for _, n := range names {
		es = append(es, fuse.DirEntry{Name: n, Mode: syscall.S_IFREG})
	}
	return es
}

func (r *procRoot) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o555
	return 0
}

func (r *procRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	v := r.v
	switch {
	case name == "self":
		// Whoever asks: never cached.
		out.SetEntryTimeout(0)
		out.SetAttrTimeout(0)
		return r.NewInode(ctx, &selfLink{v: v}, fs.StableAttr{Mode: syscall.S_IFLNK}), 0
	case slices.Contains(aggregates(), name):
		name := name
		return r.NewInode(ctx, &genFile{gen: func(ctx context.Context) ([]byte, error) { return v.aggregate(ctx, name) }},
			fs.StableAttr{Mode: syscall.S_IFREG}), 0
	case name == "nodes":
		return r.NewInode(ctx, &nodesDir{v: v}, fs.StableAttr{Mode: syscall.S_IFDIR}), 0
	case name == "sys":
		return r.NewInode(ctx, &hostDir{path: filepath.Join(v.s.cfg.ProcDir, "sys"), rel: "sys", v: v}, fs.StableAttr{Mode: syscall.S_IFDIR}), 0
	}
	if cpid, err := strconv.ParseInt(name, 10, 64); err == nil && cpid > 0 {
		if cpid <= MaxPID {
			// A local PID is this node's process (not listed: its CPID
			// is): what a program finds of itself by getpid().
			cpid = CPID(v.s.cfg.Node, int(cpid))
		}
		p, _, err := v.process(ctx, cpid)
		if err != nil {
			return nil, syscall.ENOENT
		}
		uid, gid := ids(p.Status)
		d := &pidDir{v: v, cpid: cpid, uid: uid, gid: gid}
		d.attr(&out.Attr)
		return r.NewInode(ctx, d, fs.StableAttr{Mode: syscall.S_IFDIR}), 0
	}
	return hostEntry(ctx, &r.Inode, filepath.Join(v.s.cfg.ProcDir, name), name, v, out)
}

func (r *procRoot) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	es := append(fileEntries(aggregates()), fuse.DirEntry{Name: "nodes", Mode: syscall.S_IFDIR}, fuse.DirEntry{Name: "sys", Mode: syscall.S_IFDIR},
		fuse.DirEntry{Name: "self", Mode: syscall.S_IFLNK})
	for _, n := range r.v.all(ctx) {
		for _, p := range n.Procs {
			es = append(es, fuse.DirEntry{Name: FormatCPID(n.Node, p.PID), Mode: syscall.S_IFDIR})
		}
	}
	// The rest of this node's /proc, but its processes (and what the
	// cluster has of its own).
	ents, _ := os.ReadDir(r.v.s.cfg.ProcDir)
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil || slices.Contains(aggregates(), e.Name()) ||
			e.Name() == "self" || e.Name() == "sys" || e.Name() == "thread-self" {
			continue
		}
		es = append(es, fuse.DirEntry{Name: e.Name(), Mode: direntMode(e)})
	}
	return fs.NewListDirStream(es), 0
}

func direntMode(e os.DirEntry) uint32 {
	switch {
	case e.IsDir():
		return syscall.S_IFDIR
	case e.Type()&os.ModeSymlink != 0:
		return syscall.S_IFLNK
	}
	return syscall.S_IFREG
}

// aggregate is one of the cluster's files.
func (v *procView) aggregate(ctx context.Context, name string) ([]byte, error) {
	nodes := v.all(ctx)
	raws := make([]RawNode, len(nodes))
	for i, n := range nodes {
		raws[i] = *n
	}
	c := v.clock(nodes)
	switch name {
	case "stat":
		return aggregateStat(raws, c.btime), nil
	case "meminfo":
		return aggregateMeminfo(raws), nil
	case "loadavg":
		return aggregateLoadavg(raws), nil
	case "uptime":
		return aggregateUptime(raws, c.btime, time.Now().Unix()), nil
	case "cpuinfo":
		return aggregateCpuinfo(raws), nil
	}
	return nil, syscall.ENOENT
}

// selfLink is /cluster/proc/self: the CPID of the process reading it.
type selfLink struct {
	fs.Inode
	v *procView
}

var _ fs.NodeReadlinker = (*selfLink)(nil)

func (l *selfLink) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	pid := callerTgid(ctx, l.v.s.cfg.ProcDir)
	if pid == 0 {
		return nil, syscall.ENOENT
	}
	return []byte(FormatCPID(l.v.s.cfg.Node, pid)), 0
}

// callerTgid is the process (not thread) that made the request.
func callerTgid(ctx context.Context, procDir string) int {
	c, ok := fuse.FromContext(ctx)
	if !ok || c.Pid == 0 {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(int(c.Pid)), "status"))
	if err != nil {
		return int(c.Pid)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return n
			}
		}
	}
	return int(c.Pid)
}

// pidDir is /cluster/proc/CPID.
type pidDir struct {
	fs.Inode
	v        *procView
	cpid     int64
	uid, gid uint32
}

var (
	_ fs.NodeLookuper  = (*pidDir)(nil)
	_ fs.NodeReaddirer = (*pidDir)(nil)
	_ fs.NodeGetattrer = (*pidDir)(nil)
)

// pidFiles are a process's files.
func pidFiles() []string { return []string{"stat", "status", "cmdline", "statm", "node"} }

func (d *pidDir) attr(a *fuse.Attr) {
	a.Mode = syscall.S_IFDIR | 0o555
	a.Owner = fuse.Owner{Uid: d.uid, Gid: d.gid}
}

func (d *pidDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.attr(&out.Attr)
	return 0
}

func (d *pidDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return fs.NewListDirStream(fileEntries(pidFiles())), 0
}

func (d *pidDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if !slices.Contains(pidFiles(), name) {
		return nil, syscall.ENOENT
	}
	f := &genFile{uid: d.uid, gid: d.gid, gen: func(ctx context.Context) ([]byte, error) { return d.file(ctx, name) }}
	f.attr(&out.Attr)
	return d.NewInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG}), 0
}

// file is one of the process's files, rewritten for the cluster.
func (d *pidDir) file(ctx context.Context, name string) ([]byte, error) {
	p, raw, err := d.v.process(ctx, d.cpid)
	if err != nil {
		return nil, err
	}
	node, _ := SplitCPID(d.cpid)
	switch name {
	case "stat":
		nodes := d.v.all(ctx)
		return rewriteStat(p.Stat, node, d.v.clock(nodes).shift(raw.Btime), node != d.v.s.cfg.Node)
	case "status":
		return rewriteStatus(p.Status, node), nil
	case "cmdline":
		return p.Cmdline, nil
	case "statm":
		return p.Statm, nil
	case "node":
		return []byte(strconv.Itoa(node) + "\n"), nil
	}
	return nil, syscall.ENOENT
}

// genFile is a file whose contents are made when it is opened.
type genFile struct {
	fs.Inode
	uid, gid uint32
	mode     uint32
	gen      func(ctx context.Context) ([]byte, error)
}

var (
	_ fs.NodeOpener    = (*genFile)(nil)
	_ fs.NodeGetattrer = (*genFile)(nil)
)

func (f *genFile) attr(a *fuse.Attr) {
	a.Mode = syscall.S_IFREG | 0o444
	if f.mode != 0 {
		a.Mode = syscall.S_IFREG | f.mode
	}
	a.Owner = fuse.Owner{Uid: f.uid, Gid: f.gid}
}

func (f *genFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.attr(&out.Attr)
	return 0
}

func (f *genFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EACCES
	}
	b, err := f.gen(ctx)
	if err != nil {
		if errno, ok := err.(syscall.Errno); ok {
			return nil, 0, errno
		}
		return nil, 0, syscall.EIO
	}
	return &bytesHandle{b: b}, fuse.FOPEN_DIRECT_IO, 0
}

// bytesHandle reads what a file's Open made.
type bytesHandle struct{ b []byte }

var _ fs.FileReader = (*bytesHandle)(nil)

func (h *bytesHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(h.b)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(h.b)))
	return fuse.ReadResultData(h.b[off:end]), 0
}

// nodesDir is /cluster/proc/nodes: each Up node's own files.
type nodesDir struct {
	fs.Inode
	v *procView
}

var (
	_ fs.NodeLookuper  = (*nodesDir)(nil)
	_ fs.NodeReaddirer = (*nodesDir)(nil)
)

func (d *nodesDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	es := []fuse.DirEntry{{Name: "self", Mode: syscall.S_IFLNK}}
	for _, n := range d.v.s.cfg.Up() {
		es = append(es, fuse.DirEntry{Name: strconv.Itoa(n), Mode: syscall.S_IFDIR})
	}
	return fs.NewListDirStream(es), 0
}

func (d *nodesDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if name == "self" {
		return d.NewInode(ctx, &fs.MemSymlink{Data: []byte(strconv.Itoa(d.v.s.cfg.Node))}, fs.StableAttr{Mode: syscall.S_IFLNK}), 0
	}
	n, err := strconv.Atoi(name)
	if err != nil || !slices.Contains(d.v.s.cfg.Up(), n) {
		return nil, syscall.ENOENT
	}
	return d.NewInode(ctx, &nodeDir{v: d.v, node: n}, fs.StableAttr{Mode: syscall.S_IFDIR}), 0
}

// nodeDir is /cluster/proc/nodes/N.
type nodeDir struct {
	fs.Inode
	v    *procView
	node int
}

var (
	_ fs.NodeLookuper  = (*nodeDir)(nil)
	_ fs.NodeReaddirer = (*nodeDir)(nil)
)

func (d *nodeDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return fs.NewListDirStream(fileEntries(aggregates())), 0
}

func (d *nodeDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if !slices.Contains(aggregates(), name) {
		return nil, syscall.ENOENT
	}
	f := &genFile{gen: func(ctx context.Context) ([]byte, error) {
		raw, err := d.v.node(ctx, d.node)
		if err != nil {
			return nil, syscall.EIO
		}
		switch name {
		case "stat":
			return raw.Stat, nil
		case "meminfo":
			return raw.Meminfo, nil
		case "loadavg":
			return raw.Loadavg, nil
		case "uptime":
			return raw.Uptime, nil
		}
		return raw.Cpuinfo, nil
	}}
	f.attr(&out.Attr)
	return d.NewInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG}), 0
}

// hostDir is a directory of this node's /proc, passed through; sys's
// kernel/pid_max is the cluster's.
type hostDir struct {
	fs.Inode
	path string
	rel  string
	v    *procView
}

var (
	_ fs.NodeLookuper  = (*hostDir)(nil)
	_ fs.NodeReaddirer = (*hostDir)(nil)
	_ fs.NodeGetattrer = (*hostDir)(nil)
)

func (d *hostDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	if err := syscall.Stat(d.path, &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	return 0
}

func (d *hostDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ents, err := os.ReadDir(d.path)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	es := make([]fuse.DirEntry, 0, len(ents))
	for _, e := range ents {
		es = append(es, fuse.DirEntry{Name: e.Name(), Mode: direntMode(e)})
	}
	return fs.NewListDirStream(es), 0
}

func (d *hostDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return hostEntry(ctx, &d.Inode, filepath.Join(d.path, name), d.rel+"/"+name, d.v, out)
}

// hostEntry is path of this node's /proc, as a node under parent.
func hostEntry(ctx context.Context, parent *fs.Inode, path, rel string, v *procView, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if rel == "sys/kernel/pid_max" {
		f := &genFile{gen: func(ctx context.Context) ([]byte, error) {
			return []byte(strconv.FormatInt(CPID(slices.Max(v.s.cfg.Up())+1, 0)-1, 10) + "\n"), nil
		}}
		f.attr(&out.Attr)
		return parent.NewInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG}), 0
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		return nil, fs.ToErrno(err)
	}
	out.FromStat(&st)
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		return parent.NewInode(ctx, &hostDir{path: path, rel: rel, v: v}, fs.StableAttr{Mode: syscall.S_IFDIR}), 0
	case syscall.S_IFLNK:
		target, err := os.Readlink(path)
		if err != nil {
			return nil, fs.ToErrno(err)
		}
		return parent.NewInode(ctx, &fs.MemSymlink{Data: []byte(target)}, fs.StableAttr{Mode: syscall.S_IFLNK}), 0
	}
	f := &genFile{uid: st.Uid, gid: st.Gid, mode: st.Mode & 0o7777 &^ 0o222,
		gen: func(context.Context) ([]byte, error) { return os.ReadFile(path) }}
	return parent.NewInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG}), 0
}
