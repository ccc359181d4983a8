package dev

import (
	"errors"

	"github.com/tollgate/tollgate/services/admin"
)

// Config is `tollgate dev`: every role in one process, NATS embedded, and
// (unless told otherwise) PostgreSQL and ClickHouse started under DataDir.
// The admin role's settings are all available; the edge takes the admin's
// pepper and NATS, and the few settings of its own below.
type Config struct {
	DataDir        string `flag:"data-dir" env:"TOLLGATE_DATA_DIR" yaml:"data_dir" usage:"where dev mode keeps NATS, PostgreSQL and ClickHouse data, usage spools, the pepper and the admin token"`
	NATSListen     string `flag:"nats-listen" env:"TOLLGATE_NATS_LISTEN" yaml:"nats_listen" usage:"address of the embedded NATS server"`
	EdgeListen     string `flag:"edge-listen" env:"TOLLGATE_EDGE_LISTEN" yaml:"edge_listen" usage:"address of the edge proxy"`
	MockListen     string `flag:"mock-listen" env:"TOLLGATE_MOCK_LISTEN" yaml:"mock_listen" usage:"address of the built-in mock upstream the demo catalog points at"`
	StartDatabases bool   `flag:"start-databases" env:"TOLLGATE_START_DATABASES" yaml:"start_databases" usage:"start PostgreSQL and ClickHouse under data-dir (false: use postgres-dsn)"`
	PostgresPort   int    `flag:"postgres-port" env:"TOLLGATE_POSTGRES_PORT" yaml:"postgres_port" usage:"port of the PostgreSQL that dev mode starts"`
	ClickHousePort int    `flag:"clickhouse-port" env:"TOLLGATE_CLICKHOUSE_PORT" yaml:"clickhouse_port" usage:"native-protocol port of the ClickHouse that dev mode starts (HTTP on the next port)"`

	Admin admin.Config `yaml:"admin"`
}

// DefaultConfig is dev mode before flags, environment and file. The admin
// role's own defaults apply, but NATS and PostgreSQL come from dev mode.
func DefaultConfig() Config {
	a := admin.DefaultConfig()
	a.NATSURL, a.PostgresDSN = "", ""
	return Config{
		DataDir:        ".data",
		NATSListen:     "127.0.0.1:4222",
		EdgeListen:     "127.0.0.1:8080",
		MockListen:     "127.0.0.1:8090",
		StartDatabases: true,
		PostgresPort:   55432,
		ClickHousePort: 59000,
		Admin:          a,
	}
}

// Validate checks dev mode's own settings; each role checks its own.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data-dir: must not be empty"))
	}
	if c.EdgeListen == "" || c.MockListen == "" {
		errs = append(errs, errors.New("edge-listen and mock-listen: must not be empty"))
	}
	if !c.StartDatabases && c.Admin.PostgresDSN == "" {
		errs = append(errs, errors.New("postgres-dsn: set it when start-databases is false"))
	}
	return errors.Join(errs...)
}
