package config

import (
	"errors"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// applyYAML sets the settings that the YAML document data names; file is
// only used in errors. It walks yaml.Node rather than decoding into the
// struct so that a value is parsed exactly as in flags and the environment
// ("5s" is a duration everywhere), and so that errors carry the line number.
func (b *Binding) applyYAML(file string, data []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config file %s: %w", file, err)
	}
	if len(doc.Content) == 0 {
		return nil // empty, or only comments
	}
	root := resolve(doc.Content[0])
	if isNull(root) {
		return nil
	}
	y := yamlLoader{file: file}
	y.mapping(root, b.fields.root, "")
	return errors.Join(y.errs...)
}

// yamlLoader collects every error of one file.
type yamlLoader struct {
	file string
	errs []error
}

func (y *yamlLoader) fail(n *yaml.Node, format string, args ...any) {
	y.errs = append(y.errs, fmt.Errorf("%s:%d: %s", y.file, n.Line, fmt.Sprintf(format, args...)))
}

// mapping applies n, which should be a mapping of the keys of group; prefix
// is the dotted path of group with a trailing dot.
func (y *yamlLoader) mapping(n *yaml.Node, group *yamlGroup, prefix string) {
	if n.Kind != yaml.MappingNode {
		where := "the top level"
		if prefix != "" {
			where = strings.TrimSuffix(prefix, ".")
		}
		y.fail(n, "expected a mapping of settings at %s, got %s", where, kindName(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		keyNode, value := resolve(n.Content[i]), resolve(n.Content[i+1])
		if keyNode.Kind != yaml.ScalarNode {
			y.fail(keyNode, "expected a setting name as key, got %s", kindName(keyNode))
			continue
		}
		key := keyNode.Value
		path := prefix + key
		if seen[key] {
			y.fail(keyNode, "key %q appears twice", path)
			continue
		}
		seen[key] = true
		if s, ok := group.settings[key]; ok {
			y.setting(s, value, path)
			continue
		}
		if sub, ok := group.groups[key]; ok {
			if !isNull(value) {
				y.mapping(value, sub, path+".")
			}
			continue
		}
		y.fail(keyNode, "unknown key %q (known here: %s)", path, strings.Join(group.keys(), ", "))
	}
}

// setting applies one value. Null (`key:` or `key: ~`) keeps the value from
// the defaults, so a template can list every key without setting all of them.
func (y *yamlLoader) setting(s *setting, n *yaml.Node, path string) {
	switch {
	case isNull(n):
	case n.Kind == yaml.ScalarNode:
		if err := parseInto(s, n.Value); err != nil {
			y.fail(n, "%s: %s", path, describe(s, n.Value, err))
		}
	case n.Kind == yaml.SequenceNode && s.codec.list:
		items := make([]string, 0, len(n.Content))
		for _, item := range n.Content {
			item = resolve(item)
			if item.Kind != yaml.ScalarNode || isNull(item) {
				y.fail(item, "%s: expected a list of strings, got %s in it", path, kindName(item))
				return
			}
			items = append(items, item.Value)
		}
		s.field.Set(makeList(s.field.Type(), items))
	default:
		y.fail(n, "%s: expected %s, got %s", path, expectedShape(s), kindName(n))
	}
}

func expectedShape(s *setting) string {
	if s.codec.list {
		return "a list of strings"
	}
	return "a single value"
}

// resolve follows an alias (*name) to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "null"
		}
		return "a single value"
	default:
		return "something else"
	}
}
