package testutil

import (
	"fmt"
	"os/exec"
	"strings"
)

// Libraries lists the shared objects the dynamically linked program exe
// loads, its dynamic loader included, as ldd(1) finds them on this
// host: what to copy beside exe onto a root that has no C library of
// its own (run it there as LOADER --library-path DIR EXE).
func Libraries(exe string) ([]string, error) {
	out, err := exec.Command("ldd", exe).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", exe, err)
	}
	var libs []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0]) // the loader
		}
	}
	return libs, nil
}
