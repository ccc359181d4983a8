package metering

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/localdb"
	"github.com/tollgate/tollgate/pkg/testenv"
)

// The fault tests send a steady stream of usage events for keys on every
// partition from three edges, break something in the middle, and then
// require every key's balance to equal the sum of the distinct events sent,
// exactly: requests, tokens, cost and a calendar daily spend limit's use.
//
// Event times are fixed (one calendar day in UTC), so the calendar limit
// holds the whole sum whatever the wall clock says.

var faultDay = time.Date(2026, 3, 2, 1, 0, 0, 0, time.UTC)

func faultLimits() []*eventsv1.Limit {
	return []*eventsv1.Limit{
		{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: 1e15, Window: eventsv1.Window_WINDOW_CALENDAR},
		{Metric: eventsv1.Metric_METRIC_TOKENS, Interval: eventsv1.Interval_INTERVAL_MINUTE, Amount: 1e6, Window: eventsv1.Window_WINDOW_ROLLING},
		// A request rate limit that is never reached, the common case: its
		// bucket is full at almost every event.
		{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_MINUTE, Amount: 1e6, Window: eventsv1.Window_WINDOW_ROLLING},
	}
}

// requireRebuildClean runs a rebuild once the live fold is exact, as a
// subtest: it must find the same balances (DESIGN.md section 6), limit
// states and alert marks included.
func (r *rig) requireRebuildClean() {
	r.t.Run("a rebuild equals the live fold", func(t *testing.T) {
		var out strings.Builder
		rep, err := Rebuild(ctxT(t), r.config(), quiet, &out)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Differences) > 0 {
			ds := rep.Differences
			if len(ds) > 2 {
				ds = append(ds[:2:2], fmt.Sprintf("... %d keys in all", len(rep.Differences)))
			}
			t.Errorf("a rebuild after the faulty run differs from the live balances of %d of %d keys:\n%s",
				len(rep.Differences), rep.Keys, strings.Join(ds, "\n"))
		}
	})
}

// steadyStream makes n events spread over keys and edges, one millisecond
// apart from faultDay.
func steadyStream(rng *rand.Rand, ks []*eventsv1.Key, edges []*edgeSim, n int) []*eventsv1.UsageEvent {
	out := make([]*eventsv1.UsageEvent, n)
	for i := range out {
		e := edges[rng.IntN(len(edges))]
		out[i] = e.event(ks[rng.IntN(len(ks))], faultDay.Add(time.Duration(i)*time.Millisecond),
			1+rng.Int64N(1_000_000), rng.Int64N(2000), rng.Int64N(500))
	}
	return out
}

// sendSteadily publishes evs in chunks, one chunk per tick, recording each
// chunk in l once the stream has it.
func (r *rig) sendSteadily(ctx context.Context, l *ledger, evs []*eventsv1.UsageEvent, chunk int, tick time.Duration) error {
	tk := time.NewTicker(tick)
	defer tk.Stop()
	for len(evs) > 0 {
		n := min(chunk, len(evs))
		if err := r.publishOnce(ctx, evs[:n]); err != nil {
			return err
		}
		l.add(evs[:n]...)
		evs = evs[n:]
		select {
		case <-tk.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

type faultSetup struct {
	r     *rig
	keys  []*eventsv1.Key
	l     *ledger
	evs   []*eventsv1.UsageEvent
	sent  chan error
	start func()
}

// newFaultSetup makes keys over every partition and 6,000 events; start
// sends them at about 2,000 a second in the background.
func newFaultSetup(t *testing.T, r *rig, seed uint64) *faultSetup {
	rng := rand.New(rand.NewPCG(seed, seed))
	ks := r.keysOverPartitions(12, faultDay.Add(-time.Hour), faultLimits()...)
	edges := []*edgeSim{newEdge("edge-a", r.parts), newEdge("edge-b", r.parts), newEdge("edge-c", r.parts)}
	f := &faultSetup{r: r, keys: ks, l: newLedger(ks...), evs: steadyStream(rng, ks, edges, 6000), sent: make(chan error, 1)}
	f.start = func() {
		ctx := ctxT(t)
		go func() { f.sent <- r.sendSteadily(ctx, f.l, f.evs, 100, 50*time.Millisecond) }()
	}
	return f
}

func (f *faultSetup) waitSent(t *testing.T) {
	t.Helper()
	if err := <-f.sent; err != nil {
		t.Fatal(err)
	}
}

// A worker is stopped (its context cancelled) at random moments while it
// folds a steady stream, and a new one started each time: during start-up,
// between batches, inside a fold's transaction, between commit and acks.
func TestFaultWorkerKilledAtRandomPoints(t *testing.T) {
	t.Parallel()
	_, nc := testenv.NATS(t)
	r := newRig(t, nc.ConnectedUrl())
	f := newFaultSetup(t, r, 1)
	cfg := r.config()
	cfg.BatchSize = 300 // more, smaller folds: more places to be killed in
	rng := rand.New(rand.NewPCG(2, 2))
	var mu sync.Mutex
	var stopErrs []string
	report := func(err error) {
		mu.Lock()
		stopErrs = append(stopErrs, err.Error())
		mu.Unlock()
	}
	f.start()
	for range 8 {
		stop := r.runWorkerReporting(cfg, report)
		time.Sleep(time.Duration(20+rng.IntN(400)) * time.Millisecond)
		stop()
	}
	r.runWorker(cfg)
	f.waitSent(t)
	took := r.waitExact(f.l, 100*time.Second, true)
	t.Logf("balances exact %v after the last event was sent (8 kills)", took.Round(time.Millisecond))
	r.requireRebuildClean()
	t.Run("a stopped worker's Run returns nil", func(t *testing.T) {
		mu.Lock()
		defer mu.Unlock()
		if len(stopErrs) > 0 {
			t.Errorf("%d of 8 stopped workers returned an error: %s", len(stopErrs), strings.Join(stopErrs, "; "))
		}
	})
}

// A worker that is stopped (a deploy, a rescheduled pod) in the middle of
// a backlog: the next worker must fold the rest promptly, from where the
// last commit left off, not after some redelivery timeout (with durable
// consumers and a one-minute AckWait, what the stopped worker held waited
// a minute).
func TestWorkerRestartFoldsWhatTheStoppedOneHeld(t *testing.T) {
	t.Parallel()
	_, nc := testenv.NATS(t)
	r := newRig(t, nc.ConnectedUrl())
	rng := rand.New(rand.NewPCG(6, 6))
	ks := r.keysOverPartitions(8, faultDay.Add(-time.Hour), faultLimits()...)
	l := newLedger(ks...)
	evs := steadyStream(rng, ks, []*edgeSim{newEdge("edge-a", r.parts)}, 20000)
	if err := r.publishOnce(ctxT(t), evs); err != nil {
		t.Fatal(err)
	}
	l.add(evs...)
	cfg := r.config()
	cfg.BatchSize = 50 // small folds, so that the stop finds work in hand
	stop := r.runWorker(cfg)
	time.Sleep(500 * time.Millisecond)
	stop()
	var folded int64
	if err := r.pool.QueryRow(ctxT(t), `SELECT coalesce(sum(requests), 0) FROM metering_balances`).Scan(&folded); err != nil {
		t.Fatal(err)
	}
	if folded == 0 || folded >= int64(len(evs)) {
		t.Logf("the stop did not land mid-backlog (%d of %d folded); the test shows little this time", folded, len(evs))
	}
	r.runWorker(cfg)
	took := r.waitExact(l, 15*time.Second, true)
	t.Logf("%d of %d events folded when the worker stopped; all folded %v after the restart", folded, len(evs), took.Round(time.Millisecond))
}

// The NATS server goes away for a while mid-stream and comes back with its
// store: the worker reconnects and resumes; events whose acks were lost are
// redelivered and skipped; the test's publisher retries (and so stores some
// events twice).
func TestFaultNATSRestartedMidStream(t *testing.T) {
	t.Parallel()
	h := testenv.NATSRestartable(t)
	r := newRig(t, h.URL())
	f := newFaultSetup(t, r, 3)
	r.runWorker(r.config())
	f.start()
	time.Sleep(1200 * time.Millisecond)
	h.Shutdown()
	time.Sleep(1500 * time.Millisecond)
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	f.waitSent(t)
	took := r.waitExact(f.l, 100*time.Second, true)
	t.Logf("balances exact %v after the last event was sent (NATS down 1.5 s)", took.Round(time.Millisecond))
	r.requireRebuildClean()
}

// PostgreSQL stops (fast shutdown: connections cut, transactions in flight
// rolled back) mid-stream and starts again on the same data and port.
func TestFaultPostgresRestartedMidStream(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	dir := t.TempDir()
	pg, err := localdb.StartPostgres(ctx, localdb.PostgresConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop(context.Background()) }) //nolint:errcheck // pg is the one running at the end
	if err := pg.CreateDatabase(ctx, "metering"); err != nil {
		t.Fatal(err)
	}
	_, nc := testenv.NATS(t)
	r := newRigDSN(t, nc.ConnectedUrl(), pg.DSN("metering"))
	f := newFaultSetup(t, r, 4)
	stop := r.runWorker(r.config())
	f.start()
	time.Sleep(1200 * time.Millisecond)
	if err := pg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if pg, err = localdb.StartPostgres(ctx, localdb.PostgresConfig{Dir: dir, Port: pg.Port()}); err != nil {
		t.Fatal(err)
	}
	f.waitSent(t)
	took := r.waitExact(f.l, 100*time.Second, true)
	t.Logf("balances exact %v after the last event was sent (PostgreSQL down 1.5 s)", took.Round(time.Millisecond))
	r.requireRebuildClean()
	stop()
}

// Every event is published twice, some three times, without message ids:
// in the same burst, interleaved with new events, and again long after it
// was folded and acknowledged, to a worker started afresh.
func TestFaultEventsDeliveredTwice(t *testing.T) {
	t.Parallel()
	_, nc := testenv.NATS(t)
	r := newRig(t, nc.ConnectedUrl())
	rng := rand.New(rand.NewPCG(5, 5))
	ks := r.keysOverPartitions(12, faultDay.Add(-time.Hour), faultLimits()...)
	edges := []*edgeSim{newEdge("edge-a", r.parts), newEdge("edge-b", r.parts)}
	l := newLedger(ks...)
	ctx := ctxT(t)

	stop := r.runWorker(r.config())
	first := steadyStream(rng, ks, edges, 3000)
	twice := append(append([]*eventsv1.UsageEvent{}, first...), first...)
	twice = append(twice, first[:1000]...)
	rng.Shuffle(len(twice), func(i, j int) { twice[i], twice[j] = twice[j], twice[i] })
	if err := r.publishOnce(ctx, twice); err != nil {
		t.Fatal(err)
	}
	l.add(first...)
	r.waitExact(l, 30*time.Second, true)

	// Long after: everything again, with new events in between, to a new
	// worker.
	stop()
	more := steadyStream(rng, ks, edges, 1000)
	again := append(append([]*eventsv1.UsageEvent{}, first...), more...)
	rng.Shuffle(len(again), func(i, j int) { again[i], again[j] = again[j], again[i] })
	if err := r.publishOnce(ctx, again); err != nil {
		t.Fatal(err)
	}
	l.add(more...)
	r.runWorker(r.config())
	r.waitExact(l, 30*time.Second, true)
	r.requireRebuildClean()
}
