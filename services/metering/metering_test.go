package metering

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
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
	"github.com/tollgate/tollgate/pkg/testenv"
	"github.com/tollgate/tollgate/services/metering/internal/store"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type rig struct {
	t      *testing.T
	url    string
	dsn    string
	nc     *nats.Conn
	js     jetstream.JetStream
	keyLog *bus.KeyLog
	pool   *pgxpool.Pool
	parts  int
}

func newRig(t *testing.T, natsURL string) *rig {
	t.Helper()
	r := &rig{t: t, url: natsURL, dsn: testenv.Postgres(t), parts: 4}
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
	// The tables exist before any worker starts, so waiting on them cannot
	// race the first worker's migration.
	if err := store.Migrate(ctx, r.pool); err != nil {
		t.Fatal(err)
	}
	return r
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (r *rig) config() Config {
	c := DefaultConfig()
	c.NATSURL, c.PostgresDSN, c.Partitions = r.url, r.dsn, r.parts
	return c
}

// start runs a worker until the returned stop is called.
func (r *rig) start(edit func(*Config)) (stop func()) {
	cfg := r.config()
	if edit != nil {
		edit(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, quiet) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				r.t.Errorf("metering: %v", err)
			}
		})
	}
	r.t.Cleanup(stop)
	return stop
}

func (r *rig) key(limits ...*eventsv1.Limit) *eventsv1.Key {
	r.t.Helper()
	h, _ := keys.NewHasher([]byte("pepper-for-metering-tests-0123456789"), "p1")
	ev, _, err := keys.Create(time.Now().Add(-time.Hour), "t", h, &eventsv1.Key{Account: "acme", Name: "k",
		Permissions: []eventsv1.Permission{eventsv1.Permission_PERMISSION_PREDICT}, Limits: limits, AlertThresholdsPpm: []uint32{500000, 800000}}, "en_")
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.keyLog.Append(ctxT(r.t), ev, 0); err != nil {
		r.t.Fatal(err)
	}
	return ev.GetKey()
}

// events makes n usage events for key from one edge, numbered per partition.
func (r *rig) events(edge string, k *eventsv1.Key, n int, cost int64, at time.Time) []*eventsv1.UsageEvent {
	part := bus.Partition(k.GetId(), r.parts)
	out := make([]*eventsv1.UsageEvent, n)
	for i := range n {
		seq := uint64(i + 1)
		out[i] = &eventsv1.UsageEvent{EventId: fmt.Sprintf("%s:%d:%d", edge, part, seq), EdgeInstance: edge, Partition: uint32(part), Sequence: seq,
			KeyId: k.GetId(), Account: k.GetAccount(), InputTokens: 10, OutputTokens: 5, Cost: cost,
			OccurredAt: timestamppb.New(at.Add(time.Duration(i) * time.Millisecond)), Status: 200}
	}
	return out
}

// publish sends events as an edge would (no message id: duplicates reach the
// stream, as a redelivery or a replay past the dedup window would).
func (r *rig) publish(evs []*eventsv1.UsageEvent) {
	r.t.Helper()
	for _, ev := range evs {
		data, _ := proto.Marshal(ev)
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

func (r *rig) balance(keyID string) *eventsv1.KeyBalance {
	kb, err := store.Balance(ctxT(r.t), r.pool, keyID)
	if err != nil {
		r.t.Fatal(err)
	}
	return kb
}

func (r *rig) waitRequests(keyID string, want int64) *eventsv1.KeyBalance {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		kb := r.balance(keyID)
		if kb.GetRequests() >= want {
			return kb
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("key %s: %d requests folded, want %d", keyID, kb.GetRequests(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestEveryEventCountsOnceWhateverIsRedelivered(t *testing.T) {
	_, nc := testenv.NATS(t)
	r := newRig(t, nc.ConnectedUrl())
	k := r.key(&eventsv1.Limit{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: 1e12, Window: eventsv1.Window_WINDOW_CALENDAR})
	evs := r.events("edge-a", k, 3000, 1000, time.Now())
	more := r.events("edge-b", k, 1000, 7, time.Now())

	stop := r.start(nil)
	// Every event twice, some three times, shuffled a little (a replayed
	// spool arrives late and out of order).
	all := append(append(append([]*eventsv1.UsageEvent{}, evs...), more...), evs[:1500]...)
	all = append(all, more[500:]...)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range all {
		j := min(len(all)-1, i+rng.IntN(20))
		all[i], all[j] = all[j], all[i]
	}
	r.publish(all[:2000])
	// The worker dies mid-stream and another takes over.
	time.Sleep(50 * time.Millisecond)
	stop()
	r.publish(all[2000:])
	r.start(nil)
	r.publish(evs) // and everything of edge-a once more
	kb := r.waitRequests(k.GetId(), 4000)
	time.Sleep(300 * time.Millisecond) // anything counted twice would show up now
	kb = r.balance(k.GetId())
	if kb.GetRequests() != 4000 || kb.GetCost() != 3000*1000+1000*7 || kb.GetInputTokens() != 40000 || kb.GetOutputTokens() != 20000 {
		t.Fatalf("balance %v: want 4000 requests costing %d", kb, 3000*1000+1000*7)
	}
	if l := kb.GetLimits()[0]; l.GetUsed() != 3000*1000+1000*7 {
		t.Fatalf("calendar spend used %d", l.GetUsed())
	}
}
