package edge

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/testenv"
	"github.com/tollgate/tollgate/services/metering"
)

// lagRecorder collects metering's fold lags.
type lagRecorder struct {
	mu   sync.Mutex
	lags []time.Duration
}

func (l *lagRecorder) add(d time.Duration) { l.mu.Lock(); l.lags = append(l.lags, d); l.mu.Unlock() }

func (l *lagRecorder) quantile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lags) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), l.lags...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// overspend runs concurrent load through n edges on one key with a small
// spend limit until it is exhausted, and returns what was spent beyond it
// according to metering, the most one request cost, and the fold lags.
func overspend(t *testing.T, n int) (limit, spent, maxCost int64, lags *lagRecorder, rate float64) {
	w := newWorld(t)
	dsn := testenv.Postgres(t)
	lags = &lagRecorder{}
	mctx, stopMetering := context.WithCancel(context.Background())
	mdone := make(chan error, 1)
	cfg := metering.DefaultConfig()
	cfg.NATSURL, cfg.PostgresDSN = w.natsURL, dsn
	go func() { mdone <- metering.RunWith(mctx, cfg, quiet, metering.Options{Lag: lags.add}) }()
	t.Cleanup(func() { stopMetering(); <-mdone })

	limit = 200_000_000 // $0.20 a day; one request costs about $0.001
	secret, k := w.key(func(k *eventsv1.Key) {
		k.Limits = []*eventsv1.Limit{{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: limit, Window: eventsv1.Window_WINDOW_CALENDAR}}
	})
	var edges []*testEdge
	for range n {
		e := w.edge(nil)
		waitFor(t, "key at the edge", func() bool { return e.keys.Len() == 1 })
		edges = append(edges, e)
	}
	// Three clients per edge, each sending a request every 20 ms: a steady
	// load of about 150 requests per second per edge.
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	began := time.Now()
	var lastOK time.Time
	for _, e := range edges {
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				refused := 0
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && refused < 10; <-tick.C {
					res, _ := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody)
					if res.StatusCode == 200 {
						mu.Lock()
						ok++
						lastOK = time.Now()
						mu.Unlock()
					} else {
						refused++
					}
				}
			}()
		}
	}
	wg.Wait()
	rate = float64(ok) / lastOK.Sub(began).Seconds()
	pool, err := pgxpool.New(ctxT(t), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var kb *eventsv1.KeyBalance
	waitFor(t, "metering to fold every request", func() bool {
		kb, err = metering.Balance(ctxT(t), pool, k.GetId())
		return err == nil && kb != nil && kb.GetRequests() == int64(ok)
	})
	for _, ev := range w.usageEvents() {
		maxCost = max(maxCost, ev.GetCost())
	}
	return limit, kb.GetCost(), maxCost, lags, rate
}

func TestOneEdgeNeverOverspendsBeyondOneRequest(t *testing.T) {
	limit, spent, maxCost, _, _ := overspend(t, 1)
	if spent > limit+maxCost {
		t.Fatalf("one edge spent %d against a limit of %d: more than one request (%d) beyond it", spent, limit, maxCost)
	}
	if spent < limit-maxCost {
		t.Fatalf("spent %d: the limit %d was not used up", spent, limit)
	}
	t.Logf("1 edge: limit %d, spent %d, overspend %d (one request costs up to %d)", limit, spent, spent-limit, maxCost)
}

func TestThreeEdgesOverspendOnlyWithinTheFoldLag(t *testing.T) {
	const n = 3
	limit, spent, maxCost, lags, rate := overspend(t, n)
	over := spent - limit
	p99 := lags.quantile(0.99)
	// DESIGN.md: N edges overspend at most what the others spent within the
	// fold lag (each edge also ends at most one request beyond its view).
	bound := int64(float64(n-1)/n*rate*p99.Seconds()*float64(maxCost)) + n*maxCost
	t.Logf("%d edges at %.0f requests/s: limit %d, spent %d, overspend %d (%.1f requests); fold lag p50 %v p99 %v; bound %d",
		n, rate, limit, spent, over, float64(over)/float64(maxCost), lags.quantile(0.5), p99, bound)
	if over > 2*bound {
		t.Fatalf("overspend %d is more than twice the bound %d: the edges do not learn the others' spend", over, bound)
	}
}
