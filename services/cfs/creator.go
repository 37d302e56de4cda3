package cfs

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// creators make new inodes as the user who asked for them. Each is a
// goroutine locked to an OS thread of its own that never returns to the
// Go scheduler: the thread left the process's shared filesystem context
// (unshare CLONE_FS) so that its umask is 0 (the client applied the
// caller's umask already; the daemon's own umask must not apply again),
// and for each create it takes the caller's filesystem user and group
// (setfsuid, setfsgid: per thread in Linux) so the kernel gives the new
// inode its owner and group itself, atomically, with a setgid
// directory's group and bit passed on by the kernel's own rules. The
// thread keeps its capabilities while it does: the client's kernel made
// the permission decision with the caller's whole credentials (see
// docs/cfs.md), the server only must not make a second, narrower one.
type creators struct {
	jobs chan createJob
	wg   sync.WaitGroup
	// root: the daemon runs as root and can take other ids (tests run as
	// a user, whose files are all that user's).
	root bool
}

type createJob struct {
	uid, gid int
	// caps keeps the thread's capabilities (a create); without, the
	// call is checked as the user's own (a write that must clear setuid).
	caps bool
	do   func() error
	done chan error
}

// startCreators starts n creator threads, returning once all are set up.
func startCreators(n int) (*creators, error) {
	c := &creators{jobs: make(chan createJob), root: unix.Geteuid() == 0}
	// Each thread reports its setup: an error there means no create can
	// be made as its caller.
	ready := make(chan error, n)
	for range n {
		c.wg.Add(1)
		go c.run(ready)
	}
	var errs []error
	for range n {
		errs = append(errs, <-ready)
	}
	if err := errors.Join(errs...); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// stop ends the creator threads (the kernel ends the threads with them).
func (c *creators) stop() {
	close(c.jobs)
	c.wg.Wait()
}

func (c *creators) run(ready chan<- error) {
	defer c.wg.Done()
	// Never unlocked: the thread's filesystem context is its own now, so
	// it must not run other goroutines; it exits with this one.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		ready <- fmt.Errorf("cfs: creator thread: unshare CLONE_FS: %w", err)
		return
	}
	unix.Umask(0)
	ready <- nil
	for j := range c.jobs {
		if !c.root {
			j.done <- j.do()
			continue
		}
		j.done <- asCaller(j.uid, j.gid, j.caps, j.do)
	}
}

// as runs do on a creator thread as uid and gid (-1: the daemon's own),
// with the daemon's capabilities.
func (c *creators) as(uid, gid int, do func() error) error {
	return c.run1(createJob{uid: uid, gid: gid, caps: true, do: do})
}

// asUser runs do on a creator thread as uid alone, without capabilities:
// the kernel treats it as that user's call in every respect.
func (c *creators) asUser(uid int, do func() error) error {
	return c.run1(createJob{uid: uid, gid: -1, do: do})
}

func (c *creators) run1(j createJob) error {
	j.done = make(chan error, 1)
	c.jobs <- j
	return <-j.done
}

// asCaller runs do with the thread's filesystem ids set to uid and gid,
// capabilities kept if caps, and puts them back after.
func asCaller(uid, gid int, caps bool, do func() error) error {
	if gid >= 0 {
		if err := setfsid(unix.SetfsgidRetGid, gid); err != nil {
			return fmt.Errorf("cfs: setfsgid %d: %w", gid, err)
		}
		defer setfsid(unix.SetfsgidRetGid, 0)
	}
	if uid > 0 {
		if err := setfsid(unix.SetfsuidRetUid, uid); err != nil {
			return fmt.Errorf("cfs: setfsuid %d: %w", uid, err)
		}
		defer setfsid(unix.SetfsuidRetUid, 0)
		// A filesystem uid other than 0 takes the filesystem
		// capabilities out of the effective set; put them back.
		if caps {
			if err := raiseCaps(); err != nil {
				return err
			}
		}
	}
	return do()
}

// setfsid sets a filesystem id and checks it took: setfsuid and setfsgid
// answer with the previous id, never an error.
func setfsid(set func(int) (int, error), id int) error {
	set(id)
	if now, _ := set(-1); now != id {
		return unix.EPERM
	}
	return nil
}

// raiseCaps makes the thread's effective capabilities its permitted ones.
func raiseCaps() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("cfs: capget: %w", err)
	}
	data[0].Effective, data[1].Effective = data[0].Permitted, data[1].Permitted
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("cfs: capset: %w", err)
	}
	return nil
}
