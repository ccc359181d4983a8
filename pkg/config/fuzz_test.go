package config

import (
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// FuzzParseValue checks that no codec panics on any text, and that a value it
// accepts formats to text that parses back to the same value, which --help
// defaults rely on.
func FuzzParseValue(f *testing.F) {
	for _, s := range []string{"", "5s", "-1", "1e308", "1e309", "NaN", "true", "a, b,,c", "info", "ERROR+3",
		"18446744073709551616", "0x10", " 7 ", "\x00", "-0", "DEBUG-4", "1h2m3.5s"} {
		f.Add(s)
	}
	types := []reflect.Type{
		reflect.TypeFor[string](), reflect.TypeFor[bool](), reflect.TypeFor[int](), reflect.TypeFor[int8](),
		reflect.TypeFor[int64](), reflect.TypeFor[uint16](), reflect.TypeFor[uint64](), reflect.TypeFor[float32](),
		reflect.TypeFor[float64](), reflect.TypeFor[time.Duration](), reflect.TypeFor[[]string](),
		reflect.TypeFor[slog.Level](),
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, typ := range types {
			c, ok := codecFor(typ)
			if !ok {
				t.Fatalf("no codec for %s", typ)
			}
			v := reflect.New(typ).Elem()
			if c.parse(v, s) != nil {
				continue
			}
			text := c.format(v)
			back := reflect.New(typ).Elem()
			if err := c.parse(back, text); err != nil {
				t.Fatalf("%s: %q parsed, but its format %q does not: %v", typ, s, text, err)
			}
			if !reflect.DeepEqual(back.Interface(), v.Interface()) && !(c.list && v.Len() == 0 && back.Len() == 0) {
				t.Fatalf("%s: %q parsed to %v, but its format %q to %v", typ, s, v, text, back)
			}
		}
	})
}

// FuzzYAML checks that no YAML document makes loading panic.
func FuzzYAML(f *testing.F) {
	for _, s := range []string{
		"listen: :1\n", "postgres:\n  dsn: x\n  max_conns: 2\n", "accounts: [a, b]\n", "- a\n",
		"a: &x [*x]\n", "postgres: &p {dsn: x}\nother: *p\n", "<<: {listen: x}\n", "? [a]\n: b\n",
		"listen: !!binary aGk=\n", "timeout: 1e3\n", "---\n---\n", "~\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := defaults()
		b := Bind(pflag.NewFlagSet("fuzz", pflag.ContinueOnError), &cfg)
		_ = b.applyYAML("fuzz.yaml", data)
	})
}
