package sink

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pkg/testenv"
)

// benchBase is an ordinary hour: the events of a batch fall on one day.
var benchBase = time.Date(2025, 5, 14, 10, 0, 0, 0, time.UTC)

// BenchmarkSinkThroughput measures events per second from the USAGE stream
// into ClickHouse (usage_events, the hourly rollup and usage_seen), the
// batch size of the default configuration, with the stream filled first so
// the sink is never waiting for events. TOLLGATE_BENCH_BATCH changes the
// batch size. See BENCHMARKS.md.
//
//	go test -run '^$' -bench SinkThroughput -benchtime 1x ./services/sink/
func BenchmarkSinkThroughput(b *testing.B) {
	const events = 1_000_000
	for b.Loop() {
		_, nc := testenv.NATS(b)
		addr, db := testenv.ClickHouse(b)
		dsn := fmt.Sprintf("clickhouse://%s/%s", addr, db)
		f := newFeed(b, nc)
		ctx := ctxFor(b, 10*time.Minute)
		for i := 0; i < events; i += 10_000 {
			if err := f.publish(ctx, f.make(fmt.Sprintf("edge-%d", i%7), 10_000, benchBase), true); err != nil {
				b.Fatal(err)
			}
		}
		cfg := testConfig(nc.ConnectedUrl(), dsn)
		cfg.BatchSize = DefaultConfig().BatchSize
		if v, err := strconv.Atoi(os.Getenv("TOLLGATE_BENCH_BATCH")); err == nil && v > 0 {
			cfg.BatchSize = v
		}
		cfg.FlushInterval = DefaultConfig().FlushInterval
		conn := openCH(b, dsn)
		s := startSink(b, cfg) // connects and migrates before it returns
		began := time.Now()
		for s.srv.Sink().Stats().Events.Load() < events {
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(began)
		if err := s.stop(); err != nil {
			b.Fatal(err)
		}
		got, _, err := storedTotals(context.Background(), conn)
		if err != nil || got != f.wantTotals() {
			b.Fatalf("stored %v (%v), want %v", got, err, f.wantTotals())
		}
		b.ReportMetric(float64(events)/took.Seconds(), "events/s")
		b.ReportMetric(float64(s.srv.Sink().Stats().Batches.Load()), "batches")
	}
}
