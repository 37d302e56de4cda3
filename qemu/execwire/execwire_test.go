package execwire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	var b bytes.Buffer
	req := Request{ID: 7, Argv: []string{"uname", "-n"}, Stdin: []byte("x"), TimeoutMS: 1000}
	if err := Write(&b, req); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, Response{ID: 7, Stdout: []byte("node1\n"), Exit: 0}); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&b)
	got, err := r.ReadRequest()
	if err != nil || got.ID != 7 || got.Argv[1] != "-n" || string(got.Stdin) != "x" {
		t.Fatalf("ReadRequest = %+v, %v", got, err)
	}
	resp, err := r.ReadResponse()
	if err != nil || resp.ID != 7 || string(resp.Stdout) != "node1\n" {
		t.Fatalf("ReadResponse = %+v, %v", resp, err)
	}
	if _, err := r.ReadRequest(); err != io.EOF {
		t.Errorf("ReadRequest at end = %v, want io.EOF", err)
	}
}

func TestBadRequests(t *testing.T) {
	for _, in := range []string{"{", `{"id":1}`, `{"id":1,"argv":[""]}`, `{"id":1,"argv":["x"],"timeout_ms":-1}`, "null"} {
		if _, err := DecodeRequest([]byte(in)); !errors.Is(err, ErrBadMessage) {
			t.Errorf("DecodeRequest(%q) = %v, want ErrBadMessage", in, err)
		}
	}
}

func TestOverlongLineKeepsStreamInStep(t *testing.T) {
	in := strings.Repeat("a", MaxLine+10) + "\n" + `{"id":2,"argv":["true"]}` + "\n"
	r := NewReader(strings.NewReader(in))
	if _, err := r.ReadRequest(); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("first ReadRequest = %v, want ErrBadMessage", err)
	}
	got, err := r.ReadRequest()
	if err != nil || got.ID != 2 {
		t.Fatalf("second ReadRequest = %+v, %v, want id 2", got, err)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"id":1,"argv":["ls","-l"],"timeout_ms":5}`))
	f.Add([]byte(`{"id":1,"argv":[]}`))
	f.Add([]byte(`{"argv":["a"],"stdin":"AAAA"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := DecodeRequest(b)
		if err == nil && (len(req.Argv) == 0 || req.Argv[0] == "" || len(req.Argv) > MaxArgs || req.TimeoutMS < 0) {
			t.Fatalf("DecodeRequest accepted %+v", req)
		}
	})
}
