package images

import (
	"fmt"
	"os"
	"path/filepath"
)

// CacheDir returns Locus's cache directory: $LOCUS_CACHE_DIR, or locus
// under the XDG cache dir (~/.cache/locus).
func CacheDir() (string, error) {
	if d := os.Getenv("LOCUS_CACHE_DIR"); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("images: no cache directory (set LOCUS_CACHE_DIR): %w", err)
	}
	return filepath.Join(base, "locus"), nil
}
