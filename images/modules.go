package images

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/locus-ssi/locus/images/layout"
	"github.com/locus-ssi/locus/internal/suggest"
)

// Module is a kernel module file in a module tree.
type Module struct {
	// Name is the module name with '-' folded to '_'.
	Name string
	// Path is the file's path relative to the module tree.
	Path string
	// Deps are the names of the modules it needs loaded first.
	Deps []string
}

// ErrNoModule is returned (wrapped) for a module that is not in the tree.
var ErrNoModule = errors.New("module not found")

// ModuleTree indexes the modules of one kernel.
type ModuleTree struct {
	dir     string
	files   map[string]string   // name -> relative path
	deps    map[string][]string // name -> dep names, from modules.dep when present
	builtin map[string]bool
}

// OpenModuleTree indexes the module tree at dir (lib/modules/<version>).
func OpenModuleTree(dir string) (*ModuleTree, error) {
	t := &ModuleTree{dir: dir, files: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		if name := layout.ModuleName(p); name != "" {
			rel, _ := filepath.Rel(dir, p)
			t.files[name] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("images: index modules in %s: %w", dir, err)
	}
	if len(t.files) == 0 {
		return nil, fmt.Errorf("images: %s holds no kernel modules: %w", dir, ErrNoModule)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, line := range strings.Fields(string(b)) {
			if n := layout.ModuleName(line); n != "" {
				t.builtin[n] = true
			}
		}
	}
	if f, err := os.Open(filepath.Join(dir, "modules.dep")); err == nil {
		defer f.Close()
		deps, err := ParseModulesDep(f)
		if err != nil {
			return nil, fmt.Errorf("images: %s/modules.dep: %w", dir, err)
		}
		t.deps = deps
	}
	return t, nil
}

// ParseModulesDep reads modules.dep ("path: dep-path dep-path ...") into
// module name -> dependency names.
func ParseModulesDep(r io.Reader) (map[string][]string, error) {
	out := map[string][]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		mod, deps, ok := strings.Cut(text, ":")
		name := layout.ModuleName(mod)
		if !ok || name == "" {
			return nil, fmt.Errorf("line %d: want \"module.ko: deps\", got %q", line, text)
		}
		var names []string
		for _, d := range strings.Fields(deps) {
			dn := layout.ModuleName(d)
			if dn == "" {
				return nil, fmt.Errorf("line %d: %q is not a module file", line, d)
			}
			names = append(names, dn)
		}
		out[name] = names
	}
	return out, sc.Err()
}

// Resolve returns the named modules and everything they depend on, in an
// order that loads dependencies first. Built-in modules are skipped.
func (t *ModuleTree) Resolve(names []string) ([]Module, error) {
	var order []Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, from string) error
	visit = func(name, from string) error {
		name = strings.ReplaceAll(name, "-", "_")
		switch state[name] {
		case 1:
			return fmt.Errorf("images: module %s: dependency cycle through %s", name, from)
		case 2:
			return nil
		}
		rel, ok := t.files[name]
		if !ok {
			if t.builtin[name] {
				state[name] = 2
				return nil
			}
			hint := ""
			if c := suggest.Closest(name, t.names()); c != "" {
				hint = fmt.Sprintf(" (did you mean %q?)", c)
			}
			if from != "" {
				return fmt.Errorf("images: module %q (needed by %s) not in %s%s: %w", name, from, t.dir, hint, ErrNoModule)
			}
			return fmt.Errorf("images: module %q not in %s%s: %w", name, t.dir, hint, ErrNoModule)
		}
		state[name] = 1
		deps, err := t.depsOf(name, rel)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, Module{Name: name, Path: rel, Deps: deps})
		return nil
	}
	for _, n := range names {
		if err := visit(n, ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func (t *ModuleTree) names() []string {
	out := make([]string, 0, len(t.files))
	for n := range t.files {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (t *ModuleTree) depsOf(name, rel string) ([]string, error) {
	if t.deps != nil {
		if d, ok := t.deps[name]; ok {
			return d, nil
		}
	}
	info, err := ReadModinfo(filepath.Join(t.dir, rel))
	if err != nil {
		return nil, err
	}
	var deps []string
	for _, d := range strings.Split(info["depends"], ",") {
		if d = strings.TrimSpace(d); d != "" {
			deps = append(deps, strings.ReplaceAll(d, "-", "_"))
		}
	}
	return deps, nil
}

// ReadModinfo returns the key=value pairs of a module's .modinfo section.
// Repeated keys (alias, ...) keep their last value.
func ReadModinfo(path string) (map[string]string, error) {
	data, err := layout.ReadModule(path)
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("images: module %s: not an ELF object: %w", path, err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("images: module %s: no .modinfo section", path)
	}
	raw, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("images: module %s: .modinfo: %w", path, err)
	}
	out := map[string]string{}
	for _, kv := range bytes.Split(raw, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			out[k] = v
		}
	}
	return out, nil
}

// ModulesDep renders modules.dep for a resolved set, as depmod would.
func ModulesDep(mods []Module) []byte {
	paths := map[string]string{}
	for _, m := range mods {
		paths[m.Name] = m.Path
	}
	var b bytes.Buffer
	for _, m := range mods {
		b.WriteString(m.Path + ":")
		// depmod lists the full transitive closure, nearest first.
		seen := map[string]bool{}
		var walk func(string)
		walk = func(n string) {
			for _, m2 := range mods {
				if m2.Name != n {
					continue
				}
				for _, d := range m2.Deps {
					if !seen[d] && paths[d] != "" {
						seen[d] = true
						b.WriteString(" " + paths[d])
						walk(d)
					}
				}
			}
		}
		walk(m.Name)
		b.WriteString("\n")
	}
	return b.Bytes()
}
