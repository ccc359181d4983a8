// Command tollgate is the one Tollgate binary: every role (admin, dev, and
// the roles to come) and the operator CLI.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // keys may name any IANA time zone, whatever the host has

	"github.com/spf13/pflag"

	"github.com/tollgate/tollgate/pkg/config"
	"github.com/tollgate/tollgate/services/admin"
	"github.com/tollgate/tollgate/services/dev"
	"github.com/tollgate/tollgate/services/edge"
	"github.com/tollgate/tollgate/services/metering"
	"github.com/tollgate/tollgate/services/sink"
)

const usage = `Tollgate issues API keys and meters and enforces what each key may do and spend.

Usage: tollgate <role or command> [flags]

Roles (long-running):
  admin      the admin API: KeyService and CatalogService over Connect/gRPC/gRPC-Web, REST, the key read model
  edge       the OpenAI- and Anthropic-compatible proxy that enforces keys and publishes usage
  metering   folds usage into authoritative balances (PostgreSQL), BALANCES and ALERTS;
             'tollgate metering rebuild' recomputes every balance and reports differences
  sink       writes every usage event once into ClickHouse, where usage reports are read
  dev        every role in one process, NATS embedded, PostgreSQL and ClickHouse under ./.data

Operator commands (talk to the admin API):
  keys       create, list, get, update, revoke, rotate API keys, and show their balances
  usage      usage reports: totals, time series, breakdowns, top keys by spend
  catalog    the services and models the edge serves, and their prices: list, put, delete

Run 'tollgate <role> --help' for every setting of a role (flags, TOLLGATE_* variables, YAML keys).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "admin":
		cfg := adminSettings{Config: admin.DefaultConfig(), Log: defaultLog()}
		return runRole("admin", args[1:], &cfg, &cfg.Log, stderr, func(log *slog.Logger) error {
			return admin.Run(ctx, cfg.Config, log)
		})
	case "edge":
		cfg := edgeSettings{Config: edge.DefaultConfig(), Log: defaultLog()}
		return runRole("edge", args[1:], &cfg, &cfg.Log, stderr, func(log *slog.Logger) error {
			// This process runs only the edge: it may start over with the
			// runtime settings that suit it.
			edge.KeepSysmonAwake(cfg.Config, log)
			edge.TuneGC(ctx, cfg.Config)
			return edge.Run(ctx, cfg.Config, log)
		})
	case "metering":
		cfg := meteringSettings{Config: metering.DefaultConfig(), Log: defaultLog()}
		if len(args) > 1 && args[1] == "rebuild" {
			return runRole("metering rebuild", args[2:], &cfg, &cfg.Log, stderr, func(log *slog.Logger) error {
				rep, err := metering.Rebuild(ctx, cfg.Config, log, stdout)
				if err == nil && len(rep.Differences) > 0 {
					err = fmt.Errorf("%d keys differ from the live balances (rebuilt into schema %s)", len(rep.Differences), rep.Schema)
				}
				return err
			})
		}
		return runRole("metering", args[1:], &cfg, &cfg.Log, stderr, func(log *slog.Logger) error {
			return metering.Run(ctx, cfg.Config, log)
		})
	case "dev":
		cfg := devSettings{Config: dev.DefaultConfig(), Log: logSettings{Level: slog.LevelInfo, Format: "text"}}
		return runRole("dev", args[1:], &cfg, &cfg.Log, stderr, func(log *slog.Logger) error {
			return dev.Run(ctx, cfg.Config, log, os.Stdout)
		})
	case "sink":
		cfg := sinkSettings{Config: sink.DefaultConfig(), Log: defaultLog()}
		return runRole("sink", args[1:], &cfg, &cfg.Log, stderr, func(log *slog.Logger) error {
			sink.TuneGC(cfg.GCPercent) // this process runs only the sink
			return sink.Run(ctx, cfg.Config, log)
		})
	case "keys":
		return runKeys(ctx, args[1:], stdout, stderr)
	case "usage":
		return runUsage(ctx, args[1:], stdout, stderr)
	case "catalog":
		return runCatalog(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "tollgate: unknown role or command %q\n\n%s", args[0], usage)
		return 2
	}
}

// logSettings are every role's logging settings.
type logSettings struct {
	Level  slog.Level `flag:"log-level" env:"TOLLGATE_LOG_LEVEL" yaml:"level" usage:"least important log level written: debug, info, warn or error"`
	Format string     `flag:"log-format" env:"TOLLGATE_LOG_FORMAT" yaml:"format" usage:"json (production) or text"`
}

func defaultLog() logSettings { return logSettings{Level: slog.LevelInfo, Format: "json"} }

type adminSettings struct {
	Log          logSettings `yaml:"log"`
	admin.Config `yaml:",inline"`
}

type edgeSettings struct {
	Log         logSettings `yaml:"log"`
	edge.Config `yaml:",inline"`
}

type meteringSettings struct {
	Log             logSettings `yaml:"log"`
	metering.Config `yaml:",inline"`
}

type sinkSettings struct {
	Log         logSettings `yaml:"log"`
	sink.Config `yaml:",inline"`
}

type devSettings struct {
	Log        logSettings `yaml:"log"`
	dev.Config `yaml:",inline"`
}

// runRole loads a role's settings (flags > TOLLGATE_* > YAML > defaults),
// builds its logger and runs it until a signal.
func runRole(role string, args []string, cfg any, logCfg *logSettings, stderr io.Writer, start func(*slog.Logger) error) int {
	fs := pflag.NewFlagSet("tollgate "+role, pflag.ContinueOnError)
	fs.SortFlags = false
	b := config.Bind(fs, cfg)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(os.Stdout, "Usage: tollgate %s [flags]\n\nEvery setting is a flag, a TOLLGATE_* environment variable or a key in the YAML file given by --config.\n\n%s", role, fs.FlagUsages())
	}
	if err := b.Load(args, os.Environ()); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "tollgate %s: %v\n", role, err)
		return 2
	}
	var h slog.Handler
	opts := &slog.HandlerOptions{Level: logCfg.Level}
	switch logCfg.Format {
	case "json":
		h = slog.NewJSONHandler(stderr, opts)
	case "text":
		h = slog.NewTextHandler(stderr, opts)
	default:
		fmt.Fprintf(stderr, "tollgate %s: log-format: %q is not json or text\n", role, logCfg.Format)
		return 2
	}
	log := slog.New(h).With("role", role)
	log.Info("starting", "config", config.LogValue(cfg))
	if err := start(log); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("stopped with an error", "err", err)
		fmt.Fprintf(stderr, "tollgate %s: %v\n", role, err)
		return 1
	}
	log.Info("stopped")
	return 0
}
