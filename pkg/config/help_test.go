package config

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestHelpText(t *testing.T) {
	cfg := defaults()
	cfg.Pepper = "default-pepper"
	fs := pflag.NewFlagSet("admin", pflag.ContinueOnError)
	Bind(fs, &cfg)
	help := fs.FlagUsages()
	for _, want := range []string{
		`--listen string`,
		`address the admin API listens on (env TOLLGATE_ADMIN_LISTEN, yaml listen) (default "127.0.0.1:8081")`,
		`--timeout duration`,
		`(env TOLLGATE_ADMIN_TIMEOUT, yaml timeout) (default 5s)`,
		`--accounts strings`,
		`(env TOLLGATE_ADMIN_ACCOUNTS, yaml accounts) (default default)`,
		`--postgres-max-conns int`,
		`(env TOLLGATE_POSTGRES_MAX_CONNS, yaml postgres.max_conns) (default 4)`,
		`--postgres-dsn string`,
		`(env TOLLGATE_POSTGRES_DSN, yaml postgres.dsn)`,
		`--log-level level`,
		`(env TOLLGATE_LOG_LEVEL, yaml log_level) (default INFO)`,
		`--ratio float`,
		`--seed uint`,
		`random seed (yaml seed)`,
		`--verbose`,
		`--config file`,
		`YAML file of settings`,
		`(env TOLLGATE_CONFIG)`,
		`HMAC key for API key hashes (env TOLLGATE_PEPPER, yaml pepper)`,
	} {
		if !strings.Contains(help, want) {
			t.Errorf("--help does not contain %q:\n%s", want, help)
		}
	}
	if strings.Contains(help, "default-pepper") {
		t.Errorf("--help shows a secret default:\n%s", help)
	}
}

func TestSecretsRedacted(t *testing.T) {
	const pepper, dsn = "pepper-s3cret", "postgres://u:pw-s3cret@db/tollgate"
	cfg := defaults()
	fs := pflag.NewFlagSet("admin", pflag.ContinueOnError)
	b := Bind(fs, &cfg)
	if err := b.Load([]string{"--pepper", pepper}, []string{"TOLLGATE_POSTGRES_DSN=" + dsn}); err != nil {
		t.Fatal(err)
	}
	if cfg.Pepper != pepper || cfg.Postgres.DSN != dsn {
		t.Fatalf("secrets not loaded: %+v", cfg)
	}

	got := Redacted(&cfg)
	want := map[string]any{
		"listen":    "127.0.0.1:8081",
		"timeout":   "5s",
		"accounts":  []string{"default"},
		"pepper":    Mask,
		"verbose":   false,
		"max-bytes": int64(0),
		"seed":      uint64(0),
		"ratio":     0.5,
		"log_level": "INFO",
		"postgres":  map[string]any{"dsn": Mask, "max_conns": 4},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Redacted =\n%#v\nwant\n%#v", got, want)
	}

	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("starting", "config", LogValue(&cfg))
	var line struct {
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line.Config["pepper"] != Mask || line.Config["postgres"].(map[string]any)["dsn"] != Mask {
		t.Errorf("log line = %s, want masked secrets", logs.String())
	}

	// Anything else that prints flags: pflag's own Value.String and help.
	for _, name := range []string{"pepper", "postgres-dsn"} {
		if s := fs.Lookup(name).Value.String(); s != "" {
			t.Errorf("flag %s String() = %q, want it hidden", name, s)
		}
	}
	for what, text := range map[string]string{"log": logs.String(), "help": fs.FlagUsages()} {
		if strings.Contains(text, "s3cret") {
			t.Errorf("%s shows a secret: %s", what, text)
		}
	}
}

func TestUnsetSecretShowsEmpty(t *testing.T) {
	cfg := defaults()
	if got := Redacted(&cfg)["pepper"]; got != "" {
		t.Errorf("unset pepper shows %q, want \"\" so an operator sees it is missing", got)
	}
}
