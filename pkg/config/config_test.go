package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

type testPostgres struct {
	DSN      string `flag:"postgres-dsn" env:"TOLLGATE_POSTGRES_DSN" yaml:"dsn" usage:"PostgreSQL connection string" secret:"true"`
	MaxConns int    `flag:"postgres-max-conns" env:"TOLLGATE_POSTGRES_MAX_CONNS" yaml:"max_conns" usage:"connections in the pool"`
}

type testShared struct {
	LogLevel slog.Level `flag:"log-level" env:"TOLLGATE_LOG_LEVEL" yaml:"log_level" usage:"minimum level of log lines"`
}

type testConfig struct {
	testShared
	Listen   string        `flag:"listen" env:"TOLLGATE_ADMIN_LISTEN" yaml:"listen" usage:"address the admin API listens on"`
	Timeout  time.Duration `flag:"timeout" env:"TOLLGATE_ADMIN_TIMEOUT" yaml:"timeout" usage:"how long a request may take"`
	Accounts []string      `flag:"accounts" env:"TOLLGATE_ADMIN_ACCOUNTS" yaml:"accounts" usage:"accounts to serve"`
	Pepper   string        `flag:"pepper" env:"TOLLGATE_PEPPER" yaml:"pepper" usage:"HMAC key for API key hashes" secret:"true"`
	Verbose  bool          `flag:"verbose" env:"TOLLGATE_VERBOSE" yaml:"verbose" usage:"log more"`
	MaxBytes int64         `flag:"max-bytes" env:"TOLLGATE_MAX_BYTES" usage:"largest request body"`
	Seed     uint64        `flag:"seed" usage:"random seed"`
	Ratio    float64       `flag:"ratio" env:"TOLLGATE_RATIO" yaml:"ratio" usage:"sampling ratio"`
	Postgres testPostgres  `yaml:"postgres"`

	Logger   *slog.Logger // not a setting: no tags
	internal int
}

func defaults() testConfig {
	return testConfig{
		Listen:   "127.0.0.1:8081",
		Timeout:  5 * time.Second,
		Accounts: []string{"default"},
		Ratio:    0.5,
		Postgres: testPostgres{MaxConns: 4},
	}
}

// load binds a fresh default config and loads it, with yaml (if not empty)
// written to a file that TOLLGATE_CONFIG names.
func load(t *testing.T, yamlText string, environ []string, args ...string) (testConfig, error) {
	t.Helper()
	if yamlText != "" {
		path := filepath.Join(t.TempDir(), "tollgate.yaml")
		if err := os.WriteFile(path, []byte(yamlText), 0o600); err != nil {
			t.Fatal(err)
		}
		environ = append(environ, ConfigEnv+"="+path)
	}
	cfg := defaults()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	err := Bind(fs, &cfg).Load(args, environ)
	return cfg, err
}

func TestLoadPrecedence(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  []string
		args []string
		want func(*testConfig)
	}{
		{
			name: "defaults",
			want: func(*testConfig) {},
		},
		{
			name: "yaml over defaults",
			yaml: "listen: :9000\ntimeout: 1m\nverbose: true\nmax-bytes: 100\nlog_level: debug\npostgres:\n  max_conns: 8\n",
			want: func(c *testConfig) {
				c.Listen, c.Timeout, c.Verbose, c.MaxBytes = ":9000", time.Minute, true, 100
				c.LogLevel = slog.LevelDebug
				c.Postgres.MaxConns = 8
			},
		},
		{
			name: "env over yaml",
			yaml: "listen: :9000\ntimeout: 1m\npostgres:\n  max_conns: 8\n",
			env:  []string{"TOLLGATE_ADMIN_LISTEN=:9001", "TOLLGATE_POSTGRES_MAX_CONNS=9", "TOLLGATE_LOG_LEVEL=warn"},
			want: func(c *testConfig) {
				c.Listen, c.Timeout, c.Postgres.MaxConns, c.LogLevel = ":9001", time.Minute, 9, slog.LevelWarn
			},
		},
		{
			name: "flags over env over yaml",
			yaml: "listen: :9000\nratio: 0.1\n",
			env:  []string{"TOLLGATE_ADMIN_LISTEN=:9001", "TOLLGATE_RATIO=0.2"},
			args: []string{"--listen", ":9002", "--postgres-max-conns=10"},
			want: func(c *testConfig) { c.Listen, c.Ratio, c.Postgres.MaxConns = ":9002", 0.2, 10 },
		},
		{
			name: "flag set to the default still wins",
			env:  []string{"TOLLGATE_ADMIN_LISTEN=:9001"},
			args: []string{"--listen=127.0.0.1:8081"},
			want: func(*testConfig) {},
		},
		{
			name: "empty env counts as unset",
			yaml: "listen: :9000\n",
			env:  []string{"TOLLGATE_ADMIN_LISTEN=", "TOLLGATE_ADMIN_TIMEOUT="},
			want: func(c *testConfig) { c.Listen = ":9000" },
		},
		{
			name: "yaml null keeps the default, yaml empty string does not",
			yaml: "listen: ~\npepper: ''\ntimeout:\n",
			want: func(*testConfig) {},
		},
		{
			name: "yaml sets a string to empty",
			yaml: "listen: ''\n",
			want: func(c *testConfig) { c.Listen = "" },
		},
		{
			name: "later environ entry wins",
			env:  []string{"TOLLGATE_ADMIN_LISTEN=:1", "TOLLGATE_ADMIN_LISTEN=:2"},
			want: func(c *testConfig) { c.Listen = ":2" },
		},
		{
			name: "lists: yaml sequence",
			yaml: "accounts: [a, b]\n",
			want: func(c *testConfig) { c.Accounts = []string{"a", "b"} },
		},
		{
			name: "lists: yaml scalar is comma separated",
			yaml: "accounts: a, b\n",
			want: func(c *testConfig) { c.Accounts = []string{"a", "b"} },
		},
		{
			name: "lists: empty yaml sequence empties",
			yaml: "accounts: []\n",
			want: func(c *testConfig) { c.Accounts = []string{} },
		},
		{
			name: "lists: env is comma separated",
			env:  []string{"TOLLGATE_ADMIN_ACCOUNTS= a ,b,,c "},
			want: func(c *testConfig) { c.Accounts = []string{"a", "b", "c"} },
		},
		{
			name: "lists: repeated flags append",
			env:  []string{"TOLLGATE_ADMIN_ACCOUNTS=x"},
			args: []string{"--accounts", "a,b", "--accounts", "c"},
			want: func(c *testConfig) { c.Accounts = []string{"a", "b", "c"} },
		},
		{
			name: "bool flag without value",
			env:  []string{"TOLLGATE_VERBOSE=false"},
			args: []string{"--verbose"},
			want: func(c *testConfig) { c.Verbose = true },
		},
		{
			name: "bool flag set false",
			yaml: "verbose: true\n",
			args: []string{"--verbose=false"},
			want: func(*testConfig) {},
		},
		{
			name: "yaml aliases",
			yaml: "listen: &addr ':7000'\npostgres:\n  dsn: *addr\n",
			want: func(c *testConfig) { c.Listen, c.Postgres.DSN = ":7000", ":7000" },
		},
		{
			name: "yaml comments only",
			yaml: "# nothing set yet\n",
			want: func(*testConfig) {},
		},
		{
			name: "yaml group null",
			yaml: "postgres:\n",
			want: func(*testConfig) {},
		},
		{
			name: "every type",
			args: []string{"--max-bytes=-5", "--seed=18446744073709551615", "--ratio=1e-3", "--timeout=1h2m", "--log-level=ERROR+2", "--pepper=p"},
			want: func(c *testConfig) {
				c.MaxBytes, c.Seed, c.Ratio, c.Timeout = -5, 18446744073709551615, 1e-3, time.Hour+2*time.Minute
				c.LogLevel, c.Pepper = slog.LevelError+2, "p"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := load(t, tt.yaml, tt.env, tt.args...)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := defaults()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestConfigFlagOverridesConfigEnv(t *testing.T) {
	dir := t.TempDir()
	fromEnv, fromFlag := filepath.Join(dir, "env.yaml"), filepath.Join(dir, "flag.yaml")
	for path, listen := range map[string]string{fromEnv: ":1", fromFlag: ":2"} {
		if err := os.WriteFile(path, []byte("listen: "+listen+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := defaults()
	b := Bind(pflag.NewFlagSet("test", pflag.ContinueOnError), &cfg)
	if err := b.Load([]string{"--config", fromFlag}, []string{ConfigEnv + "=" + fromEnv}); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":2" {
		t.Errorf("Listen = %q, want the value from --config", cfg.Listen)
	}
}

// Apply serves callers whose flag set is parsed elsewhere (cobra).
func TestApplyAfterParse(t *testing.T) {
	cfg := defaults()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	b := Bind(fs, &cfg)
	if err := fs.Parse([]string{"--timeout=2s"}); err != nil {
		t.Fatal(err)
	}
	if cfg.Timeout != 5*time.Second {
		t.Fatalf("Timeout = %v before Apply, want the default", cfg.Timeout)
	}
	if err := b.Apply([]string{"TOLLGATE_ADMIN_TIMEOUT=3s"}); err != nil {
		t.Fatal(err)
	}
	if cfg.Timeout != 2*time.Second {
		t.Errorf("Timeout = %v, want the flag's 2s", cfg.Timeout)
	}
}

func TestInlineGroup(t *testing.T) {
	var cfg struct {
		DB testPostgres `yaml:",inline"`
	}
	b := Bind(pflag.NewFlagSet("test", pflag.ContinueOnError), &cfg)
	if err := b.applyYAML("inline.yaml", []byte("max_conns: 3\n")); err != nil {
		t.Fatal(err)
	}
	if cfg.DB.MaxConns != 3 {
		t.Errorf("MaxConns = %d, want 3 from the top-level key", cfg.DB.MaxConns)
	}
}
