package clusterspec

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/locus-ssi/locus/internal/suggest"
	"gopkg.in/yaml.v3"
)

// ErrSpecSyntax is returned (wrapped) for YAML that does not parse or does
// not match the spec's shape.
var ErrSpecSyntax = errors.New("bad spec")

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// decodeStrict decodes YAML into v, refusing unknown keys and values of the
// wrong type with an error that names file, line and key.
func decodeStrict(file string, data []byte, v any) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := err.Error()
		if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
			return fmt.Errorf("images: %s:%s: %s: %w", file, m[1], m[2], ErrSpecSyntax)
		}
		return fmt.Errorf("images: %s: %s: %w", file, strings.TrimPrefix(msg, "yaml: "), ErrSpecSyntax)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil // empty document: all defaults
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil
	}
	if err := checkNode(file, "", root, reflect.TypeOf(v).Elem()); err != nil {
		return err
	}
	if err := root.Decode(v); err != nil {
		return fmt.Errorf("images: %s: %v: %w", file, err, ErrSpecSyntax)
	}
	return nil
}

func checkNode(file, key string, n *yaml.Node, t reflect.Type) error {
	at := func(n *yaml.Node, format string, args ...any) error {
		where := ""
		if key != "" {
			where = fmt.Sprintf("key %q: ", key)
		}
		return fmt.Errorf("images: %s:%d: %s%s: %w", file, n.Line, where, fmt.Sprintf(format, args...), ErrSpecSyntax)
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // an explicit empty value keeps the default
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkNode(file, key, n, t.Elem())
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return at(n, "want a mapping of keys, got %s", describe(n))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return at(k, "want a key, got %s", describe(k))
			}
			if err := checkNode(file, key+"."+k.Value, val, t.Elem()); err != nil {
				return err
			}
		}
		return nil
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return at(n, "want a mapping of keys, got %s", describe(n))
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			name := k.Value
			full := name
			if key != "" {
				full = key + "." + name
			}
			f, ok := fields[name]
			if !ok {
				hint := ""
				if s := suggest.Closest(name, fieldNames(fields)); s != "" {
					hint = fmt.Sprintf(" (did you mean %q?)", s)
				}
				return fmt.Errorf("images: %s:%d: unknown key %q%s: %w", file, k.Line, full, hint, ErrSpecSyntax)
			}
			if err := checkNode(file, full, val, f.Type); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return at(n, "want a list, got %s", describe(n))
		}
		for i, c := range n.Content {
			if err := checkNode(file, fmt.Sprintf("%s[%d]", key, i), c, t.Elem()); err != nil {
				return err
			}
		}
		return nil
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return at(n, "want a string, got %s", describe(n))
		}
		return nil
	case reflect.Int:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			return at(n, "want an integer, got %s", describe(n))
		}
		if _, err := strconv.ParseInt(n.Value, 0, 32); err != nil {
			return at(n, "integer %s out of range", n.Value)
		}
		return nil
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			return at(n, "want true or false, got %s", describe(n))
		}
		return nil
	}
	return at(n, "unsupported field type %s", t)
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	return strconv.Quote(v)
}

func yamlFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		out[name] = f
	}
	return out
}

func fieldNames(m map[string]reflect.StructField) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
