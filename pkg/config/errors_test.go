package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  []string
		args []string
		// want are substrings of the error; "FILE" stands for the YAML path.
		want []string
	}{
		{
			name: "env duration",
			env:  []string{"TOLLGATE_ADMIN_TIMEOUT=abc"},
			want: []string{`TOLLGATE_ADMIN_TIMEOUT: "abc" is not a duration (e.g. 5s, 2m)`},
		},
		{
			name: "env int",
			env:  []string{"TOLLGATE_POSTGRES_MAX_CONNS=many"},
			want: []string{`TOLLGATE_POSTGRES_MAX_CONNS: "many" is not an integer`},
		},
		{
			name: "env int out of range",
			env:  []string{"TOLLGATE_MAX_BYTES=9223372036854775808"},
			want: []string{`TOLLGATE_MAX_BYTES: "9223372036854775808" is out of range [-9223372036854775808, 9223372036854775807]`},
		},
		{
			name: "env bool",
			env:  []string{"TOLLGATE_VERBOSE=yes"},
			want: []string{`TOLLGATE_VERBOSE: "yes" is not a boolean (true or false)`},
		},
		{
			name: "env float not finite",
			env:  []string{"TOLLGATE_RATIO=NaN"},
			want: []string{`TOLLGATE_RATIO: "NaN" is not a finite number`},
		},
		{
			name: "env text unmarshaler",
			env:  []string{"TOLLGATE_LOG_LEVEL=loud"},
			want: []string{`TOLLGATE_LOG_LEVEL: "loud" is not a valid level`},
		},
		{
			name: "every bad env var at once",
			env:  []string{"TOLLGATE_ADMIN_TIMEOUT=abc", "TOLLGATE_VERBOSE=yes"},
			want: []string{"TOLLGATE_ADMIN_TIMEOUT:", "TOLLGATE_VERBOSE:"},
		},
		{
			name: "yaml duration",
			yaml: "listen: :1\ntimeout: abc\n",
			want: []string{`FILE:2: timeout: "abc" is not a duration (e.g. 5s, 2m)`},
		},
		{
			name: "yaml nested value",
			yaml: "postgres:\n  max_conns: 1.5\n",
			want: []string{`FILE:2: postgres.max_conns: "1.5" is not an integer`},
		},
		{
			name: "yaml unknown key",
			yaml: "listen: :1\nlisten_addr: :2\n",
			want: []string{`FILE:2: unknown key "listen_addr" (known here: accounts, listen, log_level,`},
		},
		{
			name: "yaml unknown nested key",
			yaml: "postgres:\n  dsnn: x\n",
			want: []string{`FILE:2: unknown key "postgres.dsnn" (known here: dsn, max_conns)`},
		},
		{
			name: "yaml keys come from yaml tags, not flags",
			yaml: "postgres-max-conns: 3\n",
			want: []string{`unknown key "postgres-max-conns"`},
		},
		{
			name: "yaml duplicate key",
			yaml: "listen: :1\nlisten: :2\n",
			want: []string{`FILE`, `listen`},
		},
		{
			name: "yaml mapping for a value",
			yaml: "listen:\n  host: x\n",
			want: []string{`FILE:2: listen: expected a single value, got a mapping`},
		},
		{
			name: "yaml list for a value",
			yaml: "timeout: [1s]\n",
			want: []string{`FILE:1: timeout: expected a single value, got a list`},
		},
		{
			name: "yaml nested list",
			yaml: "accounts: [a, [b]]\n",
			want: []string{`FILE:1: accounts: expected a list of strings, got a list in it`},
		},
		{
			name: "yaml scalar for a group",
			yaml: "postgres: x\n",
			want: []string{`FILE:1: expected a mapping of settings at postgres, got a single value`},
		},
		{
			name: "yaml top level not a mapping",
			yaml: "- listen\n",
			want: []string{`FILE:1: expected a mapping of settings at the top level, got a list`},
		},
		{
			name: "yaml complex key",
			yaml: "? [a]\n: b\n",
			want: []string{`FILE:1: expected a setting name as key, got a list`},
		},
		{
			name: "yaml syntax",
			yaml: "listen: [\n",
			want: []string{`config file FILE: yaml:`},
		},
		{
			name: "every yaml mistake at once",
			yaml: "nope: 1\ntimeout: x\n",
			want: []string{`unknown key "nope"`, `timeout: "x" is not a duration`},
		},
		{
			name: "missing file",
			args: []string{"--config", "/nonexistent/tollgate.yaml"},
			want: []string{"read config file: open /nonexistent/tollgate.yaml"},
		},
		{
			name: "bad flag value",
			args: []string{"--timeout", "abc"},
			want: []string{`parse flags: invalid argument "abc" for "--timeout" flag: not a duration (e.g. 5s, 2m)`},
		},
		{
			name: "unknown flag",
			args: []string{"--nope"},
			want: []string{"parse flags: unknown flag: --nope"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.yaml, tt.env, tt.args...)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			msg := err.Error()
			if tt.yaml != "" {
				// Replace the temporary path so that cases can name it.
				msg = replaceYAMLPath(msg)
			}
			for _, want := range tt.want {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
		})
	}
}

// replaceYAMLPath replaces the temporary file name that load writes by FILE.
func replaceYAMLPath(msg string) string {
	var b strings.Builder
	for {
		i := strings.Index(msg, "/")
		j := strings.Index(msg, "tollgate.yaml")
		if i < 0 || j < i {
			b.WriteString(msg)
			return b.String()
		}
		b.WriteString(msg[:i] + "FILE")
		msg = msg[j+len("tollgate.yaml"):]
	}
}

func TestBadValueLeavesLowerLayer(t *testing.T) {
	cfg, err := load(t, "listen: :1\n", []string{"TOLLGATE_ADMIN_TIMEOUT=abc"})
	if err == nil {
		t.Fatal("want an error")
	}
	if want := defaults().Timeout; cfg.Timeout != want {
		t.Errorf("Timeout = %v after a bad value, want %v", cfg.Timeout, want)
	}
}

func TestHelpFlag(t *testing.T) {
	_, err := load(t, "", nil, "--help")
	if !errors.Is(err, pflag.ErrHelp) {
		t.Errorf("Load(--help) = %v, want pflag.ErrHelp", err)
	}
}

func TestBindPanics(t *testing.T) {
	type noUsage struct {
		A string `flag:"a"`
	}
	type unsupported struct {
		A map[string]string `flag:"a" usage:"x"`
	}
	type envWithoutFlag struct {
		A string `env:"TOLLGATE_A"`
	}
	type dupEnv struct {
		A string `flag:"a" env:"TOLLGATE_A" usage:"x"`
		B string `flag:"b" env:"TOLLGATE_A" usage:"x"`
	}
	type dupYAML struct {
		A string `flag:"a" yaml:"k" usage:"x"`
		B string `flag:"b" yaml:"k" usage:"x"`
	}
	type dupGroup struct {
		A testPostgres `yaml:"db"`
		B struct {
			C string `flag:"c" usage:"x"`
		} `yaml:"db"`
	}
	type secretInt struct {
		A int `flag:"a" usage:"x" secret:"true"`
	}
	type untaggedGroup struct {
		Postgres testPostgres
	}
	type dupFlag struct {
		A string `flag:"a" usage:"x"`
		B string `flag:"a" yaml:"b" usage:"x"`
	}
	tests := []struct {
		name string
		cfg  any
		want string
	}{
		{"not a pointer", testConfig{}, "pointer to a struct"},
		{"nil", (*testConfig)(nil), "pointer to a struct"},
		{"no usage", &noUsage{}, "usage"},
		{"unsupported type", &unsupported{}, "unsupported type"},
		{"env without flag", &envWithoutFlag{}, "no flag tag"},
		{"duplicate env", &dupEnv{}, "TOLLGATE_A"},
		{"duplicate yaml key", &dupYAML{}, `"k" is used twice`},
		{"duplicate group", &dupGroup{}, `"db" is used twice`},
		{"secret int", &secretInt{}, "must be a string"},
		{"untagged group", &untaggedGroup{}, "no yaml tag"},
		{"duplicate flag", &dupFlag{}, "redefined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatal("Bind did not panic")
				}
				if msg, _ := r.(string); !strings.Contains(msg, tt.want) {
					t.Errorf("panic %v does not contain %q", r, tt.want)
				}
			}()
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			fs.SetOutput(new(strings.Builder))
			Bind(fs, tt.cfg)
		})
	}
}
