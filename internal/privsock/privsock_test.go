package privsock

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestListenMakesARootOnlyDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "private")
	os.Mkdir(dir, 0o755) // an earlier, too open directory
	path := filepath.Join(dir, "s.sock")
	os.WriteFile(path, nil, 0o644) // left by an earlier process
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", st.Mode().Perm())
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.Close()
}
