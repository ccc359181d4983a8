package sink

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/testenv"
	"github.com/tollgate/tollgate/pkg/usagestore"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// testLog is quiet unless TOLLGATE_TEST_LOG is set.
func testLog() *slog.Logger {
	if os.Getenv("TOLLGATE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testConfig(natsURL, dsn string) Config {
	cfg := DefaultConfig()
	cfg.NATSURL, cfg.ClickHouseDSN = natsURL, dsn
	cfg.Listen = ""
	cfg.BatchSize = 2000
	cfg.FlushInterval = 50 * time.Millisecond
	cfg.WriteTimeout = 5 * time.Second
	cfg.MaxBackoff = 200 * time.Millisecond
	cfg.ShutdownTimeout = 0
	return cfg
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// runningSink is a sink role running in the background.
type runningSink struct {
	srv    *Server
	cancel context.CancelFunc
	done   chan error
}

// startSink starts a sink; it is stopped when the test ends if still running.
// A sink that stops by itself fails the test.
func startSink(t testing.TB, cfg Config) *runningSink {
	return startSinkWith(t, cfg, sinkOptions{})
}

// sinkOptions are test knobs of a sink.
type sinkOptions struct {
	// fault is called after each step of a batch; a sink stopped by a
	// fault does not fail the test.
	fault func(step string) error
	// inactive is how soon the server drops an idle reading consumer.
	inactive time.Duration
}

func startSinkWith(t testing.TB, cfg Config, opt sinkOptions) *runningSink {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := newServer(ctx, cfg, testLog(), usagestore.WriterOptions{Timeout: cfg.WriteTimeout, Settle: 20 * time.Millisecond})
	if err != nil {
		cancel()
		t.Fatalf("start sink: %v", err)
	}
	r := &runningSink{srv: srv, cancel: cancel, done: make(chan error, 1)}
	if opt.fault != nil {
		srv.Sink().fault = opt.fault
	}
	srv.Sink().inactive = opt.inactive
	go func() {
		err := srv.Run(ctx)
		if ctx.Err() == nil && opt.fault == nil {
			t.Errorf("sink stopped by itself: %v", err)
		}
		r.done <- err
	}()
	t.Cleanup(func() { r.stop() })
	return r
}

// stop cancels the sink and returns what Run returned; safe to call twice.
func (r *runningSink) stop() error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.cancel = nil
	err := <-r.done
	r.srv.Close()
	return err
}

// totals are what a set of events adds up to.
type totals struct {
	Requests, InputTokens, OutputTokens, Cost int64
}

func (a totals) String() string {
	return fmt.Sprintf("requests=%d input=%d output=%d cost=%d", a.Requests, a.InputTokens, a.OutputTokens, a.Cost)
}

// feedPartitions is the number of usage partitions the feed's edges use.
const feedPartitions = 4

// feed publishes usage events as edges do and remembers what they add up to.
// Events are identified by (edge, sequence); publishing one again (as a
// replayed spool does) must not change the totals.
type feed struct {
	js       jetstream.JetStream
	rng      *rand.Rand
	mu       sync.Mutex
	want     totals
	seq      map[string]uint64 // per edge and partition, as edges number them
	accounts []string
}

func newFeed(t testing.TB, nc *nats.Conn) *feed {
	t.Helper()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(20_000))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.EnsureUsageStream(ctxFor(t, 10*time.Second), js, bus.UsageOptions{}); err != nil {
		t.Fatal(err)
	}
	return &feed{js: js, rng: rand.New(rand.NewPCG(1, 2)), seq: map[string]uint64{}, accounts: []string{"acme", "globex", "initech"}}
}

// make returns n new events of edge, an hour or two around base.
func (f *feed) make(edge string, n int, base time.Time) []*eventsv1.UsageEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*eventsv1.UsageEvent, n)
	for i := range out {
		acct := f.accounts[f.rng.IntN(len(f.accounts))]
		key := fmt.Sprintf("key_%s_%d", acct, f.rng.IntN(20))
		part := bus.Partition(key, feedPartitions)
		f.seq[fmt.Sprint(edge, part)]++
		seq := f.seq[fmt.Sprint(edge, part)]
		ev := &eventsv1.UsageEvent{
			EventId: fmt.Sprintf("%s:%d:%d", edge, part, seq), Partition: uint32(part), OccurredAt: timestamppb.New(base.Add(time.Duration(f.rng.IntN(7200)) * time.Second)),
			SchemaVersion: 1, EdgeInstance: edge, Sequence: seq, KeyId: key, Account: acct,
			Service: acct + "/openai", Model: []string{"gpt-4o", "gpt-4o-mini", "o3"}[f.rng.IntN(3)], Endpoint: "chat.completions",
			InputTokens: int64(f.rng.IntN(5000)), OutputTokens: int64(f.rng.IntN(2000)), Cost: int64(f.rng.IntN(50_000_000)),
			Status: 200, LatencyUs: int64(f.rng.IntN(3_000_000)),
		}
		out[i] = ev
		f.want.Requests++
		f.want.InputTokens += ev.InputTokens
		f.want.OutputTokens += ev.OutputTokens
		f.want.Cost += ev.Cost
	}
	return out
}

// wantTotals is what every event made so far adds up to.
func (f *feed) wantTotals() totals {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.want
}

// publish sends events and waits until the stream has them all, resending
// what was not acknowledged (the bus may be restarting). withID false sends
// without a message id, so that the stream's de-duplication window does not
// hide a second copy: only the sink can recognise it.
func (f *feed) publish(ctx context.Context, evs []*eventsv1.UsageEvent, withID bool) error {
	for len(evs) > 0 {
		futures := make([]jetstream.PubAckFuture, 0, len(evs))
		var failed []*eventsv1.UsageEvent
		for i, ev := range evs {
			data, err := proto.Marshal(ev)
			if err != nil {
				return err
			}
			var opts []jetstream.PublishOpt
			if withID {
				opts = append(opts, jetstream.WithMsgID(ev.GetEventId()))
			}
			fut, err := f.js.PublishAsync(bus.UsageSubject(int(ev.GetPartition()), ev.GetAccount(), ev.GetKeyId()), data, opts...)
			if err != nil {
				failed = append(failed, evs[i:]...)
				break
			}
			futures = append(futures, fut)
		}
		for i, fut := range futures {
			select {
			case <-fut.Ok():
			case <-fut.Err():
				failed = append(failed, evs[i])
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if len(failed) > 0 {
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		evs = failed
	}
	return nil
}

func mustConnect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // a restart is expected
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// openCH connects to the test's ClickHouse database.
func openCH(t testing.TB, dsn string) driver.Conn {
	t.Helper()
	conn, err := usagestore.Open(ctxFor(t, 30*time.Second), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// storedTotals adds up usage_events, and counts distinct identities.
func storedTotals(ctx context.Context, conn driver.Conn) (totals, uint64, error) {
	var got totals
	var rows, distinct uint64
	err := conn.QueryRow(ctx, `SELECT count(), uniqExact(edge_instance, usage_partition, sequence), sum(input_tokens), sum(output_tokens), sum(cost) FROM usage_events`).
		Scan(&rows, &distinct, &got.InputTokens, &got.OutputTokens, &got.Cost)
	got.Requests = int64(rows)
	return got, distinct, err
}

// rolledTotals adds up the hourly rollup.
func rolledTotals(ctx context.Context, conn driver.Conn) (totals, error) {
	var got totals
	err := conn.QueryRow(ctx, `SELECT sum(requests), sum(input_tokens), sum(output_tokens), sum(cost) FROM usage_hourly`).
		Scan(&got.Requests, &got.InputTokens, &got.OutputTokens, &got.Cost)
	return got, err
}

// waitStored waits until usage_events has want.Requests rows (or more: a
// double), then checks that the events, the rollup and the identities all
// add up to exactly want.
func waitStored(t testing.TB, conn driver.Conn, want totals, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var got totals
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		got, _, err = storedTotals(ctx, conn)
		cancel()
		if err == nil && got.Requests >= want.Requests {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s usage_events has %v (err %v), want %v", within, got, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a double would arrive now
	ctx := ctxFor(t, 30*time.Second)
	got, distinct, err := storedTotals(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if got != want || distinct != uint64(want.Requests) {
		t.Errorf("usage_events: %v with %d distinct events, want %v", got, distinct, want)
	}
	rolled, err := rolledTotals(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if rolled != want {
		t.Errorf("usage_hourly: %v, want %v", rolled, want)
	}
}
