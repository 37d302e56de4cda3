package standin

import (
	"bufio"
	"bytes"
	"net"
	"reflect"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	for _, c := range []struct {
		prog string
		args []string
		want Options
		err  string
	}{
		{"onnode", []string{"3", "uname", "-a"}, Options{Node: 3, Argv: []string{"uname", "-a"}}, ""},
		{"onnode", []string{"node3", "--", "ls", "-l"}, Options{Node: 3, Argv: []string{"ls", "-l"}}, ""},
		{"onnode", []string{"-t", "4", "--", "sh"}, Options{Node: 4, TTY: true, Argv: []string{"sh"}}, ""},
		{"onnode", []string{"3", "-d", "--env", "A=1", "--", "sleep", "9"}, Options{Node: 3, Detach: true, Env: []string{"A=1"}, Argv: []string{"sleep", "9"}}, ""},
		{"onnode", []string{"--cwd=/tmp", "-nT", "auto", "--", "pwd"}, Options{Dir: "/tmp", NoStdin: true, NoTTY: true, Argv: []string{"pwd"}}, ""},
		{"onnode", []string{"3", "sh", "-c", "a -- b"}, Options{Node: 3, Argv: []string{"sh", "-c", "a -- b"}}, ""},
		{"fast", []string{"-v", "--", "make", "-j2"}, Options{Verbose: true, Argv: []string{"make", "-j2"}}, ""},
		{"fast", []string{"true"}, Options{Argv: []string{"true"}}, ""},
		{"onnode", []string{}, Options{}, "which node"},
		{"onnode", []string{"x", "true"}, Options{}, `node "x": want a node number`},
		{"onnode", []string{"0", "true"}, Options{}, "want a node number"},
		{"onnode", []string{"3"}, Options{}, "no command"},
		{"onnode", []string{"-q", "3", "true"}, Options{}, "unknown flag -q"},
		{"onnode", []string{"--env", "X", "3", "true"}, Options{}, "want K=V"},
		{"onnode", []string{"--cwd"}, Options{}, "needs a value"},
		{"fast", []string{"--"}, Options{}, "no command"},
	} {
		got, err := ParseArgs(c.prog, c.args)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s %q: %v, want an error with %q", c.prog, c.args, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s %q = %+v, %v; want %+v", c.prog, c.args, got, err, c.want)
		}
	}
}

func TestUpgradeAnswer(t *testing.T) {
	for _, c := range []struct {
		answer, err string
	}{
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: locus-exec/1\r\n\r\nP", ""},
		{"HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\n\r\nno identity\n", "401 Unauthorized: no identity"},
		{"HTTP/1.1 403 Forbidden\r\n\r\n", "403 Forbidden"},
		{"garbage", "/s: garbage"},
	} {
		u := &upgraded{Reader: bufio.NewReader(strings.NewReader(c.answer)), sock: "/s"}
		err := u.answer()
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("answer %q: %v, want %q", c.answer, err, c.err)
		}
	}
}

func FuzzUpgradeAnswer(f *testing.F) {
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 401 Unauthorized\r\nContent-Length: 3\r\n\r\nabc"))
	f.Add([]byte("HTTP/1.1 500 x\r\nContent-Length: 99999999999\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		u := &upgraded{Reader: bufio.NewReader(bytes.NewReader(b)), sock: "/s"}
		u.answer()
	})
}

func FuzzParseArgs(f *testing.F) {
	f.Add("onnode", "3\x00--\x00ls")
	f.Add("fast", "-v\x00--env=A=1\x00true")
	f.Add("onnode", "-tTndv\x00node9\x00-d\x00--\x00x")
	f.Fuzz(func(t *testing.T, prog, args string) {
		o, err := ParseArgs(prog, strings.Split(args, "\x00"))
		if err == nil && len(o.Argv) == 0 {
			t.Fatalf("%q %q: no command and no error", prog, args)
		}
	})
}

func FuzzFrames(f *testing.F) {
	f.Add(JSONFrame(KindStart, Start{Node: 3, Argv: []string{"ls"}}).Marshal())
	f.Add(Frame{Kind: KindStdin, Data: []byte("x")}.Marshal())
	f.Add([]byte{'x', 0, 0, 0, 2, '{', '}'})
	f.Add([]byte{'S', 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := UnmarshalFrame(b)
		if err == nil {
			if !bytes.Equal(fr.Marshal(), b) {
				t.Fatalf("frame %q does not marshal back", b)
			}
			var st Start
			var e Exit
			fr.Decode(&st)
			fr.Decode(&e)
		}
		r, w := net.Pipe()
		go func() { w.Write(b); w.Close() }()
		c := NewConn(r)
		for {
			if _, err := c.Read(); err != nil {
				break
			}
		}
	})
}
