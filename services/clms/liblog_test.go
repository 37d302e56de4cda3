package clms

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestLibLogKeepsLevels: Raft's and memberlist's lines reach the
// daemon's log at the level they name, with the library named.
func TestLibLogKeepsLevels(t *testing.T) {
	var buf bytes.Buffer
	w := newLibLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), "raft")
	w.Write([]byte("[WARN]  raft: heartbeat timeout reached: last-leader-addr=127.0.0.1:7473\n[DEBUG] memberlist: Stream connection from=127.0.0.1:1\n\n"))
	out := buf.String()
	for _, want := range []string{`level=WARN msg="raft: heartbeat timeout reached: last-leader-addr=127.0.0.1:7473" lib=raft`, `level=DEBUG msg="memberlist: Stream connection from=127.0.0.1:1"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if strings.Count(out, "\n") != 2 {
		t.Errorf("an empty line was logged:\n%s", out)
	}
}
