package proc

import (
	"strings"
	"testing"
)

func TestCPIDLayout(t *testing.T) {
	for _, c := range []struct{ node, pid int }{{1, 1}, {3, 1234}, {4, MaxPID}, {MaxNode, MaxPID}} {
		cp := CPID(c.node, c.pid)
		if n, p := SplitCPID(cp); n != c.node || p != c.pid {
			t.Errorf("SplitCPID(CPID(%d,%d)) = %d,%d", c.node, c.pid, n, p)
		}
		if cp > 1<<31-1 {
			t.Errorf("CPID(%d,%d) = %d does not fit an int32", c.node, c.pid, cp)
		}
		for _, s := range []string{FormatCPID(c.node, c.pid), strings.Join([]string{itoa(c.node), itoa(c.pid)}, ":")} {
			n, p, err := ParseCPID(s)
			if err != nil || n != c.node || p != c.pid {
				t.Errorf("ParseCPID(%q) = %d,%d,%v", s, n, p, err)
			}
		}
	}
	if CPID(3, 1234) != 3<<22|1234 {
		t.Errorf("CPID(3,1234) = %d", CPID(3, 1234))
	}
	for _, bad := range []string{"", "x", "0", "-5", "1234", "0:5", "3:0", "3:x", "512:1", "3:4194304", ":", "node:1"} {
		if _, _, err := ParseCPID(bad); err == nil {
			t.Errorf("ParseCPID(%q) took it", bad)
		} else if !strings.Contains(err.Error(), "cluster PID") {
			t.Errorf("ParseCPID(%q): %v does not say what", bad, err)
		}
	}
	if n, p, err := ParseCPID("node3:17"); err != nil || n != 3 || p != 17 {
		t.Errorf("node3:17 = %d,%d,%v", n, p, err)
	}
}

func itoa(i int) string { return FormatCPID(0, i) }

func FuzzParseCPID(f *testing.F) {
	for _, s := range []string{"3:1234", "12584146", "node2:1", "-1", "99999999999999999999", "1:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, p, err := ParseCPID(s)
		if err != nil {
			return
		}
		if n < 1 || n > MaxNode || p < 1 || p > MaxPID {
			t.Fatalf("ParseCPID(%q) = %d,%d out of range", s, n, p)
		}
	})
}
