package usagestore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tollgate/tollgate/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// openTest opens a fresh, migrated database for the test.
func openTest(t testing.TB) driver.Conn {
	t.Helper()
	conn := openEmpty(t)
	if err := Migrate(testCtx(t), conn); err != nil {
		t.Fatal(err)
	}
	return conn
}

// openEmpty opens a fresh database without a table.
func openEmpty(t testing.TB) driver.Conn {
	t.Helper()
	addr, db := testenv.ClickHouse(t)
	conn, err := Open(testCtx(t), fmt.Sprintf("clickhouse://%s/%s", addr, db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// testEvents makes n events of edge "e1" from sequence first, spread over
// three keys of account "acme" and two models, one a minute from base.
func testEvents(first uint64, n int, base time.Time) []Event {
	out := make([]Event, n)
	for i := range out {
		seq := first + uint64(i)
		out[i] = Event{
			Account: "acme", KeyID: fmt.Sprintf("key_%d", seq%3), OccurredAt: base.Add(time.Duration(seq) * time.Minute),
			EdgeInstance: "e1", Partition: uint32(seq % 3), Sequence: seq, Service: "acme/openai", Model: []string{"gpt-4", "gpt-3.5"}[seq%2],
			Endpoint: "chat.completions", InputTokens: int64(10 + seq%7), OutputTokens: int64(20 + seq%5),
			Cost: int64(1_000_000 + seq), Status: 200, LatencyUS: int64(1000 * (1 + seq%100)),
		}
	}
	return out
}
