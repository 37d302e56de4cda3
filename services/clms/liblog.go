package clms

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
)

// libLog is an io.Writer that puts the lines Raft and memberlist write
// (hclog's "[INFO]  raft: ..." and the standard logger's "[DEBUG]
// memberlist: ...") into the daemon's slog, at the level each line
// names, with the library as an attribute: their logs are the
// daemon's, not discarded.
type libLog struct {
	log *slog.Logger
	lib string
}

func newLibLog(log *slog.Logger, lib string) *libLog { return &libLog{log: log, lib: lib} }

func (l *libLog) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		level, msg := libLevel(string(line))
		if msg == "" {
			continue
		}
		l.log.Log(context.Background(), level, msg, "lib", l.lib)
	}
	return len(p), nil
}

// libLevel reads the level a library's line names and returns the rest.
func libLevel(line string) (slog.Level, string) {
	levels := []struct {
		tag   string
		level slog.Level
	}{{"[TRACE]", slog.LevelDebug - 4}, {"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo},
		{"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}, {"[ERROR]", slog.LevelError}}
	for _, lv := range levels {
		if i := strings.Index(line, lv.tag); i >= 0 {
			return lv.level, strings.TrimSpace(line[i+len(lv.tag):])
		}
	}
	return slog.LevelInfo, strings.TrimSpace(line)
}
