// Package dev is `tollgate dev`: the whole system in one process for a
// laptop or a demo, with NATS JetStream embedded and PostgreSQL and ClickHouse
// started as child processes with their data under one directory.
package dev

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/localdb"
	"github.com/tollgate/tollgate/services/admin"
	"github.com/tollgate/tollgate/services/edge"
	"github.com/tollgate/tollgate/services/metering"
	"github.com/tollgate/tollgate/services/sink"
)

// Run starts everything, prints where it is, and stops it all when ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger, out *os.File) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("dev config: %w", err)
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	unlock, err := lockDataDir(dataDir)
	if err != nil {
		return err
	}
	cleanups := []func(){unlock}
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()
	stopCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	}

	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{Listen: cfg.NATSListen, StoreDir: filepath.Join(dataDir, "nats")})
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() { ns.Shutdown(); ns.WaitForShutdown() })
	cfg.Admin.NATSURL = ns.ClientURL()

	clickhouseAddr := "(not started)"
	if cfg.StartDatabases {
		pg, err := localdb.StartPostgres(ctx, localdb.PostgresConfig{Dir: filepath.Join(dataDir, "postgres"), Port: cfg.PostgresPort, Fsync: true, Logger: log})
		if err != nil {
			return fmt.Errorf("start postgres: %w", err)
		}
		cleanups = append(cleanups, func() { c, cancel := stopCtx(); defer cancel(); pg.Stop(c) })
		if err := pg.CreateDatabase(ctx, "tollgate"); err != nil {
			return err
		}
		cfg.Admin.PostgresDSN = pg.DSN("tollgate")

		httpPort := 0 // with a free native port, a free HTTP port too
		if cfg.ClickHousePort != 0 {
			httpPort = cfg.ClickHousePort + 1
		}
		ch, err := localdb.StartClickHouse(ctx, localdb.ClickHouseConfig{Dir: filepath.Join(dataDir, "clickhouse"), TCPPort: cfg.ClickHousePort, HTTPPort: httpPort, Logger: log})
		if err != nil {
			return fmt.Errorf("start clickhouse: %w", err)
		}
		cleanups = append(cleanups, func() { c, cancel := stopCtx(); defer cancel(); ch.Stop(c) })
		clickhouseAddr = ch.Addr()
		cfg.Admin.ClickHouseDSN = "clickhouse://" + ch.Addr() + "/tollgate"
	}

	if cfg.Admin.Pepper == "" {
		if cfg.Admin.Pepper, err = fileSecret(filepath.Join(dataDir, "pepper")); err != nil {
			return err
		}
	}
	tokenFile := filepath.Join(dataDir, "admin-token")
	if cfg.Admin.AdminToken == "" {
		if cfg.Admin.AdminToken, err = fileSecret(tokenFile); err != nil {
			return err
		}
	} else if err := os.WriteFile(tokenFile, []byte(cfg.Admin.AdminToken+"\n"), 0o600); err != nil {
		return fmt.Errorf("write admin token: %w", err)
	}

	mockURL, err := startMock(ctx, cfg.MockListen)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		return err
	}
	err = seedCatalog(ctx, nc, mockURL)
	nc.Close()
	if err != nil {
		return fmt.Errorf("seed the demo catalog: %w", err)
	}

	adm, err := admin.New(ctx, cfg.Admin, log.With("component", "admin"))
	if err != nil {
		return err
	}
	cleanups = append(cleanups, adm.Close)
	edgeCfg := edge.DefaultConfig()
	edgeCfg.Listen, edgeCfg.NATSURL, edgeCfg.Pepper = cfg.EdgeListen, ns.ClientURL(), cfg.Admin.Pepper
	edgeCfg.SpoolDir = filepath.Join(dataDir, "spool")
	edg, err := edge.New(ctx, edgeCfg, log.With("component", "edge"))
	if err != nil {
		return err
	}
	cleanups = append(cleanups, edg.Close)

	fmt.Fprintf(out, banner, edg.Addr(), adm.Addr(), mockURL, ns.ClientURL(), filepath.Join(dataDir, "nats"),
		redactDSN(cfg.Admin.PostgresDSN), clickhouseAddr, tokenFile, tokenFile, edg.Addr())
	meterCfg := metering.DefaultConfig()
	meterCfg.NATSURL, meterCfg.PostgresDSN, meterCfg.Partitions = ns.ClientURL(), cfg.Admin.PostgresDSN, edgeCfg.Partitions
	meterCfg.MetricsListen = "" // dev: the admin and edge ports serve /metrics; metering's would be a third
	sinkCfg := sink.DefaultConfig()
	sinkCfg.NATSURL, sinkCfg.ClickHouseDSN = ns.ClientURL(), cfg.Admin.ClickHouseDSN
	sinkCfg.Listen = "" // dev: no health port of its own
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return adm.Run(gctx) })
	g.Go(func() error { return sink.Run(gctx, sinkCfg, log.With("component", "sink")) })
	g.Go(func() error { return edg.Run(gctx) })
	g.Go(func() error { return metering.Run(gctx, meterCfg, log.With("component", "metering")) })
	return g.Wait()
}

const banner = `
Tollgate dev is running (Ctrl-C stops everything it started).

  edge proxy  http://%s   (OpenAI /v1/chat/completions, /v1/completions, /v1/embeddings; Anthropic /v1/messages)
  admin API   http://%s   (Connect, gRPC, gRPC-Web and REST /api-internal/v1/api-keys)
  mock LLM    %s   (the demo catalog's upstream: gpt-4, gpt-3.5-turbo, gpt-4o-mini, claude-3-opus)
  NATS        %s   (JetStream data in %s)
  PostgreSQL  %s
  ClickHouse  %s
  admin token %s

Create a first key and use it:
  export TOLLGATE_ADMIN_TOKEN=$(cat %s)
  KEY=$(./bin/tollgate keys create --name first --limit spend:day:10 --rpm 60 --json | sed -n 's/.*"api_key": "\(.*\)".*/\1/p')
  curl -s http://%s/v1/chat/completions -H "Authorization: Bearer $KEY" \
    -d '{"model":"gpt-4","messages":[{"role":"user","content":"hello"}],"max_tokens":20}'

`

// fileSecret reads a secret kept in path, or makes one and keeps it there, so
// a second `make dev` finds the same pepper (old keys keep working) and token.
func fileSecret(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		if s := strings.TrimSpace(string(data)); s != "" {
			return s, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	s := hex.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return s, nil
}

// redactDSN drops a password from a connection URL before it is printed.
func redactDSN(dsn string) string {
	if at := strings.LastIndex(dsn, "@"); at > 0 {
		if scheme := strings.Index(dsn, "://"); scheme > 0 && scheme < at {
			user := dsn[scheme+3 : at]
			if name, _, hasPw := strings.Cut(user, ":"); hasPw {
				return dsn[:scheme+3] + name + ":***" + dsn[at:]
			}
		}
	}
	return dsn
}

// lockDataDir takes an exclusive lock on dir so that a second `tollgate dev`
// on the same data refuses to start instead of taking over (and stopping)
// the databases of the first. The lock dies with the process.
func lockDataDir(dir string) (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		owner, _ := os.ReadFile(f.Name())
		f.Close()
		return nil, fmt.Errorf("data dir %s is in use by another tollgate dev (pid %s); stop it or pass another --data-dir", dir, strings.TrimSpace(string(owner)))
	}
	f.Truncate(0)
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return func() { f.Close() }, nil
}
