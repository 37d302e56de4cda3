package layout

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ModuleSuffixes are the module file endings the kernel's tools know.
func ModuleSuffixes() []string { return []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} }

// ModuleName returns the module name of a module file name, or "" if the
// name is not a module file.
func ModuleName(file string) string {
	base := filepath.Base(file)
	for _, s := range ModuleSuffixes() {
		if n, ok := strings.CutSuffix(base, s); ok {
			return strings.ReplaceAll(n, "-", "_")
		}
	}
	return ""
}

// ReadModule returns a module file's contents, decompressed.
func ReadModule(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("layout: read module: %w", err)
	}
	return DecompressModule(path, raw)
}

// DecompressModule undoes .xz, .zst and .gz module compression, chosen by
// the file name; a plain .ko comes back as is.
func DecompressModule(name string, raw []byte) ([]byte, error) {
	var r io.Reader
	switch {
	case strings.HasSuffix(name, ".ko"):
		return raw, nil
	case strings.HasSuffix(name, ".ko.xz"):
		xr, err := xz.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("layout: module %s: %w", name, err)
		}
		r = xr
	case strings.HasSuffix(name, ".ko.zst"):
		zr, err := zstd.NewReader(bytes.NewReader(raw), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("layout: module %s: %w", name, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(name, ".ko.gz"):
		gr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("layout: module %s: %w", name, err)
		}
		r = gr
	default:
		return nil, fmt.Errorf("layout: %s is not a module file", name)
	}
	out, err := io.ReadAll(io.LimitReader(r, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("layout: module %s: decompress: %w", name, err)
	}
	return out, nil
}
