package config

import (
	"encoding"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// codec converts one Go type from and to text. Flags, environment variables
// and YAML scalars all go through the same codec, so a value is spelled the
// same way in every layer.
type codec struct {
	// typeName is the pflag Value type, which --help shows after the flag
	// name; pflag shortens some ("float64" to "float", "bool" to nothing).
	typeName string
	// list marks []string-like types: comma-separated in flags and
	// environment variables, a sequence (or a comma-separated scalar) in YAML.
	list bool
	// showText makes Redacted show the text rather than the Go value, which
	// reads better for durations ("5s") and TextMarshalers ("INFO").
	showText bool
	// parse sets dst, an addressable value of the type, from s. Its errors
	// complete the sentence `"<s>" is ...`, e.g. "not a duration (e.g. 5s)".
	parse func(dst reflect.Value, s string) error
	// format returns the text that parse reads back into the same value.
	format func(v reflect.Value) string
}

// codecFor returns the codec for t, or false if settings cannot have type t.
func codecFor(t reflect.Type) (codec, bool) {
	// TextUnmarshaler comes first so that types such as slog.Level, whose
	// kind is int but whose text is "info", parse the way they document.
	if reflect.PointerTo(t).Implements(reflect.TypeFor[encoding.TextUnmarshaler]()) {
		return textCodec(t), true
	}
	if t == reflect.TypeFor[time.Duration]() {
		return codec{
			typeName: "duration",
			showText: true,
			parse: func(dst reflect.Value, s string) error {
				d, err := time.ParseDuration(strings.TrimSpace(s))
				if err != nil {
					return errors.New("not a duration (e.g. 5s, 2m)")
				}
				dst.SetInt(int64(d))
				return nil
			},
			format: func(v reflect.Value) string { return time.Duration(v.Int()).String() },
		}, true
	}
	switch t.Kind() {
	case reflect.String:
		return codec{
			typeName: "string",
			parse: func(dst reflect.Value, s string) error {
				dst.SetString(s)
				return nil
			},
			format: reflect.Value.String,
		}, true
	case reflect.Bool:
		return codec{
			typeName: "bool",
			parse: func(dst reflect.Value, s string) error {
				b, err := strconv.ParseBool(strings.TrimSpace(s))
				if err != nil {
					return errors.New("not a boolean (true or false)")
				}
				dst.SetBool(b)
				return nil
			},
			format: func(v reflect.Value) string { return strconv.FormatBool(v.Bool()) },
		}, true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return intCodec(t), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return uintCodec(t), true
	case reflect.Float32, reflect.Float64:
		return floatCodec(t), true
	case reflect.Slice:
		if t.Elem().Kind() == reflect.String && !reflect.PointerTo(t.Elem()).Implements(reflect.TypeFor[encoding.TextUnmarshaler]()) {
			return listCodec(t), true
		}
	}
	return codec{}, false
}

func intCodec(t reflect.Type) codec {
	bits := t.Bits()
	return codec{
		typeName: t.Kind().String(),
		parse: func(dst reflect.Value, s string) error {
			i, err := strconv.ParseInt(strings.TrimSpace(s), 10, bits)
			if errors.Is(err, strconv.ErrRange) {
				return fmt.Errorf("out of range [%d, %d]", int64(-1)<<(bits-1), int64(1)<<(bits-1)-1)
			}
			if err != nil {
				return errors.New("not an integer")
			}
			dst.SetInt(i)
			return nil
		},
		format: func(v reflect.Value) string { return strconv.FormatInt(v.Int(), 10) },
	}
}

func uintCodec(t reflect.Type) codec {
	bits := t.Bits()
	return codec{
		typeName: t.Kind().String(),
		parse: func(dst reflect.Value, s string) error {
			u, err := strconv.ParseUint(strings.TrimSpace(s), 10, bits)
			if errors.Is(err, strconv.ErrRange) {
				return fmt.Errorf("out of range [0, %d]", uint64(math.MaxUint64)>>(64-bits))
			}
			if err != nil {
				return errors.New("not a non-negative integer")
			}
			dst.SetUint(u)
			return nil
		},
		format: func(v reflect.Value) string { return strconv.FormatUint(v.Uint(), 10) },
	}
}

func floatCodec(t reflect.Type) codec {
	bits := t.Bits()
	return codec{
		typeName: t.Kind().String(),
		parse: func(dst reflect.Value, s string) error {
			f, err := strconv.ParseFloat(strings.TrimSpace(s), bits)
			// NaN and infinities parse, but no setting means them, and they
			// would slip through every "x > limit" check.
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				return errors.New("not a finite number")
			}
			dst.SetFloat(f)
			return nil
		},
		format: func(v reflect.Value) string { return strconv.FormatFloat(v.Float(), 'g', -1, bits) },
	}
}

func listCodec(t reflect.Type) codec {
	return codec{
		typeName: "strings",
		list:     true,
		parse: func(dst reflect.Value, s string) error {
			dst.Set(makeList(t, splitList(s)))
			return nil
		},
		format: func(v reflect.Value) string {
			items := make([]string, v.Len())
			for i := range items {
				items[i] = v.Index(i).String()
			}
			return strings.Join(items, ",")
		},
	}
}

// splitList splits a comma-separated list. Items are trimmed and empty items
// dropped, so "a, b," is [a b] and an empty string is an empty list.
func splitList(s string) []string {
	var items []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}

// makeList returns items as a value of t, a slice of a string kind.
func makeList(t reflect.Type, items []string) reflect.Value {
	list := reflect.MakeSlice(t, 0, len(items))
	for _, item := range items {
		list = reflect.Append(list, reflect.ValueOf(item).Convert(t.Elem()))
	}
	return list
}

func textCodec(t reflect.Type) codec {
	name := strings.ToLower(t.Name())
	if name == "" {
		name = "value"
	}
	return codec{
		typeName: name,
		showText: true,
		parse: func(dst reflect.Value, s string) error {
			u := dst.Addr().Interface().(encoding.TextUnmarshaler)
			if err := u.UnmarshalText([]byte(strings.TrimSpace(s))); err != nil {
				return fmt.Errorf("not a valid %s: %w", name, err)
			}
			return nil
		},
		format: func(v reflect.Value) string {
			if m, ok := textMarshaler(v); ok {
				if text, err := m.MarshalText(); err == nil {
					return string(text)
				}
			}
			return fmt.Sprint(v.Interface())
		},
	}
}

// textMarshaler finds MarshalText on v or, when v is addressable, on &v.
func textMarshaler(v reflect.Value) (encoding.TextMarshaler, bool) {
	if v.Type().Implements(reflect.TypeFor[encoding.TextMarshaler]()) {
		return v.Interface().(encoding.TextMarshaler), true
	}
	if v.CanAddr() && v.Addr().Type().Implements(reflect.TypeFor[encoding.TextMarshaler]()) {
		return v.Addr().Interface().(encoding.TextMarshaler), true
	}
	return nil, false
}
