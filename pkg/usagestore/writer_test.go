package usagestore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

func TestMigrateTwiceAndConcurrently(t *testing.T) {
	conn := openTest(t) // migrated once
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = Migrate(ctx, conn) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	var versions []uint32
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v uint32
		rows.Scan(&v)
		versions = append(versions, v)
	}
	if len(versions) != int(SchemaVersion()) || versions[len(versions)-1] != SchemaVersion() {
		t.Errorf("schema_migrations has %v, want 1..%d", versions, SchemaVersion())
	}

	if err := conn.Exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) SELECT 999, 'future', now()"); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, conn); err == nil || !strings.Contains(err.Error(), "newer than this binary") {
		t.Errorf("Migrate on a newer schema = %v, want a refusal", err)
	}
}

// A database made by an earlier version, with identities in usage_seen, is
// migrated through usage_ids (4 to 6) to none (7): the events stored before
// are still found by a look-up, and their pairs have watermarks.
func TestMigrateFromVersion3(t *testing.T) {
	conn := openEmpty(t)
	ctx := testCtx(t)
	all, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	// The schema as version 3 left it, and events written by its sink.
	if err := conn.Exec(ctx, "CREATE TABLE schema_migrations (version UInt32, name String, applied_at DateTime('UTC')) ENGINE = MergeTree() ORDER BY version"); err != nil {
		t.Fatal(err)
	}
	for _, m := range all[:3] {
		for _, stmt := range m.statements {
			if err := conn.Exec(ctx, stmt); err != nil {
				t.Fatalf("migration %d: %v", m.version, err)
			}
		}
		if err := conn.Exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) SELECT ?, ?, now()", m.version, m.name); err != nil {
			t.Fatal(err)
		}
	}
	evs := testEvents(1, 500, time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC))
	w := NewWriter(conn, "old", WriterOptions{})
	if err := w.insert(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	var seen uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND (name LIKE 'usage_seen%' OR name LIKE 'usage_ids%')").Scan(&seen); err != nil || seen != 0 {
		t.Errorf("usage_seen and usage_ids tables left: %d (%v)", seen, err)
	}
	never := evs[0]
	never.Sequence = 100_000
	found, err := w.Stored(ctx, append(evs[:len(evs):len(evs)], never))
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != len(evs) || found[never.ID()] {
		t.Errorf("after the migration %d identities found, want the %d stored", len(found), len(evs))
	}
	// Every pair stored before gets its highest sequence as its watermark.
	marks, err := w.Watermarks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[Pair]uint64{{"e1", 0}: 498, {"e1", 1}: 499, {"e1", 2}: 500}; !maps.Equal(marks, want) {
		t.Errorf("watermarks after the migration = %v, want %v", marks, want)
	}
	more := testEvents(501, 10, time.Date(2025, 3, 2, 0, 0, 0, 0, time.UTC))
	if err := w.Insert(ctx, more); err != nil {
		t.Fatal(err)
	}
	checkExact(t, conn, append(evs, more...))
}

func TestSplitStatements(t *testing.T) {
	got := splitStatements("-- a comment; with a semicolon\nCREATE TABLE a (x UInt8)\nENGINE = Memory;\n\n  -- more\nCREATE TABLE b (y String) ENGINE = Memory;\n")
	want := []string{"CREATE TABLE a (x UInt8)\nENGINE = Memory", "CREATE TABLE b (y String) ENGINE = Memory"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q", got)
	}
}

// sumsOf adds up events as every table should.
func sumsOf(evs []Event) sums {
	var s sums
	for _, e := range evs {
		s.requests++
		s.in += e.InputTokens
		s.out += e.OutputTokens
		s.cost += e.Cost
	}
	return s
}

// checkExact fails unless usage_events and usage_hourly hold exactly evs.
func checkExact(t *testing.T, conn driver.Conn, evs []Event) {
	t.Helper()
	ctx := testCtx(t)
	want := sumsOf(evs)
	var events, rollup sums
	var rows, distinct uint64
	if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(edge_instance, usage_partition, sequence), sum(input_tokens), sum(output_tokens), sum(cost) FROM usage_events").
		Scan(&rows, &distinct, &events.in, &events.out, &events.cost); err != nil {
		t.Fatal(err)
	}
	events.requests = int64(rows)
	if events != want || distinct != rows {
		t.Errorf("usage_events: %+v with %d distinct, want %+v", events, distinct, want)
	}
	if err := conn.QueryRow(ctx, "SELECT sum(requests), sum(input_tokens), sum(output_tokens), sum(cost) FROM usage_hourly").
		Scan(&rollup.requests, &rollup.in, &rollup.out, &rollup.cost); err != nil {
		t.Fatal(err)
	}
	if rollup != want {
		t.Errorf("usage_hourly: %+v, want %+v", rollup, want)
	}
	// Group by group, not only in total.
	var off uint64
	// Rollup minus events, per group: every group must come to zero.
	if err := conn.QueryRow(ctx, `SELECT count() FROM (
SELECT account, key_id, model, service, hour, sum(r) AS dr, sum(c) AS dc FROM (
    SELECT account, key_id, model, service, hour, requests AS r, cost AS c FROM usage_hourly
    UNION ALL
    SELECT account, key_id, model, service, toStartOfHour(occurred_at) AS hour, toInt64(-1) AS r, -cost AS c FROM usage_events
) GROUP BY account, key_id, model, service, hour HAVING dr != 0 OR dc != 0)`).Scan(&off); err != nil {
		t.Fatal(err)
	}
	if off != 0 {
		t.Errorf("%d rollup groups differ from the events", off)
	}
}

var jan = time.Date(2025, 1, 31, 20, 0, 0, 0, time.UTC) // 300 events a minute apart reach February

// Repair makes any partial outcome of a batch exact, and is a no-op on a
// complete one.
func TestRepair(t *testing.T) {
	for _, tc := range []struct {
		name string
		// before writes some of the batch, as an interrupted attempt might.
		before       func(ctx context.Context, w *Writer, conn driver.Conn, evs []Event) error
		wantInserted int
		wantFixed    bool
	}{{
		name:         "nothing written",
		before:       func(context.Context, *Writer, driver.Conn, []Event) error { return nil },
		wantInserted: 300,
	}, {
		name: "everything written",
		before: func(ctx context.Context, w *Writer, _ driver.Conn, evs []Event) error {
			return w.Insert(ctx, evs)
		},
	}, {
		name: "one day's part written, the other not",
		before: func(ctx context.Context, w *Writer, _ driver.Conn, evs []Event) error {
			var january []Event
			for _, e := range evs {
				if e.OccurredAt.Month() == time.January {
					january = append(january, e)
				}
			}
			return w.Insert(ctx, january)
		},
		wantInserted: 61, // 00:00 to 01:00 on February 1st
	}, {
		name: "the view wrote the rollup twice",
		before: func(ctx context.Context, w *Writer, conn driver.Conn, evs []Event) error {
			if err := w.Insert(ctx, evs); err != nil {
				return err
			}
			return conn.Exec(ctx, `INSERT INTO usage_hourly (account, hour, key_id, model, service, requests, input_tokens, output_tokens, cost)
SELECT account, toStartOfHour(occurred_at), key_id, model, service, toInt64(count()), sum(input_tokens), sum(output_tokens), sum(cost)
FROM usage_events WHERE occurred_at < ? GROUP BY account, key_id, model, service, toStartOfHour(occurred_at)`, jan.Add(2*time.Hour))
		},
		wantFixed: true,
	}, {
		name: "rows written, the rollup not",
		before: func(ctx context.Context, w *Writer, conn driver.Conn, evs []Event) error {
			if err := conn.Exec(ctx, "DETACH TABLE usage_hourly_mv"); err != nil {
				return err
			}
			defer conn.Exec(ctx, "ATTACH TABLE usage_hourly_mv")
			return w.Insert(ctx, evs)
		},
		wantFixed: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			conn := openTest(t)
			ctx := testCtx(t)
			w := NewWriter(conn, "c1", WriterOptions{Settle: time.Millisecond})
			evs := testEvents(1, 300, jan)
			if err := tc.before(ctx, w, conn, evs); err != nil {
				t.Fatal(err)
			}
			res, err := w.Repair(ctx, evs)
			if err != nil {
				t.Fatal(err)
			}
			if res.Inserted != tc.wantInserted || (res.Corrected > 0) != tc.wantFixed {
				t.Errorf("repair: %+v; want %d inserted, corrections %v", res, tc.wantInserted, tc.wantFixed)
			}
			checkExact(t, conn, evs)
			if res, err := w.Repair(ctx, evs); err != nil || res != (RepairResult{}) {
				t.Errorf("second repair: %+v, %v; want nothing to do", res, err)
			}
			checkExact(t, conn, evs)
		})
	}
}

// A repair waits for a statement of its consumer that is still running (an
// abandoned insert may still be writing), and only of its consumer.
func TestRepairWaitsForRunningStatements(t *testing.T) {
	conn := openTest(t)
	ctx := testCtx(t)
	w := NewWriter(conn, "c1", WriterOptions{Settle: time.Millisecond})
	done := make(chan error, 1)
	go func() {
		qctx := clickhouse.Context(ctx, clickhouse.WithQueryID(w.prefix+"crashed-run:insert:1"))
		done <- conn.Exec(qctx, "SELECT sleep(2)")
	}()
	time.Sleep(300 * time.Millisecond)
	began := time.Now()
	if _, err := NewWriter(conn, "c2", WriterOptions{Settle: time.Millisecond}).Repair(ctx, testEvents(1, 1, jan)); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("another consumer's repair took %s: it waited for c1's statement", took)
	}
	began = time.Now()
	if _, err := w.Repair(ctx, testEvents(100, 10, jan)); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took < 500*time.Millisecond {
		t.Errorf("repair took %s: it did not wait for the running statement", took)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestStored(t *testing.T) {
	conn := openTest(t)
	ctx := testCtx(t)
	w := NewWriter(conn, "c1", WriterOptions{})
	evs := testEvents(1, 100, jan)
	if err := w.Insert(ctx, append(evs[:10:10], evs[20:30]...)); err != nil {
		t.Fatal(err)
	}
	ask := slices.Clone(evs[5:25])
	// The identity of a stored event on another edge, in another
	// partition: not stored.
	otherEdge, otherPartition := evs[6], evs[7]
	otherEdge.EdgeInstance, otherPartition.Partition = "other", 9
	ask = append(ask, otherEdge, otherPartition)
	got, err := w.Stored(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	want := map[ID]bool{}
	for _, e := range append(evs[5:10:10], evs[20:25]...) {
		want[e.ID()] = true
	}
	if !maps.Equal(got, want) {
		t.Errorf("stored = %v, want e1 6..10 and 21..25", got)
	}
}

func TestBatches(t *testing.T) {
	conn := openTest(t)
	ctx := testCtx(t)
	w := NewWriter(conn, "c1", WriterOptions{})
	if _, ok, err := w.LastBatch(ctx); ok || err != nil {
		t.Fatalf("LastBatch on nothing = %v, %v", ok, err)
	}
	for i := uint64(1); i <= 3; i++ {
		if err := w.BeginBatch(ctx, Batch{ID: i, SeqFrom: 10*i + 1, SeqTo: 10 * (i + 1), Events: int(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := NewWriter(conn, "c2", WriterOptions{}).BeginBatch(ctx, Batch{ID: 9, SeqFrom: 1, SeqTo: 2}); err != nil {
		t.Fatal(err)
	}
	b, ok, err := w.LastBatch(ctx)
	if err != nil || !ok || b != (Batch{Consumer: "c1", ID: 3, SeqFrom: 31, SeqTo: 40, Events: 3}) {
		t.Errorf("LastBatch = %+v, %v, %v", b, ok, err)
	}
}

// A batch of events of more days than one insert may touch (current
// ClickHouse refuses more than 100 partitions per block) is written in
// several inserts, all of it.
func TestInsertManyDays(t *testing.T) {
	evs := testEvents(1, 120, jan)
	for i := range evs {
		evs[i].OccurredAt = jan.Add(time.Duration(i) * 24 * time.Hour) // 120 days
	}
	chunks := byDays(evs, maxDaysPerInsert)
	n := 0
	for _, c := range chunks {
		days := map[int64]bool{}
		for _, e := range c {
			days[e.OccurredAt.Unix()/86400] = true
		}
		if len(days) > maxDaysPerInsert {
			t.Errorf("a chunk has %d days", len(days))
		}
		n += len(c)
	}
	if len(chunks) != 2 || n != len(evs) {
		t.Errorf("%d chunks of %d events in all, want 2 and %d", len(chunks), n, len(evs))
	}
	conn := openTest(t)
	ctx := testCtx(t)
	w := NewWriter(conn, "c1", WriterOptions{Settle: time.Millisecond})
	if err := w.Insert(ctx, evs); err != nil {
		t.Fatal(err)
	}
	checkExact(t, conn, evs)
}

// Edges number events per partition: the same edge and sequence in two
// partitions are two events.
func TestIdentityIncludesPartition(t *testing.T) {
	conn := openTest(t)
	ctx := testCtx(t)
	w := NewWriter(conn, "c1", WriterOptions{Settle: time.Millisecond})
	evs := testEvents(1, 2, jan)
	evs[0].Partition, evs[1].Partition, evs[1].Sequence = 0, 4, evs[0].Sequence
	if err := w.Insert(ctx, evs[:1]); err != nil {
		t.Fatal(err)
	}
	stored, err := w.Stored(ctx, evs)
	if err != nil || !stored[evs[0].ID()] || stored[evs[1].ID()] {
		t.Fatalf("stored = %v, %v; want only partition 0's", stored, err)
	}
	if res, err := w.Repair(ctx, evs); err != nil || res.Inserted != 1 {
		t.Fatalf("repair = %+v, %v; want partition 4's inserted", res, err)
	}
	checkExact(t, conn, evs)
}

// A batch from many edges, each numbering its own partitions, makes a long
// look-up: it must still run (18.16 parses 256 KiB of SQL by default).
func TestStoredManyEdges(t *testing.T) {
	conn := openTest(t)
	ctx := testCtx(t)
	w := NewWriter(conn, "c1", WriterOptions{})
	evs := testEvents(1, 2400, jan)
	for i := range evs {
		evs[i].EdgeInstance = fmt.Sprintf("edge-host-%04d-0123456789ab", i/2)
		evs[i].KeyID = fmt.Sprintf("key_%d", i) // a repair names them all
		evs[i].Partition = uint32(i % 2)
		evs[i].Sequence = 1
	}
	if err := w.Insert(ctx, evs[:1200]); err != nil {
		t.Fatal(err)
	}
	got, err := w.Stored(ctx, evs)
	if err != nil || len(got) != 1200 || !got[evs[1199].ID()] || got[evs[1200].ID()] {
		t.Fatalf("stored: %d found, %v; want the first 1200", len(got), err)
	}
	if res, err := w.Repair(ctx, evs); err != nil || res.Inserted != 1200 {
		t.Fatalf("repair = %+v, %v", res, err)
	}
	checkExact(t, conn, evs)
}

func TestWatermarksKeepTheHighest(t *testing.T) {
	conn := openTest(t)
	ctx := testCtx(t)
	w := NewWriter(conn, "marks", WriterOptions{})
	for _, m := range []map[Pair]uint64{
		{{"e1", 0}: 10, {"e1", 1}: 5},
		{{"e1", 0}: 7, {"e2", 3}: 1}, // a lower mark changes nothing
		{{"e1", 1}: 9},
	} {
		if err := w.RaiseWatermarks(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	got, err := w.Watermarks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[Pair]uint64{{"e1", 0}: 10, {"e1", 1}: 9, {"e2", 3}: 1}; !maps.Equal(got, want) {
		t.Errorf("watermarks = %v, want %v", got, want)
	}
}
