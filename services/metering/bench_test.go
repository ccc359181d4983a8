package metering

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/localdb"
	"github.com/tollgate/tollgate/pkg/testenv"
	"github.com/tollgate/tollgate/services/metering/internal/keyhistory"
	"github.com/tollgate/tollgate/services/metering/internal/store"
)

// Measurements of the fold on this machine, with PostgreSQL fsync ON (a
// private server per run): the cost of a durable commit is the point.
//
//	go test ./services/metering/ -run '^$' -bench BenchmarkFold -benchtime 100x
//	TOLLGATE_METERING_LOAD=1 go test ./services/metering/ -run TestMeteringLoad -v -timeout 10m
//
// Results and the aims they are held against are in BENCHMARKS.md
// (## Metering).

// durablePostgres starts a private PostgreSQL with fsync on and returns
// a DSN of a fresh database on it.
func durablePostgres(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg, err := localdb.StartPostgres(ctx, localdb.PostgresConfig{Dir: tb.TempDir(), Fsync: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pg.Stop(context.Background()) }) //nolint:errcheck
	if err := pg.CreateDatabase(ctx, "metering"); err != nil {
		tb.Fatal(err)
	}
	return pg.DSN("metering")
}

// commitTimer records how long each COMMIT took (pgx runs Tx.Commit as
// the query "commit").
type commitTimer struct {
	mu      sync.Mutex
	commits []time.Duration
}

type commitStart struct{}

func (c *commitTimer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if d.SQL == "commit" {
		return context.WithValue(ctx, commitStart{}, time.Now())
	}
	return ctx
}

func (c *commitTimer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if t, ok := ctx.Value(commitStart{}).(time.Time); ok {
		c.mu.Lock()
		c.commits = append(c.commits, time.Since(t))
		c.mu.Unlock()
	}
}

func (c *commitTimer) take() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.commits
	c.commits = nil
	return out
}

// benchLimits are a typical key's limits: a daily rolling budget, a
// calendar monthly one and a request rate.
func benchLimits() []*eventsv1.Limit {
	return []*eventsv1.Limit{
		{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: 100e9, Window: eventsv1.Window_WINDOW_ROLLING},
		{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_MONTH, Amount: 1000e9, Window: eventsv1.Window_WINDOW_CALENDAR},
		{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_MINUTE, Amount: 600, Window: eventsv1.Window_WINDOW_ROLLING},
	}
}

// benchStream makes usage events for nKeys keys from nEdges edges over
// parts partitions, 20 µs apart (50,000 a second).
type benchStream struct {
	rng   *rand.Rand
	keys  []*eventsv1.Key
	edges []*edgeSim
	at    time.Time
	seq   uint64
}

func newBenchStream(keys []*eventsv1.Key, nEdges, parts int, start time.Time) *benchStream {
	s := &benchStream{rng: rand.New(rand.NewPCG(11, 11)), keys: keys, at: start}
	for i := range nEdges {
		s.edges = append(s.edges, newEdge(fmt.Sprintf("edge-%d", i), parts))
	}
	return s
}

func (s *benchStream) next(at time.Time) *eventsv1.UsageEvent {
	ev := s.edges[s.rng.IntN(len(s.edges))].event(s.keys[s.rng.IntN(len(s.keys))], at,
		s.rng.Int64N(10_000_000), s.rng.Int64N(2000), s.rng.Int64N(800))
	ev.Service, ev.Model, ev.Endpoint = "acme/openai", "gpt-4o-mini", "chat.completions"
	return ev
}

// positions is what the worker commits with a fold: each partition's last
// stream sequence in the batch (made up here: there is no stream).
func (s *benchStream) positions(evs []*eventsv1.UsageEvent) map[int]uint64 {
	out := map[int]uint64{}
	for _, ev := range evs {
		s.seq++
		out[int(ev.GetPartition())] = s.seq
	}
	return out
}

func (s *benchStream) batch(n int) []*eventsv1.UsageEvent {
	out := make([]*eventsv1.UsageEvent, n)
	for i := range out {
		s.at = s.at.Add(20 * time.Microsecond)
		out[i] = s.next(s.at)
	}
	return out
}

// benchKeys makes n keys (not on the bus) and their history.
func benchKeys(n int, created time.Time) ([]*eventsv1.Key, *keyhistory.Keys) {
	kh := keyhistory.New(quiet)
	ks := make([]*eventsv1.Key, n)
	for i := range ks {
		ks[i] = &eventsv1.Key{Id: fmt.Sprintf("key_bench_%06d", i), Account: "acme", Limits: benchLimits(),
			AlertThresholdsPpm: []uint32{500000, 800000}, CreatedAt: timestamppb.New(created)}
		kh.Apply(uint64(i+1), &eventsv1.KeyEvent{OccurredAt: timestamppb.New(created), Key: ks[i]})
	}
	return ks, kh
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkFold measures folder.foldBatch, the fold's one transaction,
// alone: no NATS, batches of 2,000 events from 8 edges over 16 partitions,
// with the partitions' stream positions written as the worker does.
// Each op is one batch; events/s is 2,000 per op over the time spent in
// foldBatch; txn-* is the whole transaction, commit-* the COMMIT in it.
func BenchmarkFold(b *testing.B) {
	for _, nKeys := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("keys=%d/batch=2000", nKeys), func(b *testing.B) { benchFold(b, nKeys, 2000) })
	}
	b.Run("keys=1000/batch=500", func(b *testing.B) { benchFold(b, 1000, 500) })
}

func benchFold(b *testing.B, nKeys, batch int) {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(durablePostgres(b))
	if err != nil {
		b.Fatal(err)
	}
	timer := &commitTimer{}
	cfg.ConnConfig.Tracer = timer
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	if err := store.Migrate(ctx, pool); err != nil {
		b.Fatal(err)
	}
	start := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	ks, kh := benchKeys(nKeys, start.Add(-time.Hour))
	f := &folder{pool: pool, keys: kh, now: time.Now}
	stream := newBenchStream(ks, 8, 16, start)
	// Warm up: every key's row exists, as in a running system.
	for range max(1, 2*nKeys/batch) {
		evs := stream.batch(batch)
		if _, err := f.foldBatch(ctx, evs, stream.positions(evs)); err != nil {
			b.Fatal(err)
		}
	}
	timer.take()

	var txns []time.Duration
	var busy time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		evs := stream.batch(batch)
		pos := stream.positions(evs)
		b.StartTimer()
		began := time.Now()
		res, err := f.foldBatch(ctx, evs, pos)
		d := time.Since(began)
		if err != nil {
			b.Fatal(err)
		}
		if res.folded != batch {
			b.Fatalf("folded %d of %d", res.folded, batch)
		}
		txns = append(txns, d)
		busy += d
	}
	b.StopTimer()
	commits := timer.take()
	b.ReportMetric(float64(batch*b.N)/busy.Seconds(), "events/s")
	b.ReportMetric(ms(quantile(txns, 0.5)), "txn-p50-ms")
	b.ReportMetric(ms(quantile(txns, 0.99)), "txn-p99-ms")
	b.ReportMetric(ms(quantile(commits, 0.5)), "commit-p50-ms")
	b.ReportMetric(ms(quantile(commits, 0.99)), "commit-p99-ms")
}

// TestMeteringLoad measures a running worker end to end (NATS in process,
// PostgreSQL with fsync on, 1,000 keys on 16 partitions, 8 edges): how
// fast it folds a backlog, and the fold lag (event time to the commit that
// folded it) while events arrive at a steady rate. Set
// TOLLGATE_METERING_LOAD=1 to run it; TOLLGATE_METERING_LOAD_RATE changes the
// rate (default 5000 a second), TOLLGATE_METERING_LOAD_SECONDS its duration
// (default 20).
func TestMeteringLoad(t *testing.T) {
	if os.Getenv("TOLLGATE_METERING_LOAD") == "" {
		t.Skip("set TOLLGATE_METERING_LOAD=1 to measure metering under load")
	}
	rate, seconds := envInt("TOLLGATE_METERING_LOAD_RATE", 5000), envInt("TOLLGATE_METERING_LOAD_SECONDS", 20)
	_, nc := testenv.NATS(t)
	r := newRigDSN(t, nc.ConnectedUrl(), durablePostgres(t))
	r.parts = 16
	ctx := ctxT(t)
	ks := make([]*eventsv1.Key, 1000)
	for i := range ks {
		ks[i] = r.keyCreated(time.Now().Add(-time.Hour), benchLimits()...)
	}
	stream := newBenchStream(ks, 8, r.parts, time.Now())
	if err := store.Migrate(ctx, r.pool); err != nil { // so that progress can be read before the worker starts
		t.Fatal(err)
	}
	cfg := r.config()
	var mu sync.Mutex
	var lags []time.Duration
	record := false
	opts := Options{Lag: func(d time.Duration) {
		mu.Lock()
		if record {
			lags = append(lags, d)
		}
		mu.Unlock()
	}}
	folded := func() int64 {
		var n int64
		if err := r.pool.QueryRow(ctx, `SELECT coalesce(sum(requests), 0) FROM metering_balances`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFolded := func(want int64, timeout time.Duration) time.Time {
		deadline := time.Now().Add(timeout)
		for {
			if folded() >= want {
				return time.Now()
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d events folded after %v", folded(), want, timeout)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// 1. A backlog of 200,000 events, then a worker starts.
	const backlog = 200_000
	for range backlog / 2000 {
		r.publishAsync(stream.batch(2000))
	}
	wctx, stopWorker := context.WithCancel(context.Background())
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- RunWith(wctx, cfg, quiet, opts) }()
	end := waitFolded(backlog, 5*time.Minute)
	took := end.Sub(began)
	t.Logf("backlog: %d events folded in %v: %.0f events/s end to end (NATS consume + fold + BALANCES)",
		backlog, took.Round(time.Millisecond), backlog/took.Seconds())

	// 2. A steady rate, events stamped when published.
	mu.Lock()
	record = true
	mu.Unlock()
	sent := 0
	start := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	for time.Since(start) < time.Duration(seconds)*time.Second {
		<-tick.C
		due := int(time.Since(start).Seconds()*float64(rate)) - sent
		if due <= 0 {
			continue
		}
		evs := make([]*eventsv1.UsageEvent, due)
		now := time.Now()
		for i := range evs {
			evs[i] = stream.next(now)
		}
		r.publishAsync(evs)
		sent += due
	}
	tick.Stop()
	waitFolded(int64(backlog+sent), time.Minute)
	stopWorker()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("steady %d events/s for %ds (%d events): fold lag p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms",
		rate, seconds, len(lags), ms(quantile(lags, 0.5)), ms(quantile(lags, 0.9)), ms(quantile(lags, 0.99)), ms(quantile(lags, 1)))
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// publishAsync sends events without waiting for each ack.
func (r *rig) publishAsync(evs []*eventsv1.UsageEvent) {
	r.t.Helper()
	for _, ev := range evs {
		data, err := proto.Marshal(ev)
		if err != nil {
			r.t.Fatal(err)
		}
		if _, err := r.js.PublishAsync(bus.UsageSubject(int(ev.GetPartition()), ev.GetAccount(), ev.GetKeyId()), data); err != nil {
			r.t.Fatal(err)
		}
	}
	select {
	case <-r.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		r.t.Fatal("publish did not complete")
	}
}
