package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/tollgate/tollgate/pkg/gctune"
	"github.com/tollgate/tollgate/pkg/sysmon"
)

// Config is everything the edge role reads from flags, TOLLGATE_* variables
// or the YAML file.
type Config struct {
	Listen          string        `flag:"listen" env:"TOLLGATE_EDGE_LISTEN" yaml:"listen" usage:"address of the OpenAI- and Anthropic-compatible proxy"`
	NATSURL         string        `flag:"nats-url" env:"TOLLGATE_NATS_URL" yaml:"nats_url" usage:"NATS server URL(s), comma-separated"`
	Pepper          string        `flag:"pepper" env:"TOLLGATE_PEPPER" yaml:"pepper" usage:"the admin's pepper: key secrets are looked up by their HMAC under it" secret:"true"`
	Instance        string        `flag:"instance" env:"TOLLGATE_EDGE_INSTANCE" yaml:"instance" usage:"name of this edge process in usage events; random bits are added at every start so that sequences never repeat (default: host name)"`
	SpoolDir        string        `flag:"spool-dir" env:"TOLLGATE_EDGE_SPOOL_DIR" yaml:"spool_dir" usage:"where usage events wait while the bus is unreachable"`
	FailClosed      bool          `flag:"fail-closed" env:"TOLLGATE_EDGE_FAIL_CLOSED" yaml:"fail_closed" usage:"refuse requests (503) while the bus is unreachable instead of serving from what the edge knows"`
	MaxRequestBytes int64         `flag:"max-request-bytes" env:"TOLLGATE_EDGE_MAX_REQUEST_BYTES" yaml:"max_request_bytes" usage:"largest request body for keys that set no maximum"`
	Partitions      int           `flag:"usage-partitions" env:"TOLLGATE_USAGE_PARTITIONS" yaml:"usage_partitions" usage:"partitions of the usage subjects (metering workers share them); the same on every edge"`
	UsageBatchDelay time.Duration `flag:"usage-batch-delay" env:"TOLLGATE_EDGE_USAGE_BATCH_DELAY" yaml:"usage_batch_delay" usage:"how long a usage event may wait for others to be published with (longer: fewer, larger bursts on the bus)"`
	UpstreamTimeout time.Duration `flag:"upstream-header-timeout" env:"TOLLGATE_EDGE_UPSTREAM_HEADER_TIMEOUT" yaml:"upstream_header_timeout" usage:"how long an upstream may take to start answering"`
	StreamReplicas  int           `flag:"stream-replicas" env:"TOLLGATE_STREAM_REPLICAS" yaml:"stream_replicas" usage:"JetStream replicas of the streams this role creates (3 in a cluster)"`
	ShutdownTimeout time.Duration `flag:"shutdown-timeout" env:"TOLLGATE_SHUTDOWN_TIMEOUT" yaml:"shutdown_timeout" usage:"how long in-flight requests (streams included) may take to finish on SIGTERM"`
	HTTPServer      string        `flag:"http-server" env:"TOLLGATE_EDGE_HTTP_SERVER" yaml:"http_server" usage:"server for the clients' connections: h1 (the edge's own HTTP/1.1 server; HTTP/2 without TLS goes to net/http's) or net/http (the standard library's for everything)"`
	SysmonAwake     bool          `flag:"sysmon-awake" env:"TOLLGATE_EDGE_SYSMON_AWAKE" yaml:"sysmon_awake" usage:"a process that runs only the edge starts again with GODEBUG=schedtrace=2147483647, so that Go's monitor thread does not deep-sleep between requests (waking it cost about a fifth of the edge's CPU); a schedtrace in GODEBUG wins"`
	GCMinHeapMB     int           `flag:"gc-min-heap-mb" env:"TOLLGATE_EDGE_GC_MIN_HEAP_MB" yaml:"gc_min_heap_mb" usage:"heap size in MiB below which a process that runs only the edge does not collect garbage (0: Go's default pacing; GOGC in the environment wins)"`
}

// The values of Config.HTTPServer.
const (
	HTTPServerH1  = "h1"
	HTTPServerStd = "net/http"
)

// DefaultConfig is the configuration before flags, environment and file.
func DefaultConfig() Config {
	return Config{
		Listen:          "127.0.0.1:8080",
		NATSURL:         "nats://127.0.0.1:4222",
		SpoolDir:        "/var/lib/tollgate/spool",
		MaxRequestBytes: 10 << 20,
		Partitions:      16,
		UsageBatchDelay: 5 * time.Millisecond,
		UpstreamTimeout: 2 * time.Minute,
		StreamReplicas:  1,
		ShutdownTimeout: 30 * time.Second,
		GCMinHeapMB:     64,
		SysmonAwake:     true,
		HTTPServer:      HTTPServerH1,
	}
}

// Validate says what is missing or wrong, all at once.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("listen: set the address to listen on, e.g. 127.0.0.1:8080"))
	}
	if c.NATSURL == "" {
		errs = append(errs, errors.New("nats-url: set the NATS server URL"))
	}
	if len(c.Pepper) < 32 {
		errs = append(errs, errors.New("pepper: set TOLLGATE_PEPPER to the admin's pepper (32 bytes or more)"))
	}
	if !validInstance(c.Instance) {
		errs = append(errs, fmt.Errorf("instance: %q must be at most 64 letters, digits, '.', '_' or '-' (it names the spool file and is part of every usage event's id)", c.Instance))
	}
	if c.SpoolDir == "" {
		errs = append(errs, errors.New("spool-dir: set a directory for usage events while the bus is away"))
	}
	if c.MaxRequestBytes <= 0 {
		errs = append(errs, errors.New("max-request-bytes: must be positive"))
	}
	if c.Partitions < 1 || c.Partitions > 1024 {
		errs = append(errs, errors.New("usage-partitions: must be 1 to 1024"))
	}
	if c.UpstreamTimeout <= 0 {
		errs = append(errs, errors.New("upstream-header-timeout: must be positive"))
	}
	if c.GCMinHeapMB < 0 || c.GCMinHeapMB > maxGCMinHeapMB {
		errs = append(errs, errors.New("gc-min-heap-mb: must be 0 to 1048576 (0: Go's default pacing)"))
	}
	if c.HTTPServer != HTTPServerH1 && c.HTTPServer != HTTPServerStd {
		errs = append(errs, fmt.Errorf("http-server: %q is not a server: use %s or %s", c.HTTPServer, HTTPServerH1, HTTPServerStd))
	}
	if c.UsageBatchDelay <= 0 || c.UsageBatchDelay > time.Second {
		errs = append(errs, errors.New("usage-batch-delay: must be positive and at most 1s (events wait that long before they are sent)"))
	}
	return errors.Join(errs...)
}

// TuneGC keeps, until ctx ends, the garbage collector of a process that runs
// only the edge (`tollgate edge`) from collecting before the heap reaches
// GCMinHeapMB (gctune.MinHeap). The edge's live heap is small (a few MB
// plus its keys) while it allocates about 14 KB per request: with Go's
// default pacing it collected seven times a second at 2,000 requests a
// second, and the requests that met a collection were its p99
// (BENCHMARKS.md).
func TuneGC(ctx context.Context, c Config) {
	if c.GCMinHeapMB <= 0 || c.GCMinHeapMB > maxGCMinHeapMB {
		return // Validate says what is wrong
	}
	go gctune.MinHeap(ctx, uint64(c.GCMinHeapMB)<<20, 100*time.Millisecond)
}

// KeepSysmonAwake starts a process that runs only the edge (`tollgate
// edge`) again with GODEBUG set so that the Go runtime's monitor thread never
// deep-sleeps (package sysmon), when c.SysmonAwake is set and GODEBUG does
// not name schedtrace already. Woken by the first system call after every
// idle spell, that thread cost the edge 43 to 63 µs of CPU per streamed
// request at 2,000 a second (BENCHMARKS.md). Call it first: when it acts it
// does not return, and the process starts over with the same arguments. If
// the exec fails the edge goes on with Go's default, and says so: a
// performance setting is no reason not to serve.
func KeepSysmonAwake(c Config, log *slog.Logger) {
	if !c.SysmonAwake || sysmon.Decided(os.Getenv("GODEBUG")) {
		return
	}
	log.Info("edge: starting again with GODEBUG " + sysmon.Setting + " (sysmon-awake)")
	if err := sysmon.Reexec(); err != nil {
		log.Warn("edge: going on with Go's default sysmon (set --sysmon-awake=false to skip the attempt)", "err", err)
	}
}

// maxGCMinHeapMB bounds --gc-min-heap-mb: 1 TiB.
const maxGCMinHeapMB = 1 << 20

// validInstance reports whether name may name an edge: it becomes part of a
// file name and of "instance:partition:sequence" event ids, so no '/' or ':'.
func validInstance(name string) bool {
	if len(name) > 64 {
		return false
	}
	for _, c := range []byte(name) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
