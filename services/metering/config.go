package metering

import (
	"errors"
	"time"
)

// Config is everything the metering role reads from flags, TOLLGATE_*
// variables or the YAML file.
type Config struct {
	NATSURL        string        `flag:"nats-url" env:"TOLLGATE_NATS_URL" yaml:"nats_url" usage:"NATS server URL(s), comma-separated"`
	PostgresDSN    string        `flag:"postgres-dsn" env:"TOLLGATE_POSTGRES_DSN" yaml:"postgres_dsn" usage:"PostgreSQL connection URL for balances" secret:"true"`
	Partitions     int           `flag:"usage-partitions" env:"TOLLGATE_USAGE_PARTITIONS" yaml:"usage_partitions" usage:"partitions of the usage subjects; the same as on the edges"`
	WorkerIndex    int           `flag:"worker-index" env:"TOLLGATE_METERING_WORKER_INDEX" yaml:"worker_index" usage:"this worker's index (0-based): it owns the partitions p with p % worker-count == worker-index"`
	WorkerCount    int           `flag:"worker-count" env:"TOLLGATE_METERING_WORKER_COUNT" yaml:"worker_count" usage:"how many metering workers share the partitions"`
	BatchSize      int           `flag:"batch-size" env:"TOLLGATE_METERING_BATCH_SIZE" yaml:"batch_size" usage:"most usage events folded in one transaction"`
	BatchDelay     time.Duration `flag:"batch-delay" env:"TOLLGATE_METERING_BATCH_DELAY" yaml:"batch_delay" usage:"how long a fold waits for more events before committing a smaller batch"`
	MetricsListen  string        `flag:"metrics-listen" env:"TOLLGATE_METERING_METRICS_LISTEN" yaml:"metrics_listen" usage:"address of /metrics, /healthz and /readyz, e.g. 127.0.0.1:9091 (empty: none)"`
	StreamReplicas int           `flag:"stream-replicas" env:"TOLLGATE_STREAM_REPLICAS" yaml:"stream_replicas" usage:"JetStream replicas of the streams and buckets this role creates"`
}

// DefaultConfig is the configuration before flags, environment and file.
func DefaultConfig() Config {
	return Config{
		NATSURL:        "nats://127.0.0.1:4222",
		PostgresDSN:    "postgres://postgres@127.0.0.1:5432/tollgate?sslmode=disable",
		Partitions:     16,
		WorkerCount:    1,
		BatchSize:      2000,
		BatchDelay:     5 * time.Millisecond,
		StreamReplicas: 1,
	}
}

// Validate says what is wrong, all at once.
func (c Config) Validate() error {
	var errs []error
	if c.NATSURL == "" || c.PostgresDSN == "" {
		errs = append(errs, errors.New("nats-url and postgres-dsn: both are required"))
	}
	if c.Partitions < 1 || c.Partitions > 1024 {
		errs = append(errs, errors.New("usage-partitions: must be 1 to 1024 (and the same as the edges')"))
	}
	if c.WorkerCount < 1 || c.WorkerIndex < 0 || c.WorkerIndex >= c.WorkerCount {
		errs = append(errs, errors.New("worker-index must be in [0, worker-count) and worker-count at least 1"))
	}
	if c.BatchSize < 1 || c.BatchSize > 100_000 {
		errs = append(errs, errors.New("batch-size: must be 1 to 100000"))
	}
	if c.BatchDelay < 0 {
		errs = append(errs, errors.New("batch-delay: must not be negative"))
	}
	return errors.Join(errs...)
}

// owned lists the partitions this worker folds.
func (c Config) owned() []int {
	var out []int
	for p := range c.Partitions {
		if p%c.WorkerCount == c.WorkerIndex {
			out = append(out, p)
		}
	}
	return out
}
