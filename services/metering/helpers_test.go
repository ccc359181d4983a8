package metering

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/keys"
)

// Helpers for the fault, worker, rebuild and benchmark tests. They extend
// the rig of metering_test.go without changing it.

// testLog is quiet unless TOLLGATE_TEST_LOG is set, for looking into a
// failing fault test.
func testLog() *slog.Logger {
	if os.Getenv("TOLLGATE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return quiet
}

// newRigDSN is newRig on a PostgreSQL database of the test's choosing.
func newRigDSN(t *testing.T, natsURL, dsn string) *rig {
	t.Helper()
	r := &rig{t: t, url: natsURL, dsn: dsn, parts: 4}
	var err error
	if r.nc, err = bus.Connect(natsURL, "test", quiet, nats.ReconnectWait(50*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.nc.Close)
	r.js, _ = jetstream.New(r.nc)
	ctx := ctxT(t)
	if r.keyLog, err = bus.NewKeyLog(ctx, r.js, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.EnsureUsageStream(ctx, r.js, bus.UsageOptions{}); err != nil {
		t.Fatal(err)
	}
	if r.pool, err = pgxpool.New(ctx, r.dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.pool.Close)
	return r
}

// runWorker runs a worker with cfg until the returned stop is called; an
// error from Run fails the test.
func (r *rig) runWorker(cfg Config) (stop func()) {
	return r.runWorkerReporting(cfg, func(err error) { r.t.Errorf("metering: %v", err) })
}

// runWorkerReporting is runWorker that hands Run's error to report. Run
// runs "until ctx ends": stopped, it returns nil, whenever it is stopped.
func (r *rig) runWorkerReporting(cfg Config, report func(error)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, testLog()) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				report(err)
			}
		})
	}
	r.t.Cleanup(stop)
	return stop
}

// keyCreated creates a key at created with limits and the thresholds 0.5
// and 0.8, and appends it to KEYS.
func (r *rig) keyCreated(created time.Time, ls ...*eventsv1.Limit) *eventsv1.Key {
	r.t.Helper()
	h, _ := keys.NewHasher([]byte("pepper-for-metering-tests-0123456789"), "p1")
	ev, _, err := keys.Create(created, "t", h, &eventsv1.Key{Account: "acme", Name: "k",
		Permissions: []eventsv1.Permission{eventsv1.Permission_PERMISSION_PREDICT}, Limits: ls,
		AlertThresholdsPpm: []uint32{500000, 800000}}, "en_")
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.keyLog.Append(ctxT(r.t), ev, 0); err != nil {
		r.t.Fatal(err)
	}
	return ev.GetKey()
}

// updateLimits appends an update of k's limits that happened at at.
func (r *rig) updateLimits(k *eventsv1.Key, at time.Time, ls ...*eventsv1.Limit) *eventsv1.Key {
	r.t.Helper()
	ctx := ctxT(r.t)
	cur, rev, err := r.keyLog.Last(ctx, k.GetAccount(), k.GetId())
	if err != nil {
		r.t.Fatal(err)
	}
	next := proto.CloneOf(cur.GetKey())
	next.Limits = ls
	ev, err := keys.Update(at, "t", cur.GetKey(), next, []string{"limits"})
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.keyLog.Append(ctx, ev, rev); err != nil {
		r.t.Fatal(err)
	}
	return ev.GetKey()
}

// keysOverPartitions creates n keys whose partitions cover all of r.parts.
func (r *rig) keysOverPartitions(n int, created time.Time, ls ...*eventsv1.Limit) []*eventsv1.Key {
	r.t.Helper()
	var out []*eventsv1.Key
	covered := map[int]bool{}
	for len(out) < n || len(covered) < r.parts {
		k := r.keyCreated(created, ls...)
		covered[bus.Partition(k.GetId(), r.parts)] = true
		out = append(out, k)
	}
	return out
}

// edgeSim numbers usage events as an edge does: 1, 2, 3, ... per
// (instance, partition).
type edgeSim struct {
	name  string
	parts int
	seq   map[int]uint64
}

func newEdge(name string, parts int) *edgeSim {
	return &edgeSim{name: name, parts: parts, seq: map[int]uint64{}}
}

func (e *edgeSim) event(k *eventsv1.Key, at time.Time, cost, in, out int64) *eventsv1.UsageEvent {
	part := bus.Partition(k.GetId(), e.parts)
	e.seq[part]++
	seq := e.seq[part]
	return &eventsv1.UsageEvent{EventId: fmt.Sprintf("%s:%d:%d", e.name, part, seq), SchemaVersion: 1,
		EdgeInstance: e.name, Partition: uint32(part), Sequence: seq, KeyId: k.GetId(), Account: k.GetAccount(),
		InputTokens: in, OutputTokens: out, Cost: cost, OccurredAt: timestamppb.New(at), Status: 200}
}

// totals is what the distinct events of one key add up to.
type totals struct{ requests, input, output, cost int64 }

// ledger is what was sent, per key, counting each distinct event once.
type ledger struct {
	mu   sync.Mutex
	seen map[string]bool
	keys map[string]*totals
}

func newLedger(ks ...*eventsv1.Key) *ledger {
	l := &ledger{seen: map[string]bool{}, keys: map[string]*totals{}}
	for _, k := range ks {
		l.keys[k.GetId()] = &totals{}
	}
	return l
}

func (l *ledger) add(evs ...*eventsv1.UsageEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range evs {
		id := fmt.Sprintf("%s/%d/%d", ev.GetEdgeInstance(), ev.GetPartition(), ev.GetSequence())
		if l.seen[id] {
			continue
		}
		l.seen[id] = true
		t := l.keys[ev.GetKeyId()]
		if t == nil {
			t = &totals{}
			l.keys[ev.GetKeyId()] = t
		}
		t.requests++
		t.input += ev.GetInputTokens()
		t.output += ev.GetOutputTokens()
		t.cost += ev.GetCost()
	}
}

func (l *ledger) snapshot() map[string]totals {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]totals, len(l.keys))
	for id, t := range l.keys {
		out[id] = *t
	}
	return out
}

// publishOnce sends events without message ids, as an edge replaying past
// the dedup window would, retrying each until the stream has it (a retry
// after a lost ack stores it twice, which metering must absorb). It gives
// up when ctx ends.
func (r *rig) publishOnce(ctx context.Context, evs []*eventsv1.UsageEvent) error {
	for _, ev := range evs {
		data, err := proto.Marshal(ev)
		if err != nil {
			return err
		}
		subj := bus.UsageSubject(int(ev.GetPartition()), ev.GetAccount(), ev.GetKeyId())
		for {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := r.js.Publish(pctx, subj, data)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("publish %s: %w", ev.GetEventId(), err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// balances reads every key's balance.
func (r *rig) balances(ctx context.Context) (map[string]*eventsv1.KeyBalance, error) {
	rows, err := r.pool.Query(ctx, `SELECT key_id, balance FROM metering_balances`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]*eventsv1.KeyBalance{}
	for rows.Next() {
		var id string
		var data []byte
		if err := rows.Scan(&id, &data); err != nil {
			return nil, err
		}
		kb := new(eventsv1.KeyBalance)
		if err := proto.Unmarshal(data, kb); err != nil {
			return nil, err
		}
		out[id] = kb
	}
	return out, rows.Err()
}

// calendarSpendDayUsed is the used amount of a key's calendar daily spend
// limit, or -1 if it has none.
func calendarSpendDayUsed(kb *eventsv1.KeyBalance) int64 {
	for _, l := range kb.GetLimits() {
		if l.GetMetric() == eventsv1.Metric_METRIC_SPEND && l.GetInterval() == eventsv1.Interval_INTERVAL_DAY {
			return l.GetUsed()
		}
	}
	return -1
}

// mismatch describes how balances differ from the ledger; "" when every
// key's totals, and its calendar daily spend (if it has one), are exact.
// over is set when some key has counted more than was sent.
func mismatch(bals map[string]*eventsv1.KeyBalance, want map[string]totals, calendar bool) (diff string, over bool) {
	var lines []string
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		w := want[id]
		kb := bals[id]
		got := totals{kb.GetRequests(), kb.GetInputTokens(), kb.GetOutputTokens(), kb.GetCost()}
		if got.requests > w.requests || got.cost > w.cost {
			over = true
		}
		if got != w {
			lines = append(lines, fmt.Sprintf("%s: %d requests, %d+%d tokens, cost %d; sent %d, %d+%d, %d",
				id, got.requests, got.input, got.output, got.cost, w.requests, w.input, w.output, w.cost))
			continue
		}
		if calendar && w.requests > 0 {
			if used := calendarSpendDayUsed(kb); used != w.cost {
				lines = append(lines, fmt.Sprintf("%s: calendar daily spend used %d, sent %d", id, used, w.cost))
			}
		}
	}
	if len(lines) > 8 {
		lines = append(lines[:8], fmt.Sprintf("... and %d more", len(lines)-8))
	}
	return strings.Join(lines, "\n"), over
}

// waitExact waits until the balances equal the ledger, then checks they
// stay so for a while (anything counted twice shows up then). It fails
// at once if a key ever counts more than was sent. It returns how long
// the balances took to converge.
func (r *rig) waitExact(l *ledger, timeout time.Duration, calendar bool) time.Duration {
	r.t.Helper()
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	want := l.snapshot()
	var last string
	for {
		bals, err := r.balances(ctx)
		if err == nil {
			diff, over := mismatch(bals, want, calendar)
			if over {
				r.t.Fatalf("counted more than was sent:\n%s", diff)
			}
			if diff == "" {
				break
			}
			last = diff
		} else {
			last = err.Error()
		}
		if time.Since(began) > timeout {
			r.t.Fatalf("balances not equal to what was sent after %v:\n%s", timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(began)
	time.Sleep(500 * time.Millisecond)
	bals, err := r.balances(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	if diff, _ := mismatch(bals, want, calendar); diff != "" {
		r.t.Fatalf("balances moved after they were exact:\n%s", diff)
	}
	return took
}

// position is where metering's fold of partition p stands in the USAGE
// stream (0: nothing folded).
func (r *rig) position(p int) uint64 {
	r.t.Helper()
	var seq int64
	err := r.pool.QueryRow(ctxT(r.t), `SELECT stream_seq FROM metering_positions WHERE partition = $1`, p).Scan(&seq)
	if err != nil {
		return 0
	}
	return uint64(seq)
}
