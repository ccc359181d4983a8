// Package config fills a role's settings struct from, in increasing order of
// precedence, the struct's own values (the defaults), an optional YAML file,
// TOLLGATE_* environment variables and command-line flags.
//
// Struct tags declare each setting once, so --help, the environment, the YAML
// file and the startup log cannot disagree about its name:
//
//	type AdminConfig struct {
//		Listen   string         `flag:"listen" env:"TOLLGATE_ADMIN_LISTEN" yaml:"listen" usage:"address the admin API listens on"`
//		Pepper   string         `flag:"pepper" env:"TOLLGATE_PEPPER" yaml:"pepper" usage:"HMAC key for API key hashes" secret:"true"`
//		Postgres PostgresConfig `yaml:"postgres"`
//	}
//
//	cfg := AdminConfig{Listen: "127.0.0.1:8081"} // defaults
//	fs := pflag.NewFlagSet("admin", pflag.ContinueOnError)
//	b := config.Bind(fs, &cfg)
//	if err := b.Load(os.Args[2:], os.Environ()); err != nil { ... }
//	logger.Info("starting", "config", config.LogValue(&cfg))
//
// A field with a flag tag is a setting and needs a usage tag; env is optional
// and yaml defaults to the flag name. Flags are flat even for nested groups.
// A struct field without a flag tag groups its settings under its yaml key.
// Supported types: string, bool, all int, uint and float kinds, time.Duration,
// []string, and any type whose pointer implements encoding.TextUnmarshaler
// (slog.Level, netip.AddrPort, ...). Fields tagged secret:"true" (strings
// only) are never shown by this package: not in --help defaults, errors,
// Redacted or LogValue.
package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/spf13/pflag"
)

const (
	// ConfigFlag names the YAML file to read.
	ConfigFlag = "config"
	// ConfigEnv names the YAML file when --config is not given.
	ConfigEnv = "TOLLGATE_CONFIG"
)

// Binding ties a config struct to a flag set. Load it once.
type Binding struct {
	fs         *pflag.FlagSet
	fields     *fields
	flags      []*flagValue
	configPath *string
}

// Bind registers a flag for every setting of cfg, a pointer to a struct, plus
// --config. The flags' defaults are cfg's current values, so set the defaults
// before calling Bind; their usage lines also name the environment variable
// and YAML key. Bind panics on malformed tags or unsupported field types, as
// pflag does on a flag defined twice: they are programming errors.
func Bind(fs *pflag.FlagSet, cfg any) *Binding {
	b := &Binding{fs: fs, fields: collect(cfg)}
	b.configPath = fs.String(ConfigFlag, "",
		fmt.Sprintf("YAML `file` of settings, keyed as in (yaml ...) below (env %s)", ConfigEnv))
	for _, s := range b.fields.settings {
		fv := &flagValue{setting: s}
		if !s.secret {
			fv.def = s.codec.format(s.field)
		}
		f := fs.VarPF(fv, s.flag, "", usageLine(s))
		if s.codec.typeName == "bool" {
			f.NoOptDefVal = "true" // --verbose means --verbose=true, as with pflag.Bool
		}
		b.flags = append(b.flags, fv)
	}
	return b
}

// usageLine appends where else the setting can come from to its usage.
func usageLine(s *setting) string {
	var sources []string
	if s.env != "" {
		sources = append(sources, "env "+s.env)
	}
	sources = append(sources, "yaml "+s.yamlKey())
	return fmt.Sprintf("%s (%s)", s.usage, strings.Join(sources, ", "))
}

// Load parses args (without the program and role names) into the flag set,
// then fills the struct as Apply does. environ is os.Environ() in production.
// A --help flag returns an error that matches pflag.ErrHelp.
func (b *Binding) Load(args, environ []string) error {
	if err := b.fs.Parse(args); err != nil {
		return fmt.Errorf("parse flags: %w", err)
	}
	return b.Apply(environ)
}

// Apply fills the struct from the YAML file, then environ, then the flags
// that were set, each overriding the one before. Use it instead of Load when
// something else (e.g. cobra) has already parsed the flag set. All bad values
// and unknown YAML keys are reported together, so one run shows every mistake.
func (b *Binding) Apply(environ []string) error {
	env := envMap(environ)
	path := *b.configPath
	if !b.fs.Changed(ConfigFlag) {
		path = env[ConfigEnv]
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read config file: %w", err)
		}
		if err := b.applyYAML(path, data); err != nil {
			return err
		}
	}
	if err := b.applyEnv(env); err != nil {
		return err
	}
	for _, fv := range b.flags {
		if fv.set {
			fv.setting.field.Set(fv.staged)
		}
	}
	return nil
}

// applyEnv sets every setting whose variable is set and not empty. Empty
// counts as unset because deployment tools often cannot tell the two apart
// (an optional Kubernetes secret, `FOO=` in a compose file); a flag or YAML
// can still set a string to "".
func (b *Binding) applyEnv(env map[string]string) error {
	var errs []error
	for _, s := range b.fields.settings {
		if value := env[s.env]; s.env != "" && value != "" {
			if err := parseInto(s, value); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s", s.env, describe(s, value, err)))
			}
		}
	}
	return errors.Join(errs...)
}

// parseInto parses text into the setting's field, leaving it unchanged when
// the text is bad.
func parseInto(s *setting, text string) error {
	v := reflect.New(s.field.Type()).Elem()
	if err := s.codec.parse(v, text); err != nil {
		return err
	}
	s.field.Set(v)
	return nil
}

// describe completes an error about a bad value, hiding the value of secrets.
func describe(s *setting, value string, err error) string {
	if s.secret {
		return fmt.Sprintf("value is %v", err)
	}
	return fmt.Sprintf("%q is %v", value, err)
}

// envMap turns KEY=VALUE entries into a map; a later entry wins, as in
// os/exec.
func envMap(environ []string) map[string]string {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// flagValue is the pflag.Value of a setting. It keeps what the command line
// said apart from the struct, because flags are parsed first (they may name
// the YAML file) but must be applied last.
type flagValue struct {
	setting *setting
	def     string // the default as --help shows it; "" for secrets
	staged  reflect.Value
	set     bool
}

func (v *flagValue) String() string {
	if v.set && !v.setting.secret {
		return v.setting.codec.format(v.staged)
	}
	return v.def
}

// Set parses a command-line value. A repeated list flag appends, as pflag's
// StringSlice does: --account a --account b,c is [a b c].
func (v *flagValue) Set(text string) error {
	parsed := reflect.New(v.setting.field.Type()).Elem()
	if err := v.setting.codec.parse(parsed, text); err != nil {
		return err // pflag adds the value and the flag name
	}
	if v.set && v.setting.codec.list {
		parsed = reflect.AppendSlice(v.staged, parsed)
	}
	v.staged, v.set = parsed, true
	return nil
}

func (v *flagValue) Type() string { return v.setting.codec.typeName }

// IsBoolFlag lets a bool flag be given without a value.
func (v *flagValue) IsBoolFlag() bool { return v.setting.codec.typeName == "bool" }
