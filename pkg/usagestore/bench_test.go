package usagestore

import (
	"context"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkInsert measures Writer.Insert (usage_events, and through the
// materialized view the hourly rollup), in batches of
// 50,000 events of one hour.
//
//	go test -run '^$' -bench Insert -benchtime 20x ./pkg/usagestore/
func BenchmarkInsert(b *testing.B) {
	conn := openTest(b)
	ctx := testCtx(b)
	w := NewWriter(conn, "bench", WriterOptions{})
	const batch = 50_000
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var first uint64 = 1
	var insert time.Duration
	for b.Loop() {
		b.StopTimer()
		evs := testEvents(first, batch, base)
		for i := range evs {
			evs[i].OccurredAt = base.Add(time.Duration(i) * 72 * time.Millisecond)
		}
		first += batch
		b.StartTimer()
		t0 := time.Now()
		if err := w.Insert(ctx, evs); err != nil {
			b.Fatal(err)
		}
		insert += time.Since(t0)
	}
	b.ReportMetric(float64(b.N*batch)/insert.Seconds(), "rows/s")
}

// BenchmarkQueries10M fills usage_events (and so the rollup) with 10 million
// events of one account, 1,000 keys, 8 models over 30 days, generated inside
// ClickHouse, then measures the reports UsageService runs, reporting the
// median latency of b.N runs of each. TOLLGATE_BENCH_ROWS changes the count.
//
//	go test -run '^$' -bench Queries10M -benchtime 20x -timeout 30m ./pkg/usagestore/
func BenchmarkQueries10M(b *testing.B) {
	rows := 10_000_000
	if v, err := strconv.Atoi(os.Getenv("TOLLGATE_BENCH_ROWS")); err == nil && v > 0 {
		rows = v
	}
	conn := openTest(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	start := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
	const days = 30
	began := time.Now()
	err := conn.Exec(ctx, `INSERT INTO usage_events (`+eventColumns+`)
SELECT 'acme', concat('key_', toString(number % 1000)), toDateTime(?) + intDiv(number * ?, ?),
    'bench', number, concat('acme/', toString(number % 1000 % 4)), concat('model-', toString(number % 1000 % 8)), 'chat.completions',
    toInt64(number % 2000), toInt64(number % 500), toInt64((number % 997) * 1000), 2000, 4000, 200,
    toInt64((number % 5000) * 100), 0, 0
FROM numbers(?)`, start, uint64(days*86400), uint64(rows), uint64(rows))
	if err != nil {
		b.Fatal(err)
	}
	generated := time.Since(began)
	// Measure the steady state: the merges ClickHouse does in the
	// background soon after inserts, done now.
	began = time.Now()
	for _, table := range []string{"usage_events", "usage_hourly"} {
		if err := conn.Exec(ctx, "OPTIMIZE TABLE "+table+" FINAL"); err != nil {
			b.Fatal(err)
		}
	}
	var hourly uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM usage_hourly").Scan(&hourly); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d events generated in %s, merged in %s; usage_hourly holds %d rows", rows, generated.Round(time.Millisecond),
		time.Since(began).Round(time.Millisecond), hourly)

	r := NewReader(conn, time.Minute)
	end := start.Add(days * 24 * time.Hour)
	off := 17*time.Minute + 23*time.Second // a range like "the last 30 days" from the CLI
	for _, bc := range []struct {
		name string
		q    Query
	}{
		{"daily_series_30d", Query{Filter: Filter{Account: "acme", From: start, To: end}, GroupBy: []Dimension{ByDay}}},
		{"daily_series_30d_unaligned", Query{Filter: Filter{Account: "acme", From: start.Add(off), To: end.Add(-off)}, GroupBy: []Dimension{ByDay}}},
		{"daily_series_30d_by_model", Query{Filter: Filter{Account: "acme", From: start, To: end}, GroupBy: []Dimension{ByDay, ByModel}}},
		{"top_keys_30d", Query{Filter: Filter{Account: "acme", From: start, To: end}, GroupBy: []Dimension{ByKey}, TopByCost: true, Limit: 10}},
		{"top_keys_30d_unaligned", Query{Filter: Filter{Account: "acme", From: start.Add(off), To: end.Add(-off)}, GroupBy: []Dimension{ByKey}, TopByCost: true, Limit: 10}},
		{"totals_one_key_30d", Query{Filter: Filter{Account: "acme", From: start, To: end, Keys: []string{"key_42"}}}},
		{"latency_30d", Query{Filter: Filter{Account: "acme", From: start, To: end}, Latency: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var took []time.Duration
			for b.Loop() {
				t0 := time.Now()
				out, err := r.Usage(ctx, bc.q)
				if err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(t0))
				if len(out) == 0 {
					b.Fatal("no rows")
				}
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "ms-p50")
			b.ReportMetric(float64(took[len(took)*9/10].Microseconds())/1000, "ms-p90")
		})
	}
}
