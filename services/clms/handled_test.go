package clms

import (
	"strings"
	"testing"
)

func TestHandledReportRoundTrip(t *testing.T) {
	want := handledReport{Node: 7, Boot: "00112233aabbccdd", Handled: 42}
	got, err := decodeHandled(encodeHandled(want))
	if err != nil || got != want {
		t.Fatalf("decodeHandled(encodeHandled(%+v)) = %+v, %v", want, got, err)
	}
}

func TestHandledReportBadInput(t *testing.T) {
	for _, c := range []struct {
		in, err string
	}{
		{"", "empty"},
		{"X{}", "kind"},
		{"H{", "handled report"},
		{`H{"n":0,"b":"x","h":1}`, "node 0"},
		{`H{"n":2,"h":1}`, "no boot id"},
		{"H" + strings.Repeat(" ", maxHandledReport), "bytes"},
	} {
		if _, err := decodeHandled([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("decodeHandled(%.20q) = %v, want an error naming %q", c.in, err, c.err)
		}
	}
}

func TestHandledMarksKeepNewestOfBoot(t *testing.T) {
	var h handledMarks
	h.note(handledReport{Node: 2, Boot: "a", Handled: 9})
	h.note(handledReport{Node: 2, Boot: "a", Handled: 5}) // late, older
	if got := h.of(2, "a"); got != 9 {
		t.Fatalf("mark of node 2 = %d, want 9", got)
	}
	if got := h.of(2, "b"); got != 0 {
		t.Fatalf("mark of node 2 in another boot = %d, want 0", got)
	}
	h.note(handledReport{Node: 2, Boot: "b", Handled: 1}) // rebooted
	if got := h.of(2, "b"); got != 1 {
		t.Fatalf("mark of node 2 after its reboot = %d, want 1", got)
	}
}

func FuzzHandledReport(f *testing.F) {
	f.Add(encodeHandled(handledReport{Node: 1, Boot: "0011223344556677", Handled: 3}))
	f.Add([]byte(`H{"n":-1}`))
	f.Add([]byte("H"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeHandled(b)
		if err != nil {
			return
		}
		if r.Node < 1 || r.Boot == "" {
			t.Fatalf("accepted %+v", r)
		}
		again, err := decodeHandled(encodeHandled(r))
		if err != nil || again != r {
			t.Fatalf("round trip of %+v: %+v, %v", r, again, err)
		}
	})
}
