package admin

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tollgate/tollgate/pkg/keys"
)

// Config is everything the admin role reads from flags, TOLLGATE_* variables
// or the YAML file.
type Config struct {
	Listen           string        `flag:"listen" env:"TOLLGATE_ADMIN_LISTEN" yaml:"listen" usage:"address of the admin API (Connect, gRPC, gRPC-Web and REST on one port)"`
	NATSURL          string        `flag:"nats-url" env:"TOLLGATE_NATS_URL" yaml:"nats_url" usage:"NATS server URL(s), comma-separated"`
	PostgresDSN      string        `flag:"postgres-dsn" env:"TOLLGATE_POSTGRES_DSN" yaml:"postgres_dsn" usage:"PostgreSQL connection URL for the read model" secret:"true"`
	Pepper           string        `flag:"pepper" env:"TOLLGATE_PEPPER" yaml:"pepper" usage:"server-side secret (32 bytes or more) that key secrets are hashed with" secret:"true"`
	PepperID         string        `flag:"pepper-id" env:"TOLLGATE_PEPPER_ID" yaml:"pepper_id" usage:"name of the pepper, recorded with each hash"`
	DefaultPrefix    string        `flag:"key-prefix" env:"TOLLGATE_KEY_PREFIX" yaml:"key_prefix" usage:"prefix of new key secrets unless a request names one"`
	DefaultAccount   string        `flag:"default-account" env:"TOLLGATE_DEFAULT_ACCOUNT" yaml:"default_account" usage:"home account of the bootstrap operator token"`
	AdminToken       string        `flag:"admin-token" env:"TOLLGATE_ADMIN_TOKEN" yaml:"admin_token" usage:"static bootstrap operator token (empty: none)" secret:"true"`
	JWTSecret        string        `flag:"jwt-hs256-secret" env:"TOLLGATE_JWT_HS256_SECRET" yaml:"jwt_hs256_secret" usage:"secret that verifies HS256 operator JWTs (empty: none)" secret:"true"`
	JWTPublicKey     string        `flag:"jwt-rs256-public-key" env:"TOLLGATE_JWT_RS256_PUBLIC_KEY" yaml:"jwt_rs256_public_key" usage:"PEM file with the RSA public key that verifies RS256 operator JWTs (empty: none)"`
	StreamReplicas   int           `flag:"stream-replicas" env:"TOLLGATE_STREAM_REPLICAS" yaml:"stream_replicas" usage:"JetStream replicas of the streams this role creates (3 in a cluster)"`
	RebuildReadModel bool          `flag:"rebuild-read-model" env:"TOLLGATE_REBUILD_READ_MODEL" yaml:"rebuild_read_model" usage:"empty the read model at start and rebuild it from the KEYS stream"`
	ClickHouseDSN    string        `flag:"clickhouse-dsn" env:"TOLLGATE_CLICKHOUSE_DSN" yaml:"clickhouse_dsn" usage:"ClickHouse of the usage analytics (UsageService), clickhouse://user:password@host:9000/database; empty: usage reports answer unavailable" secret:"true"`
	ShutdownTimeout  time.Duration `flag:"shutdown-timeout" env:"TOLLGATE_SHUTDOWN_TIMEOUT" yaml:"shutdown_timeout" usage:"how long in-flight requests may take to finish on SIGTERM"`
}

// DefaultConfig is the configuration before flags, environment and file.
func DefaultConfig() Config {
	return Config{
		Listen:          "127.0.0.1:8081",
		NATSURL:         "nats://127.0.0.1:4222",
		PostgresDSN:     "postgres://postgres@127.0.0.1:5432/tollgate?sslmode=disable",
		PepperID:        "p1",
		DefaultPrefix:   "en_",
		DefaultAccount:  "default",
		StreamReplicas:  1,
		ClickHouseDSN:   "clickhouse://127.0.0.1:9000/tollgate",
		ShutdownTimeout: 10 * time.Second,
	}
}

// Validate says what is missing or wrong, all at once.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("listen: set the address to listen on, e.g. 127.0.0.1:8081"))
	}
	if c.NATSURL == "" {
		errs = append(errs, errors.New("nats-url: set the NATS server URL"))
	}
	if c.PostgresDSN == "" {
		errs = append(errs, errors.New("postgres-dsn: set the PostgreSQL URL"))
	}
	if len(c.Pepper) < 32 {
		errs = append(errs, errors.New("pepper: set TOLLGATE_PEPPER to a random secret of 32 bytes or more (e.g. openssl rand -hex 32)"))
	}
	if err := keys.ValidPrefix(c.DefaultPrefix); err != nil {
		errs = append(errs, fmt.Errorf("key-prefix: %w", err))
	}
	if err := keys.ValidateAccount(c.DefaultAccount); err != nil {
		errs = append(errs, fmt.Errorf("default-account: %w", err))
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		errs = append(errs, errors.New("admin-token: use 16 characters or more"))
	}
	if c.AdminToken == "" && c.JWTSecret == "" && c.JWTPublicKey == "" {
		errs = append(errs, errors.New("no operator credential: set admin-token, jwt-hs256-secret or jwt-rs256-public-key"))
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		errs = append(errs, errors.New("stream-replicas: must be 1 to 5"))
	}
	return errors.Join(errs...)
}

func (c Config) rsaPublicKey() (*rsa.PublicKey, error) {
	if c.JWTPublicKey == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(c.JWTPublicKey)
	if err != nil {
		return nil, fmt.Errorf("jwt-rs256-public-key: %w", err)
	}
	k, err := jwt.ParseRSAPublicKeyFromPEM(pem)
	if err != nil {
		return nil, fmt.Errorf("jwt-rs256-public-key %s: %w", c.JWTPublicKey, err)
	}
	return k, nil
}
