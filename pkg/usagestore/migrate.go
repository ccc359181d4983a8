package usagestore

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one embedded .sql file: NNNN_name.sql.
type migration struct {
	version    uint32
	name       string
	statements []string
}

var migrationName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", e.Name())
		}
		v, _ := strconv.ParseUint(m[1], 10, 32)
		body, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: uint32(v), name: m[2], statements: splitStatements(string(body))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("two migrations have version %d", out[i].version)
		}
	}
	return out, nil
}

// splitStatements cuts a file into statements at semicolons that end a line,
// dropping comment lines: the native protocol runs one statement per call.
func splitStatements(sql string) []string {
	var stmts []string
	var cur strings.Builder
	for line := range strings.SplitSeq(sql, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteString("\n")
		if strings.HasSuffix(trimmed, ";") {
			stmts = append(stmts, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		stmts = append(stmts, s)
	}
	return stmts
}

// Migrate applies the migrations that the database has not seen yet, in
// order, and records each in schema_migrations.
//
// ClickHouse has no transactional DDL, so a migration interrupted half-way is
// run again from its start: every statement must be idempotent (IF NOT
// EXISTS). For the same reason two processes migrating at once (admin and
// sink starting together) are harmless: both run the same idempotent
// statements and record the version, and readers take distinct versions.
func Migrate(ctx context.Context, conn driver.Conn) error {
	all, err := migrations()
	if err != nil {
		return fmt.Errorf("usage schema: %w", err)
	}
	ctx, cancel := withTimeout(ctx, 5*DefaultTimeout)
	defer cancel()
	if err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    UInt32,
    name       String,
    applied_at DateTime('UTC')
) ENGINE = MergeTree() ORDER BY version`); err != nil {
		return fmt.Errorf("usage schema: create schema_migrations: %w", err)
	}
	applied, err := appliedVersions(ctx, conn)
	if err != nil {
		return err
	}
	latest := all[len(all)-1].version
	for v := range applied {
		if v > latest {
			return fmt.Errorf("usage schema: the database is at version %d, newer than this binary knows (%d): run a newer tollgate", v, latest)
		}
	}
	for _, m := range all {
		if applied[m.version] {
			continue
		}
		for i, stmt := range m.statements {
			if err := conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("usage schema: migration %04d_%s statement %d: %w", m.version, m.name, i+1, err)
			}
		}
		if err := conn.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) SELECT ?, ?, ?`,
			m.version, m.name, time.Now().UTC().Truncate(time.Second)); err != nil {
			return fmt.Errorf("usage schema: record migration %04d: %w", m.version, err)
		}
	}
	return nil
}

func appliedVersions(ctx context.Context, conn driver.Conn) (map[uint32]bool, error) {
	rows, err := conn.Query(ctx, `SELECT DISTINCT version FROM schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("usage schema: read schema_migrations: %w", err)
	}
	defer rows.Close()
	out := map[uint32]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("usage schema: read schema_migrations: %w", err)
		}
		out[v] = true
	}
	return out, rows.Err()
}

// SchemaVersion is the newest migration this binary carries.
func SchemaVersion() uint32 {
	all, err := migrations()
	if err != nil || len(all) == 0 {
		return 0
	}
	return all[len(all)-1].version
}
