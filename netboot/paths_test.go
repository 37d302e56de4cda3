package netboot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCleanPath(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"undionly.kpxe", "undionly.kpxe"},
		{"/undionly.kpxe", "undionly.kpxe"},
		{"//boot/./vmlinuz", "boot/vmlinuz"},
		{`\EFI\BOOT\BOOTX64.EFI`, "EFI/BOOT/BOOTX64.EFI"},
		{"a/b/../c", ""},
	} {
		got, err := CleanPath(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("CleanPath(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("CleanPath(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"../etc/passwd", "/../../etc/passwd", `..\..\etc\passwd`, "a/../../b", "", "/", ".", "x\x00y", "x\ny", strings.Repeat("a", 300)} {
		if _, err := CleanPath(bad); !errors.Is(err, ErrOutsideRoot) {
			t.Errorf("CleanPath(%q) = %v, want ErrOutsideRoot", bad, err)
		}
	}
}

// TestRootStopsSymlinkEscape checks the second line of defence: a symlink
// inside the tree that points out of it does not open through os.Root.
func TestRootStopsSymlinkEscape(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ok"), []byte("ok"), 0o644)
	os.Symlink("/etc/passwd", filepath.Join(dir, "escape"))
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := root.Open("escape"); err == nil {
		t.Error("a symlink out of the boot root opened")
	}
	if f, err := root.Open("ok"); err != nil {
		t.Errorf("open ok: %v", err)
	} else {
		f.Close()
	}
}

func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"undionly.kpxe", "../x", `\a\b`, "/a//b/./c", "a/..", "%2e%2e/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := CleanPath(s)
		if err != nil {
			return
		}
		if p == "" || strings.HasPrefix(p, "/") || p == ".." || strings.HasPrefix(p, "../") || strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") || strings.ContainsRune(p, 0) {
			t.Fatalf("CleanPath(%q) = %q escapes or is empty", s, p)
		}
		if filepath.Clean(p) != p {
			t.Fatalf("CleanPath(%q) = %q is not clean", s, p)
		}
	})
}
