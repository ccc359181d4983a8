// Package pgdb opens PostgreSQL pools and applies versioned migrations that
// are embedded in the binary.
package pgdb

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Open connects a pool and checks that the server answers.
func Open(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN, password included: keep it out.
		return nil, fmt.Errorf("parse postgres dsn: invalid connection string")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping postgres at %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}

// Migrate applies, in order, the files NNNN_name.sql of dir in fsys that the
// database has not seen yet for component, each in its own transaction. Each
// component (admin read model, metering, ...) numbers its own migrations. An
// advisory lock makes concurrent starts of several replicas safe.
func Migrate(ctx context.Context, pool *pgxpool.Pool, component string, fsys fs.FS, dir string) error {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return fmt.Errorf("read migrations of %s: %w", component, err)
	}
	type migration struct {
		version int
		name    string
	}
	var ms []migration
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, _, _ := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if err != nil {
			return fmt.Errorf("migration %s of %s: name must start with a number", e.Name(), component)
		}
		ms = append(ms, migration{v, e.Name()})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })

	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	defer conn.Release()
	c := conn.Conn()
	if _, err := c.Exec(ctx, `SELECT pg_advisory_lock(hashtext('tollgate-migrate'))`); err != nil {
		return fmt.Errorf("migrate %s: lock: %w", component, err)
	}
	defer c.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext('tollgate-migrate'))`) //nolint:errcheck
	if _, err := c.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		component text NOT NULL, version int NOT NULL, name text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (component, version))`); err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	var current int
	if err := c.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations WHERE component = $1`, component).Scan(&current); err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	for _, m := range ms {
		if m.version <= current {
			continue
		}
		sql, err := fs.ReadFile(fsys, path.Join(dir, m.name))
		if err != nil {
			return fmt.Errorf("migrate %s: %w", component, err)
		}
		err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (component, version, name) VALUES ($1, $2, $3)`, component, m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate %s: apply %s: %w", component, m.name, err)
		}
	}
	return nil
}
