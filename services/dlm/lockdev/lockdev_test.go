package lockdev

import (
	"encoding/binary"
	"errors"
	"testing"
)

// TestLockRequestLayout: the bytes of a lock request sit where the
// kernel's struct dlm_write_request (amd64) has them.
func TestLockRequestLayout(t *testing.T) {
	r := lockRequest{cmd: cmdLock, mode: EX, flags: NoQueue | ValBlk, lkid: 7, cookie: 0x1122, bast: true, name: "res"}
	r.lvb[0], r.lvb[31] = 0xaa, 0xbb
	b := r.encode()
	if len(b) != 120+3 {
		t.Fatalf("length %d, want 123", len(b))
	}
	u32 := func(o int) uint32 { return binary.LittleEndian.Uint32(b[o:]) }
	u64 := func(o int) uint64 { return binary.LittleEndian.Uint64(b[o:]) }
	checks := []struct {
		what      string
		got, want uint64
	}{
		{"version major", uint64(u32(0)), 6}, {"version minor", uint64(u32(4)), 0}, {"cmd", uint64(b[12]), 1}, {"is64bit", uint64(b[13]), 1},
		{"mode", uint64(b[16]), 5}, {"namelen", uint64(b[17]), 3}, {"flags", uint64(u32(20)), 0x9}, {"lkid", uint64(u32(24)), 7},
		{"castparam", u64(48), 0x1122}, {"castaddr", u64(56), tagCompletion}, {"bastparam", u64(64), 0x1122},
		{"bastaddr", u64(72), tagBlocking}, {"lksb", u64(80), 0x1122}, {"lvb[0]", uint64(b[88]), 0xaa}, {"lvb[31]", uint64(b[119]), 0xbb},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.what, c.got, c.want)
		}
	}
	if string(b[120:]) != "res" {
		t.Errorf("name %q", b[120:])
	}
	// Without a blocking handler, bastaddr 0 tells the kernel to send none.
	r.bast = false
	if got := binary.LittleEndian.Uint64(r.encode()[72:]); got != 0 {
		t.Errorf("bastaddr without a handler = %d, want 0", got)
	}
}

func TestLockspaceRequestLayout(t *testing.T) {
	b := lockspaceRequest(cmdRemoveLS, lsflgForceFree, 121, "ls1")
	if b[12] != cmdRemoveLS || binary.LittleEndian.Uint32(b[16:]) != 2 || binary.LittleEndian.Uint32(b[20:]) != 121 || string(b[24:27]) != "ls1" || b[27] != 0 {
		t.Errorf("lockspace request % x", b[:32])
	}
}

func resultBytes(tag, cookie uint64, status int32, lkid uint32, lvb []byte) []byte {
	b := make([]byte, resultSize, resultSize+LVBLen)
	binary.LittleEndian.PutUint32(b[0:], 6)
	binary.LittleEndian.PutUint32(b[8:], 2)
	binary.LittleEndian.PutUint64(b[16:], tag)
	binary.LittleEndian.PutUint64(b[24:], cookie)
	binary.LittleEndian.PutUint64(b[32:], cookie)
	binary.LittleEndian.PutUint32(b[40:], uint32(status))
	binary.LittleEndian.PutUint32(b[44:], lkid)
	b[64] = byte(PR)
	if lvb != nil {
		binary.LittleEndian.PutUint32(b[68:], resultSize)
		b = append(b, lvb...)
	}
	return b
}

func TestParseResult(t *testing.T) {
	lvb := make([]byte, LVBLen)
	lvb[3] = 9
	r, err := parseResult(resultBytes(tagCompletion, 42, 0, 0x10001, lvb))
	if err != nil || r.blocking || r.cookie != 42 || r.status != 0 || r.lkid != 0x10001 || len(r.lvb) != LVBLen || r.lvb[3] != 9 {
		t.Errorf("completion: %+v, %v", r, err)
	}
	r, err = parseResult(resultBytes(tagBlocking, 42, 0, 1, nil))
	if err != nil || !r.blocking || r.bastMode != PR || r.lvb != nil {
		t.Errorf("blocking callback: %+v, %v", r, err)
	}
	bad := map[string][]byte{
		"short":          make([]byte, 60),
		"wrong version":  append([]byte{5}, resultBytes(tagCompletion, 1, 0, 1, nil)[1:]...),
		"unknown tag":    resultBytes(9, 1, 0, 1, nil),
		"lvb past bytes": resultBytes(tagCompletion, 1, 0, 1, nil)[:resultSize],
	}
	b := bad["lvb past bytes"]
	binary.LittleEndian.PutUint32(b[68:], resultSize)
	for what, b := range bad {
		if _, err := parseResult(b); err == nil {
			t.Errorf("%s: no error", what)
		}
	}
}

func TestStatusErrors(t *testing.T) {
	for status, want := range map[int32]error{0: nil, -11: ErrWouldBlock, statusCancelled: ErrCancelled, -35: ErrDeadlock, statusUnlocked: nil} {
		if got := statusError(status); !errors.Is(got, want) && !(got == nil && want == nil) {
			t.Errorf("status %d: %v, want %v", status, got, want)
		}
	}
	if err := statusError(-22); err == nil || err.Error() != "dlm: invalid argument" {
		t.Errorf("EINVAL: %v", err)
	}
}

// TestCompatibility: the kernel's matrix, which is symmetric, with NL
// compatible with all and EX with NL only.
func TestCompatibility(t *testing.T) {
	for a := NL; a <= EX; a++ {
		for b := NL; b <= EX; b++ {
			if Compatible(a, b) != Compatible(b, a) {
				t.Errorf("%v/%v not symmetric", a, b)
			}
		}
		if !Compatible(NL, a) || Compatible(EX, a) != (a == NL) {
			t.Errorf("row %v wrong", a)
		}
	}
	if !Compatible(PR, PR) || Compatible(PR, CW) || !Compatible(CW, CW) || Compatible(PW, PW) || Compatible(-1, NL) {
		t.Error("PR/CW/PW rows wrong")
	}
}

func TestNames(t *testing.T) {
	for _, s := range []string{"locus", "a", "gfs2-root_1.x"} {
		if err := CheckLockspaceName(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	long := string(make([]byte, 65))
	for _, s := range []string{"", "..", "a/b", "sp ace", "x\x00", long} {
		if err := CheckLockspaceName(s); err == nil {
			t.Errorf("%q: accepted", s)
		}
	}
	if CheckResourceName(string(make([]byte, 64))) != nil || CheckResourceName(string(make([]byte, 65))) == nil || CheckResourceName("") == nil {
		t.Error("resource name limits")
	}
	for _, s := range []string{"ex", "PR", "nl"} {
		if _, err := ParseMode(s); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseMode("XX"); err == nil {
		t.Error("XX accepted")
	}
}

// FuzzParseResult: whatever the device returns, parsing gives a result
// or an error, never a crash, and a value block only within the bytes.
func FuzzParseResult(f *testing.F) {
	f.Add(resultBytes(tagCompletion, 1, 0, 1, make([]byte, LVBLen)))
	f.Add(resultBytes(tagBlocking, 2, -11, 3, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseResult(b)
		if err == nil && r.lvb != nil && len(r.lvb) != LVBLen {
			t.Fatalf("value block of %d bytes", len(r.lvb))
		}
	})
}
