package dlm

import (
	"strings"
	"testing"
	"time"
)

func TestParseUevent(t *testing.T) {
	u, err := ParseUevent([]byte("online@/kernel/dlm/gfs2root\x00ACTION=online\x00DEVPATH=/kernel/dlm/gfs2root\x00SUBSYSTEM=dlm\x00LOCKSPACE=gfs2root\x00SEQNUM=1234\x00"))
	if err != nil || u.Action != "online" || u.Subsystem != "dlm" || u.Vars["LOCKSPACE"] != "gfs2root" {
		t.Fatalf("%+v, %v", u, err)
	}
	for _, bad := range []string{"libudev\x00\xfe\xed", "online", "online@kernel", "online@/x\x00NOVALUE", "online@/x\x00ACTION=offline"} {
		if _, err := ParseUevent([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

const locksSample = `5a0001 0 0 377 0 0 10001 2 5 -1 12000 0 6 "counter"
3b0002 0 0 401 0 0 10001 1 -1 5 800 2 6 "counter"
2c0003 3 1a0004 0 0 0 10000 2 3 -1 50 0 8 "resource"
`

func TestParseLocks(t *testing.T) {
	locks, err := ParseLocks(1, "locus", []byte(locksSample))
	if err != nil {
		t.Fatal(err)
	}
	if len(locks) != 2 {
		t.Fatalf("%d locks, want 2 (the master copy of node 3's is node 3's to report): %+v", len(locks), locks)
	}
	h, w := locks[0], locks[1]
	if h.State != "granted" || h.Granted != "EX" || h.PID != 377 || h.Master != 1 || h.Resource != "counter" || h.For != 12*time.Millisecond {
		t.Errorf("holder %+v", h)
	}
	if w.State != "waiting" || w.Requested != "EX" || w.Granted != "" || w.Master != 2 {
		t.Errorf("waiter %+v", w)
	}
	for _, bad := range []string{`1 2 3 "x"`, `5a0001 0 0 377 0 0 10001 2 5 -1 12000 0 6 counter`, `a b c d e f g h i j k l m "x"`} {
		if _, err := ParseLocks(1, "locus", []byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzParseUevent: any datagram gives an event or an error.
func FuzzParseUevent(f *testing.F) {
	f.Add([]byte("offline@/fs/gfs2/locus:root\x00ACTION=offline\x00SUBSYSTEM=gfs2\x00LOCKTABLE=locus:root\x00"))
	f.Add([]byte("add@/devices/virtual/misc/dlm_locus\x00ACTION=add\x00SUBSYSTEM=misc\x00DEVNAME=dlm_locus\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if u, err := ParseUevent(b); err == nil && (u.Action == "" || !strings.HasPrefix(u.DevPath, "/")) {
			t.Fatalf("accepted %q as %+v", b, u)
		}
	})
}

// FuzzParseLocks: any debug table gives locks or an error.
func FuzzParseLocks(f *testing.F) {
	f.Add([]byte(locksSample))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseLocks(1, "ls", b)
	})
}
