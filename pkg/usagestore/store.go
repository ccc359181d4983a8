// Package usagestore keeps usage analytics in ClickHouse: the schema (as
// versioned migrations embedded in the binary), the sink's exactly-once
// writer and the queries behind UsageService.
//
// Everything here runs on ClickHouse 18.16 (Debian's package, used by the
// tests) and on current releases: the native protocol only, explicit column
// lists on inserts, no Map, DateTime64 or LowCardinality, no server-side
// query parameters, and a deadline on every call (an INSERT that the server
// does not finish otherwise waits forever).
package usagestore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// DefaultTimeout bounds one statement when the caller's context has no
// deadline of its own.
const DefaultTimeout = time.Minute

// codeUnknownDatabase is ClickHouse's error code for a missing database.
const codeUnknownDatabase = 81

// Open connects to the ClickHouse named by dsn, e.g.
// clickhouse://user:password@127.0.0.1:9000/tollgate, and creates the
// database if it does not exist yet (so a fresh server needs no setup).
func Open(ctx context.Context, dsn string) (driver.Conn, error) {
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("clickhouse dsn: %w", err)
	}
	if opts.Protocol != clickhouse.Native {
		return nil, errors.New("clickhouse dsn: only the native protocol (clickhouse://, port 9000) is supported")
	}
	if opts.Auth.Database == "" {
		opts.Auth.Database = "default"
	}
	if !strings.Contains(dsn, "dial_timeout") {
		// The driver waits 30 s by default; a sink that retries should
		// learn sooner that the server is away.
		opts.DialTimeout = 5 * time.Second
	}
	conn, err := open(ctx, opts)
	var ex *clickhouse.Exception
	if errors.As(err, &ex) && ex.Code == codeUnknownDatabase {
		if err := createDatabase(ctx, *opts); err != nil {
			return nil, err
		}
		conn, err = open(ctx, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to clickhouse %v: %w", opts.Addr, err)
	}
	return conn, nil
}

func open(ctx context.Context, opts *clickhouse.Options) (driver.Conn, error) {
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := withTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func createDatabase(ctx context.Context, opts clickhouse.Options) error {
	name := opts.Auth.Database
	opts.Auth.Database = "default"
	conn, err := open(ctx, &opts)
	if err != nil {
		return fmt.Errorf("connect to clickhouse %v: %w", opts.Addr, err)
	}
	defer conn.Close()
	ctx, cancel := withTimeout(ctx, DefaultTimeout)
	defer cancel()
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(name)); err != nil {
		return fmt.Errorf("create clickhouse database %s: %w", name, err)
	}
	return nil
}

// quoteIdent quotes a database or table name with backquotes.
func quoteIdent(s string) string {
	out := []byte{'`'}
	for i := 0; i < len(s); i++ {
		if s[i] == '`' || s[i] == '\\' {
			out = append(out, '\\')
		}
		out = append(out, s[i])
	}
	return string(append(out, '`'))
}

// withTimeout gives ctx a deadline of d unless it has one already: an
// unbounded call to ClickHouse can hang forever.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
