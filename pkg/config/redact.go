package config

import (
	"log/slog"
	"maps"
	"slices"
)

// Mask is what a secret setting that is set shows as, wherever this package
// shows settings.
const Mask = "***"

// Redacted returns the settings of cfg, a pointer to a config struct, keyed and
// nested as in the YAML file, for a startup log line or a debug endpoint.
// Secrets that are set show as Mask; unset ones as "", which tells an
// operator that one is missing without telling anyone what it is. Durations
// and TextMarshalers are shown as text ("5s", "INFO"), the rest as Go values.
func Redacted(cfg any) map[string]any {
	root := map[string]any{}
	for _, s := range collect(cfg).settings {
		m := root
		for _, key := range s.yaml[:len(s.yaml)-1] {
			sub, ok := m[key].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[key] = sub
			}
			m = sub
		}
		m[s.yaml[len(s.yaml)-1]] = display(s)
	}
	return root
}

// LogValue returns Redacted(cfg) as an slog group, so that a handler writes it
// as nested JSON or as dotted keys (config.postgres.dsn=...).
func LogValue(cfg any) slog.Value {
	return groupValue(Redacted(cfg))
}

func groupValue(m map[string]any) slog.Value {
	attrs := make([]slog.Attr, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if sub, ok := m[k].(map[string]any); ok {
			attrs = append(attrs, slog.Attr{Key: k, Value: groupValue(sub)})
		} else {
			attrs = append(attrs, slog.Any(k, m[k]))
		}
	}
	return slog.GroupValue(attrs...)
}

func display(s *setting) any {
	v := s.field
	switch {
	case s.secret && v.Len() == 0:
		return ""
	case s.secret:
		return Mask
	case s.codec.list:
		items := make([]string, v.Len())
		for i := range items {
			items[i] = v.Index(i).String()
		}
		return items
	case s.codec.showText:
		return s.codec.format(v)
	default:
		return v.Interface()
	}
}
