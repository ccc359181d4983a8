package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// setting is one leaf field of a config struct and where its value may come
// from.
type setting struct {
	field  reflect.Value // addressable, inside the bound struct
	flag   string
	env    string   // "" when no environment variable sets it
	yaml   []string // key path from the document root, e.g. [postgres dsn]
	usage  string
	secret bool
	codec  codec
}

func (s *setting) yamlKey() string { return strings.Join(s.yaml, ".") }

// yamlGroup mirrors the YAML mapping a struct reads, so the loader can name
// unknown keys and the keys that would have been valid.
type yamlGroup struct {
	settings map[string]*setting
	groups   map[string]*yamlGroup
}

func newYAMLGroup() *yamlGroup {
	return &yamlGroup{settings: map[string]*setting{}, groups: map[string]*yamlGroup{}}
}

func (g *yamlGroup) keys() []string {
	keys := make([]string, 0, len(g.settings)+len(g.groups))
	for k := range g.settings {
		keys = append(keys, k)
	}
	for k := range g.groups {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// fields describes every setting of a config struct.
type fields struct {
	settings []*setting
	root     *yamlGroup
}

// collect walks cfg, a non-nil pointer to a struct. Mistakes in the tags are
// programming errors that every test of a role finds at once, so they panic
// like pflag does for a flag defined twice.
func collect(cfg any) *fields {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("config: want a non-nil pointer to a struct, got %T", cfg))
	}
	f := &fields{root: newYAMLGroup()}
	c := collector{fields: f, envs: map[string]string{}}
	c.walk(v.Elem(), nil, f.root)
	return f
}

type collector struct {
	fields *fields
	envs   map[string]string // env name -> flag name, to find duplicates
}

// walk adds the settings of struct v, whose YAML keys start with prefix and
// live in group.
//
// A field with a flag tag is a setting. A struct field without one is a group
// of settings under its yaml key (`yaml:"postgres"`); embedded structs and
// `yaml:",inline"` add their settings to the enclosing group. Fields without
// any of the tags are not settings and are left alone.
func (c *collector) walk(v reflect.Value, prefix []string, group *yamlGroup) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		// Like encoding/json, promote the fields of an embedded struct even
		// when its type is unexported; reflect lets us set them.
		if !sf.IsExported() && !(sf.Anonymous && sf.Type.Kind() == reflect.Struct) {
			continue
		}
		yamlName, inline := parseYAMLTag(sf.Tag.Get("yaml"))
		if yamlName == "-" {
			continue
		}
		flagName, hasFlag := sf.Tag.Lookup("flag")
		_, hasEnv := sf.Tag.Lookup("env")
		switch {
		case hasFlag:
			c.add(sf, v.Field(i), flagName, yamlName, prefix, group)
		case sf.Type.Kind() == reflect.Struct && (inline || (sf.Anonymous && yamlName == "")):
			c.walk(v.Field(i), prefix, group)
		case sf.Type.Kind() == reflect.Struct && yamlName != "":
			path := append(slices.Clip(prefix), yamlName)
			c.checkFreeKey(group, yamlName, path)
			sub := newYAMLGroup()
			group.groups[yamlName] = sub
			c.walk(v.Field(i), path, sub)
		case sf.Type.Kind() == reflect.Struct && hasSettings(sf.Type):
			// Ignoring it would silently make a whole group unconfigurable.
			panic(fmt.Sprintf("config: struct field %s holds settings but has no yaml tag "+
				"(a key such as `yaml:\"postgres\"`, or `yaml:\",inline\"`)", sf.Name))
		case hasEnv || yamlName != "":
			panic(fmt.Sprintf("config: field %s has env or yaml tags but no flag tag; "+
				"every setting needs a flag so that --help documents it", sf.Name))
		}
	}
}

func (c *collector) add(sf reflect.StructField, fv reflect.Value, flagName, yamlName string, prefix []string, group *yamlGroup) {
	cd, ok := codecFor(sf.Type)
	if !ok {
		panic(fmt.Sprintf("config: field %s (flag %q) has unsupported type %s", sf.Name, flagName, sf.Type))
	}
	s := &setting{
		field:  fv,
		flag:   flagName,
		env:    sf.Tag.Get("env"),
		usage:  sf.Tag.Get("usage"),
		secret: sf.Tag.Get("secret") == "true",
		codec:  cd,
	}
	if flagName == "" || s.usage == "" {
		panic(fmt.Sprintf("config: field %s needs a non-empty flag and usage tag", sf.Name))
	}
	// Only strings may be secret: other types can fail to parse, and pflag
	// quotes the rejected value in its error message.
	if s.secret && cd.typeName != "string" && cd.typeName != "strings" {
		panic(fmt.Sprintf("config: secret field %s must be a string or a list of strings", sf.Name))
	}
	if yamlName == "" {
		yamlName = flagName
	}
	s.yaml = append(slices.Clip(prefix), yamlName)
	c.checkFreeKey(group, yamlName, s.yaml)
	group.settings[yamlName] = s
	if s.env != "" {
		if other, dup := c.envs[s.env]; dup {
			panic(fmt.Sprintf("config: flags %q and %q both read %s", other, flagName, s.env))
		}
		c.envs[s.env] = flagName
	}
	c.fields.settings = append(c.fields.settings, s)
}

func (c *collector) checkFreeKey(group *yamlGroup, key string, path []string) {
	_, isSetting := group.settings[key]
	_, isGroup := group.groups[key]
	if isSetting || isGroup {
		panic(fmt.Sprintf("config: YAML key %q is used twice", strings.Join(path, ".")))
	}
}

// hasSettings reports whether struct type t has a flag tag at any depth.
func hasSettings(t reflect.Type) bool {
	for i := range t.NumField() {
		sf := t.Field(i)
		if _, ok := sf.Tag.Lookup("flag"); ok {
			return true
		}
		if sf.Type.Kind() == reflect.Struct && hasSettings(sf.Type) {
			return true
		}
	}
	return false
}

// parseYAMLTag returns the name in a yaml struct tag and whether it has the
// inline option.
func parseYAMLTag(tag string) (name string, inline bool) {
	name, opts, _ := strings.Cut(tag, ",")
	for opt := range strings.SplitSeq(opts, ",") {
		if opt == "inline" {
			inline = true
		}
	}
	return name, inline
}
