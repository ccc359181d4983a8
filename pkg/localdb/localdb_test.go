package localdb

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func startPostgres(t *testing.T, ctx context.Context, cfg PostgresConfig) *Postgres {
	t.Helper()
	began := time.Now()
	pg, err := StartPostgres(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("postgres started in %s on port %d", time.Since(began).Round(time.Millisecond), pg.Port())
	t.Cleanup(func() { _ = pg.Stop(context.Background()) })
	return pg
}

func TestPostgresPersistsAcrossRestarts(t *testing.T) {
	ctx := testContext(t)
	cfg := PostgresConfig{Dir: t.TempDir(), Logger: testLogger(t)}
	pg := startPostgres(t, ctx, cfg)

	if err := pg.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := pg.CreateDatabase(ctx, "app"); err != nil {
		t.Fatalf("second CreateDatabase should be a no-op: %v", err)
	}
	conn, err := pgx.Connect(ctx, pg.DSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	var version string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		t.Fatal(err)
	}
	t.Logf("version: %s", version)
	for _, sql := range []string{
		"CREATE TABLE kv (k text PRIMARY KEY, v text)",
		"INSERT INTO kv VALUES ('answer', '42')",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	_ = conn.Close(ctx)

	if err := pg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pg.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if err := pg.Stop(ctx); err != nil {
		t.Fatalf("second Stop should be a no-op: %v", err)
	}
	if st, err := os.Stat(pg.LogPath()); err != nil || st.Size() == 0 {
		t.Fatalf("server log %s missing or empty: %v", pg.LogPath(), err)
	}

	pg = startPostgres(t, ctx, cfg)
	conn, err = pgx.Connect(ctx, pg.DSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM kv WHERE k = 'answer'").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != "42" {
		t.Fatalf("read back %q, want 42", v)
	}
	if err := pg.DropDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
}

// A server that is still running on the directory (as after a crash of the
// program that started it) is stopped and replaced, and its data kept.
func TestPostgresReplacesLeftoverServer(t *testing.T) {
	ctx := testContext(t)
	cfg := PostgresConfig{Dir: t.TempDir(), Logger: testLogger(t)}
	old := startPostgres(t, ctx, cfg)
	if err := old.CreateDatabase(ctx, "kept"); err != nil {
		t.Fatal(err)
	}
	pg := startPostgres(t, ctx, cfg)
	select {
	case <-old.Done():
	default:
		t.Fatal("the leftover server is still running")
	}
	conn, err := pgx.Connect(ctx, pg.DSN("kept"))
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)
}

func TestPostgresStartupErrorShowsLog(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := PostgresConfig{Dir: t.TempDir(), Port: l.Addr().(*net.TCPAddr).Port, Logger: testLogger(t)}
	pg, err := StartPostgres(testContext(t), cfg)
	if err == nil {
		_ = pg.Stop(context.Background())
		t.Fatal("started on a port that is taken")
	}
	if !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("error does not show the server log: %v", err)
	}
	t.Log(err)
}

func startClickHouse(t *testing.T, ctx context.Context, cfg ClickHouseConfig) *ClickHouse {
	t.Helper()
	began := time.Now()
	ch, err := StartClickHouse(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("clickhouse started in %s on %s", time.Since(began).Round(time.Millisecond), ch.Addr())
	t.Cleanup(func() { _ = ch.Stop(context.Background()) })
	return ch
}

func openClickHouse(t *testing.T, addr, database string) clickhouse.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{addr},
		Auth:        clickhouse.Auth{Database: database, Username: "default"},
		DialTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestClickHousePersistsAcrossRestarts(t *testing.T) {
	ctx := testContext(t)
	cfg := ClickHouseConfig{Dir: t.TempDir(), Logger: testLogger(t)}
	ch := startClickHouse(t, ctx, cfg)

	if err := ch.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := ch.CreateDatabase(ctx, "app"); err != nil {
		t.Fatalf("second CreateDatabase should be a no-op: %v", err)
	}
	conn := openClickHouse(t, ch.Addr(), "app")
	var version string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		t.Fatal(err)
	}
	t.Logf("version: %s", version)
	if err := conn.Exec(ctx, "CREATE TABLE kv (k String, v UInt64) ENGINE = MergeTree ORDER BY k"); err != nil {
		t.Fatal(err)
	}
	// INSERT ... VALUES through Exec hangs on 18.16; a batch with an explicit
	// column list works.
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO kv (k, v)")
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Append("answer", uint64(42)); err != nil {
		t.Fatal(err)
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	if err := ch.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if err := ch.Stop(ctx); err != nil {
		t.Fatalf("second Stop should be a no-op: %v", err)
	}

	ch = startClickHouse(t, ctx, cfg)
	conn = openClickHouse(t, ch.Addr(), "app")
	var v uint64
	if err := conn.QueryRow(ctx, "SELECT v FROM kv WHERE k = 'answer'").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != 42 {
		t.Fatalf("read back %d, want 42", v)
	}
	if err := ch.DropDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
}

func TestClickHouseReplacesLeftoverServer(t *testing.T) {
	ctx := testContext(t)
	cfg := ClickHouseConfig{Dir: t.TempDir(), Logger: testLogger(t)}
	old := startClickHouse(t, ctx, cfg)
	if err := old.CreateDatabase(ctx, "kept"); err != nil {
		t.Fatal(err)
	}
	ch := startClickHouse(t, ctx, cfg)
	select {
	case <-old.Done():
	default:
		t.Fatal("the leftover server is still running")
	}
	conn := openClickHouse(t, ch.Addr(), "kept")
	if err := conn.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestClickHouseStartupErrorShowsLog(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := ClickHouseConfig{Dir: t.TempDir(), TCPPort: l.Addr().(*net.TCPAddr).Port, Logger: testLogger(t)}
	ch, err := StartClickHouse(testContext(t), cfg)
	if err == nil {
		_ = ch.Stop(context.Background())
		t.Fatal("started on a port that is taken")
	}
	if !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("error does not show the server log: %v", err)
	}
	t.Log(err)
}

func TestFreePort(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if port <= 0 || port > 65535 {
		t.Fatalf("port %d out of range", port)
	}
}
