package sink

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"runtime/debug"
	"time"
)

// Config is everything the sink role reads from flags, TOLLGATE_* variables
// or the YAML file.
type Config struct {
	NATSURL        string        `flag:"nats-url" env:"TOLLGATE_NATS_URL" yaml:"nats_url" usage:"NATS server URL(s), comma-separated"`
	ClickHouseDSN  string        `flag:"clickhouse-dsn" env:"TOLLGATE_CLICKHOUSE_DSN" yaml:"clickhouse_dsn" usage:"ClickHouse native-protocol URL, clickhouse://user:password@host:9000/database (the database is created if missing)" secret:"true"`
	Consumer       string        `flag:"consumer" env:"TOLLGATE_SINK_CONSUMER" yaml:"consumer" usage:"name of this sink's position in USAGE (kept in ClickHouse; also the prefix of its JetStream consumers); run one sink per name"`
	BatchSize      int           `flag:"batch-size" env:"TOLLGATE_SINK_BATCH_SIZE" yaml:"batch_size" usage:"most events written to ClickHouse in one insert"`
	FlushInterval  time.Duration `flag:"flush-interval" env:"TOLLGATE_SINK_FLUSH_INTERVAL" yaml:"flush_interval" usage:"longest an event waits for its batch to fill before it is written"`
	WriteTimeout   time.Duration `flag:"write-timeout" env:"TOLLGATE_SINK_WRITE_TIMEOUT" yaml:"write_timeout" usage:"deadline of each ClickHouse statement"`
	MaxBackoff     time.Duration `flag:"max-backoff" env:"TOLLGATE_SINK_MAX_BACKOFF" yaml:"max_backoff" usage:"longest wait between retries while ClickHouse is unreachable"`
	Listen         string        `flag:"listen" env:"TOLLGATE_SINK_LISTEN" yaml:"listen" usage:"address of /metrics, /healthz and /readyz (empty: none)"`
	GCPercent      int           `flag:"gc-percent" env:"TOLLGATE_SINK_GC_PERCENT" yaml:"gc_percent" usage:"garbage collector target of a process that runs only the sink, as GOGC (0: Go's default; GOGC in the environment wins)"`
	StreamReplicas int           `flag:"stream-replicas" env:"TOLLGATE_STREAM_REPLICAS" yaml:"stream_replicas" usage:"JetStream replicas of the USAGE stream if this role creates it (3 in a cluster)"`
	// ShutdownTimeout is how long the batch in hand may take to be written
	// after SIGTERM. Whatever is not written by then stays unacknowledged on
	// the stream and is written by the next start: nothing is lost either way.
	ShutdownTimeout time.Duration `flag:"shutdown-timeout" env:"TOLLGATE_SHUTDOWN_TIMEOUT" yaml:"shutdown_timeout" usage:"how long the batch in hand may take to be written on SIGTERM"`
}

// DefaultConfig is the configuration before flags, environment and file.
func DefaultConfig() Config {
	return Config{
		NATSURL:         "nats://127.0.0.1:4222",
		ClickHouseDSN:   "clickhouse://127.0.0.1:9000/tollgate",
		Consumer:        "sink-clickhouse",
		BatchSize:       50_000,
		FlushInterval:   time.Second,
		WriteTimeout:    time.Minute,
		MaxBackoff:      10 * time.Second,
		Listen:          "127.0.0.1:8084",
		StreamReplicas:  1,
		ShutdownTimeout: 10 * time.Second,
		GCPercent:       400,
	}
}

// consumerName is what JetStream accepts as a durable name.
var consumerName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Validate says what is missing or wrong, all at once.
func (c Config) Validate() error {
	var errs []error
	if c.NATSURL == "" {
		errs = append(errs, errors.New("nats-url: set the NATS server URL"))
	}
	if c.ClickHouseDSN == "" {
		errs = append(errs, errors.New("clickhouse-dsn: set the ClickHouse URL, e.g. clickhouse://127.0.0.1:9000/tollgate"))
	}
	if !consumerName.MatchString(c.Consumer) {
		errs = append(errs, fmt.Errorf("consumer: %q must be 1 to 64 letters, digits, '-' or '_'", c.Consumer))
	}
	if c.BatchSize < 1 || c.BatchSize > 1_000_000 {
		errs = append(errs, errors.New("batch-size: must be 1 to 1000000 (tens of thousands write fastest)"))
	}
	if c.FlushInterval <= 0 {
		errs = append(errs, errors.New("flush-interval: must be positive"))
	}
	if c.WriteTimeout <= 0 {
		errs = append(errs, errors.New("write-timeout: must be positive"))
	}
	if c.MaxBackoff <= 0 {
		errs = append(errs, errors.New("max-backoff: must be positive"))
	}
	if c.GCPercent < 0 {
		errs = append(errs, errors.New("gc-percent: must not be negative (0: Go's default)"))
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		errs = append(errs, errors.New("stream-replicas: must be 1 to 5"))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, errors.New("shutdown-timeout: must not be negative"))
	}
	return errors.Join(errs...)
}

// TuneGC sets the garbage collector's target of a process that runs only the
// sink (`tollgate sink`) to percent, unless GOGC is set in the environment;
// 0 leaves Go's default (100). The sink's garbage is mostly short-lived:
// the NATS client's objects for each message (about 1.3 KB, most of it the
// headers parsed into a map) and the ClickHouse client's column buffers,
// grown anew for every batch (about 0.8 KB per event); at 200,000 events a
// second that is 0.4 GB/s. 400 costs a quarter of the collections at about
// twice the peak heap (BENCHMARKS.md); GOMEMLIMIT still bounds it.
func TuneGC(percent int) (previous int, set bool) {
	if percent <= 0 || os.Getenv("GOGC") != "" {
		return 0, false
	}
	return debug.SetGCPercent(percent), true
}
