package testenv

import (
	"context"
	"testing"

	"github.com/tollgate/tollgate/pkg/localdb"
)

var (
	pg shared[*localdb.Postgres]
	ch shared[*localdb.ClickHouse]
)

// Postgres returns the DSN of a new, empty database for this test on the
// binary's PostgreSQL server (fsync off), which it starts on first use. The
// database is dropped when the test ends, its connections closed.
func Postgres(t testing.TB) string {
	t.Helper()
	srv := pg.get(t, "PostgreSQL", func(ctx context.Context, dir string) (*localdb.Postgres, func(context.Context) error, error) {
		s, err := localdb.StartPostgres(ctx, localdb.PostgresConfig{Dir: dir, Logger: logger})
		if err != nil {
			return nil, nil, err
		}
		return s, s.Stop, nil
	})
	name := databaseName(t)
	ctx, cancel := adminContext()
	defer cancel()
	if err := srv.CreateDatabase(ctx, name); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := adminContext()
		defer cancel()
		_ = srv.DropDatabase(ctx, name) // the server goes away with the binary anyway
	})
	return srv.DSN(name)
}

// ClickHouse returns the native-protocol address of the binary's ClickHouse
// server, which it starts on first use, and a new, empty database for this
// test, dropped when the test ends.
func ClickHouse(t testing.TB) (addr, database string) {
	t.Helper()
	srv := ch.get(t, "ClickHouse", func(ctx context.Context, dir string) (*localdb.ClickHouse, func(context.Context) error, error) {
		s, err := localdb.StartClickHouse(ctx, localdb.ClickHouseConfig{Dir: dir, Logger: logger})
		if err != nil {
			return nil, nil, err
		}
		return s, s.Stop, nil
	})
	name := databaseName(t)
	ctx, cancel := adminContext()
	defer cancel()
	if err := srv.CreateDatabase(ctx, name); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := adminContext()
		defer cancel()
		_ = srv.DropDatabase(ctx, name)
	})
	return srv.Addr(), name
}
