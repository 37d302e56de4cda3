package images

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeBinary writes an executable at p that says version v as locus
// version --output json does.
func fakeBinary(t *testing.T, p, v string) {
	t.Helper()
	script := "#!/bin/sh\necho '{\"version\":\"" + v + "\"}'\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestNodeBinaryChosenOnlyFromTheSameBuild(t *testing.T) {
	dir := t.TempDir()
	locus := filepath.Join(dir, "locus")
	node := filepath.Join(dir, NodeBinaryName)
	fakeBinary(t, locus, "v1")

	if got, why := NodeBinary(locus); got != locus || !strings.Contains(why, "no "+NodeBinaryName) {
		t.Errorf("without a node build: %s (%s), want locus itself", got, why)
	}
	fakeBinary(t, node, "v1")
	if got, why := NodeBinary(locus); got != node {
		t.Errorf("same version, built together: %s (%s), want the node build", got, why)
	}
	fakeBinary(t, node, "v0")
	if got, why := NodeBinary(locus); got != locus || !strings.Contains(why, "version v0") {
		t.Errorf("another version: %s (%s), want locus itself", got, why)
	}
	fakeBinary(t, node, "v1")
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(node, old, old); err != nil {
		t.Fatal(err)
	}
	if got, why := NodeBinary(locus); got != locus || !strings.Contains(why, "apart") {
		t.Errorf("built an hour apart (a dirty tree's same version): %s (%s), want locus itself", got, why)
	}
}
