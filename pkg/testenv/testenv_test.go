package testenv

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestMain(m *testing.M) { Main(m) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Each test gets its own database: the same table can be created in both,
// and a test's database is gone once it ends.
func TestPostgresGivesEachTestItsOwnDatabase(t *testing.T) {
	var dsns []string
	for _, name := range []string{"first", "second"} {
		t.Run(name, func(t *testing.T) {
			ctx := testContext(t)
			dsn := Postgres(t)
			dsns = append(dsns, dsn)
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
				t.Fatal(err)
			}
		})
	}
	if len(dsns) != 2 || dsns[0] == dsns[1] {
		t.Fatalf("want two different databases, got %q", dsns)
	}

	ctx := testContext(t)
	u, err := url.Parse(dsns[0])
	if err != nil {
		t.Fatal(err)
	}
	dropped := u.Path[1:]
	u.Path = "/postgres"
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", dropped).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatalf("database %s was not dropped after its test", dropped)
	}
}

func TestClickHouseGivesEachTestItsOwnDatabase(t *testing.T) {
	var databases []string
	for _, name := range []string{"first", "second"} {
		t.Run(name, func(t *testing.T) {
			ctx := testContext(t)
			addr, database := ClickHouse(t)
			databases = append(databases, database)
			conn, err := clickhouse.Open(&clickhouse.Options{
				Addr:        []string{addr},
				Auth:        clickhouse.Auth{Database: database, Username: "default"},
				DialTimeout: 5 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var version string
			if err := conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
				t.Fatal(err)
			}
			if err := conn.Exec(ctx, "CREATE TABLE t (id UInt64) ENGINE = MergeTree ORDER BY id"); err != nil {
				t.Fatal(err)
			}
		})
	}
	if len(databases) != 2 || databases[0] == databases[1] {
		t.Fatalf("want two different databases, got %q", databases)
	}
}

func TestNATSJetStream(t *testing.T) {
	ctx := testContext(t)
	srv, nc := NATS(t)
	if !srv.JetStreamEnabled() {
		t.Fatal("JetStream is not enabled")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "s.1", []byte("hello")); err != nil {
		t.Fatal(err)
	}
}

// After a restart the server is on the same URL with the same streams, and a
// client that was connected reconnects by itself.
func TestNATSRestartKeepsStreamsAndURL(t *testing.T) {
	ctx := testContext(t)
	h := NATSRestartable(t)
	url := h.URL()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "s.1", []byte("before")); err != nil {
		t.Fatal(err)
	}

	h.Shutdown()
	if h.Server() != nil {
		t.Fatal("Server() should be nil while shut down")
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	if err := h.Restart(); err != nil {
		t.Fatal(err)
	}
	if h.URL() != url {
		t.Fatalf("URL changed across restarts: %s -> %s", url, h.URL())
	}

	// Publishing retries until the client has reconnected and JetStream has
	// recovered the stream.
	var ack *jetstream.PubAck
	for ack == nil {
		ack, err = js.Publish(ctx, "s.1", []byte("after"))
		if ctx.Err() != nil {
			t.Fatalf("publish after restart: %v", err)
		}
		if err != nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if ack.Sequence != 2 {
		t.Fatalf("sequence after restart = %d, want 2 (the stream should have kept its message)", ack.Sequence)
	}
}
