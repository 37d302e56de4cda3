// Package locusconfig reads and writes the operator's client
// configuration, in the shape of talosctl's talosconfig: named contexts,
// each a cluster's endpoints and the credential to reach them with (the
// cluster CA that server certificates must chain to, and the operator's
// certificate and key). It lives at $LOCUSCONFIG, else
// $XDG_CONFIG_HOME/locus/config, else ~/.config/locus/config, mode 0600.
package locusconfig

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/locus-ssi/locus/internal/atomicfile"
	"github.com/locus-ssi/locus/services/ics"
)

// Config is the whole file.
type Config struct {
	// Context is the one in use.
	Context  string              `yaml:"context"`
	Contexts map[string]*Context `yaml:"contexts"`
}

// Context is one cluster as this operator reaches it.
type Context struct {
	// Cluster is the cluster's name: server certificates must name it.
	Cluster string `yaml:"cluster"`
	// Endpoints are node daemons (host:port), tried in order.
	Endpoints []string `yaml:"endpoints"`
	// CA is the cluster CA (PEM); Crt and Key the operator's
	// certificate and key (PEM).
	CA  string `yaml:"ca"`
	Crt string `yaml:"crt"`
	Key string `yaml:"key"`
	// StateDir, for a QEMU cluster, is its state directory (`locus qemu
	// down` forgets the context with it).
	StateDir string `yaml:"state_dir,omitempty"`
}

// Path is where the configuration is: $LOCUSCONFIG, else
// $XDG_CONFIG_HOME/locus/config, else ~/.config/locus/config.
func Path() (string, error) {
	if p := os.Getenv("LOCUSCONFIG"); p != "" {
		return p, nil
	}
	base := os.Getenv("XDG_CONFIG_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", errors.New("locusconfig: no home directory: set LOCUSCONFIG or XDG_CONFIG_HOME")
		}
		base = filepath.Join(home, ".config")
	}
	return filepath.Join(base, "locus", "config"), nil
}

// maxSize bounds the file: a context is a few kilobytes.
const maxSize = 1 << 20

// Load reads the configuration at path; a missing file is an empty
// configuration.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{Contexts: map[string]*Context{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("locusconfig: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("locusconfig: %s: %w", path, err)
	}
	return Parse(path, b)
}

// Parse decodes a configuration; name says where it came from in errors.
func Parse(name string, b []byte) (*Config, error) {
	if len(b) > maxSize {
		return nil, fmt.Errorf("locusconfig: %s: over %d bytes", name, maxSize)
	}
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("locusconfig: %s: %w", name, err)
	}
	if c.Contexts == nil {
		c.Contexts = map[string]*Context{}
	}
	for n, ctx := range c.Contexts {
		if ctx == nil {
			return nil, fmt.Errorf("locusconfig: %s: context %q is empty", name, n)
		}
	}
	if c.Context != "" && c.Contexts[c.Context] == nil {
		return nil, fmt.Errorf("locusconfig: %s: the context in use, %q, is not among its contexts (%s)", name, c.Context, strings.Join(c.Names(), ", "))
	}
	return c, nil
}

// Save writes the configuration at path, atomically, readable only by
// its owner (it holds a private key).
func (c *Config) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("locusconfig: %w", err)
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("locusconfig: %w", err)
	}
	return atomicfile.Write(path, b, 0o600, true)
}

// Names are the contexts' names, sorted.
func (c *Config) Names() []string {
	var ns []string
	for n := range c.Contexts {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}

// Set adds or replaces context name, and uses it.
func (c *Config) Set(name string, ctx *Context) {
	if c.Contexts == nil {
		c.Contexts = map[string]*Context{}
	}
	c.Contexts[name], c.Context = ctx, name
}

// Current returns the context named (or, with "", the one in use).
func (c *Config) Current(name string) (*Context, string, error) {
	if name == "" {
		name = c.Context
	}
	if name == "" {
		return nil, "", errors.New("no context in use (`locus qemu up` makes one; `locus config use NAME` picks one)")
	}
	ctx := c.Contexts[name]
	if ctx == nil {
		return nil, "", fmt.Errorf("no context %q (contexts: %s)", name, strings.Join(c.Names(), ", "))
	}
	return ctx, name, nil
}

// Forget removes the contexts of QEMU state directory dir.
func (c *Config) Forget(dir string) bool {
	forgot := false
	for n, ctx := range c.Contexts {
		if ctx.StateDir == dir {
			delete(c.Contexts, n)
			forgot = true
			if c.Context == n {
				c.Context = ""
			}
		}
	}
	return forgot
}

// TLS is the client configuration for the context: the operator's
// certificate, and servers accepted only with a node certificate of the
// context's cluster from its CA.
func (ctx *Context) TLS() (*tls.Config, error) {
	tc, err := ics.NodeServerTLS([]byte(ctx.CA), ctx.Cluster)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair([]byte(ctx.Crt), []byte(ctx.Key))
	if err != nil {
		return nil, fmt.Errorf("locusconfig: the context's certificate: %w", err)
	}
	tc.Certificates = []tls.Certificate{cert}
	return tc, nil
}
