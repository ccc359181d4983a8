// Package metering is the metering role: it folds the USAGE stream into
// authoritative balances in PostgreSQL, exactly once, publishes them to the
// BALANCES bucket for edges, and raises alerts on ALERTS.
package metering

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/pgdb"
	"github.com/tollgate/tollgate/services/metering/internal/keyhistory"
	"github.com/tollgate/tollgate/services/metering/internal/store"
)

// Options are hooks for tests and metrics.
type Options struct {
	// Lag, if set, observes each event's fold lag: from when the request
	// started at the edge to the commit that folded it.
	Lag func(time.Duration)
}

// Run runs a metering worker until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	return RunWith(ctx, cfg, log, Options{})
}

// RunWith is Run with hooks.
func RunWith(ctx context.Context, cfg Config, log *slog.Logger, opts Options) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("metering config: %w", err)
	}
	nc, err := bus.Connect(cfg.NATSURL, "tollgate-metering", log, nats.RetryOnFailedConnect(true))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	pool, err := pgdb.Open(ctx, cfg.PostgresDSN)
	if err != nil {
		return stopped(ctx, err)
	}
	defer pool.Close()
	if err := store.Migrate(ctx, pool); err != nil {
		return stopped(ctx, err)
	}
	streams, err := ensure(ctx, js, cfg.StreamReplicas)
	if err != nil {
		return stopped(ctx, err)
	}
	keys := keyhistory.New(log)
	m := newMetrics()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return keys.Run(gctx, js) })
	if cfg.MetricsListen != "" {
		g.Go(func() error { return serveOps(gctx, cfg.MetricsListen, m, nc, pool, log) })
	}
	g.Go(func() error {
		if err := flushOutbox(gctx, pool, js); err != nil {
			log.Warn("alerts left by an earlier run stay in the outbox for now", "err", err)
		}
		w := &worker{cfg: cfg, log: log, js: js, keysStream: streams, lag: opts.Lag, metrics: m,
			folder: &folder{pool: pool, keys: keys, now: time.Now}}
		return w.run(gctx)
	})
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// stopped is nil when err only says that ctx ended during start-up.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// ensure creates what metering reads and writes, and returns KEYS.
func ensure(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	opt := bus.StreamOptions{Replicas: replicas}
	if _, err := bus.EnsureUsageStream(ctx, js, bus.UsageOptions{StreamOptions: opt}); err != nil {
		return nil, err
	}
	if _, err := bus.EnsureBalances(ctx, js, opt); err != nil {
		return nil, err
	}
	if _, err := bus.EnsureAlertsStream(ctx, js, opt); err != nil {
		return nil, err
	}
	return bus.EnsureKeysStream(ctx, js, opt)
}

// openSchema opens a pool whose unqualified tables live in schema.
func openSchema(ctx context.Context, dsn, schema string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse postgres dsn: invalid connection string")
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return pool, pool.Ping(ctx)
}

// Balance reads a key's folded balance from metering's tables (nil when
// nothing was folded for it yet). The admin API's GetBalances uses it.
func Balance(ctx context.Context, pool *pgxpool.Pool, keyID string) (*eventsv1.KeyBalance, error) {
	return store.Balance(ctx, pool, keyID)
}

// Migrate brings metering's tables up to date; the admin role calls it too,
// so GetBalances works before the first metering worker has run.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error { return store.Migrate(ctx, pool) }
