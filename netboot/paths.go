package netboot

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// ErrOutsideRoot is returned (wrapped) for a requested path that would
// leave the boot tree or is not a plain relative path.
var ErrOutsideRoot = errors.New("path leaves the boot root")

// MaxPathLen bounds requested file names (TFTP and HTTP alike).
const MaxPathLen = 255

// CleanPath turns a file name from a TFTP or HTTP request into a clean
// path relative to the boot root, or refuses it. Leading slashes are
// dropped and backslashes (some PXE ROMs send DOS paths) become slashes;
// "..", NUL bytes, control characters and over-long names are refused.
// Opening the result through an os.Root also stops symlinks that point
// out of the tree.
func CleanPath(name string) (string, error) {
	if len(name) > MaxPathLen {
		return "", fmt.Errorf("%w: name longer than %d bytes", ErrOutsideRoot, MaxPathLen)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("%w: control character in %q", ErrOutsideRoot, name)
		}
	}
	n := strings.ReplaceAll(name, "\\", "/")
	n = strings.TrimLeft(n, "/")
	for _, seg := range strings.Split(n, "/") {
		if seg == ".." {
			return "", fmt.Errorf("%w: %q", ErrOutsideRoot, name)
		}
	}
	n = path.Clean(n)
	if n == "." || n == "" {
		return "", fmt.Errorf("%w: %q names no file", ErrOutsideRoot, name)
	}
	if strings.HasPrefix(n, "../") || n == ".." || path.IsAbs(n) {
		return "", fmt.Errorf("%w: %q", ErrOutsideRoot, name)
	}
	return n, nil
}
