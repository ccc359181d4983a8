package usagepub

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// streamSequences reads every usage event in the stream and returns how many
// times each (instance, sequence) arrived.
func streamSequences(t *testing.T, js jetstream.JetStream) map[string]map[uint64]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, bus.UsageStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[uint64]int{}
	if info.State.Msgs == 0 {
		return out
	}
	c, err := js.OrderedConsumer(ctx, bus.UsageStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for n := uint64(0); n < info.State.Msgs; {
		batch, err := c.Fetch(int(min(1000, info.State.Msgs-n)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			ev := new(eventsv1.UsageEvent)
			if err := proto.Unmarshal(m.Data(), ev); err != nil {
				t.Fatal(err)
			}
			if out[ev.GetEdgeInstance()] == nil {
				out[ev.GetEdgeInstance()] = map[uint64]int{}
			}
			out[ev.GetEdgeInstance()][ev.GetSequence()]++
			n++
		}
	}
	return out
}

// The bus goes away twice in the middle of a steady load; every event is in
// the stream afterwards, exactly once.
func TestNoEventLostWhenTheBusDies(t *testing.T) {
	h, nc, js, ctx := restartableUsageBus(t)
	p, err := New(nc, Config{SpoolDir: t.TempDir(), AckTimeout: 500 * time.Millisecond, BatchSize: 100}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	stop, done := runPublisher(ctx, p)

	const total = 6000
	for i := 1; i <= total; i++ {
		p.Publish(&eventsv1.UsageEvent{KeyId: "key_x", Account: "acme", Cost: int64(i)})
		switch i {
		case 1500, 4000:
			h.Shutdown()
		case 2500, 5000:
			if err := h.Start(); err != nil {
				t.Fatal(err)
			}
		}
		if i%50 == 0 {
			time.Sleep(2 * time.Millisecond) // a steady load, not one burst
		}
	}
	// Wait until everything is acknowledged, then stop.
	deadline := time.Now().Add(30 * time.Second)
	for {
		published, spooled := p.Stats()
		if published >= total && p.spool.empty() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("published %d of %d (spooled %d) after 30s", published, total, spooled)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, spooled := p.Stats()
	if spooled == 0 {
		t.Fatal("the bus died twice but nothing was spooled: the test did not exercise the spool")
	}
	got := streamSequences(t, js)[p.Instance()]
	dups := 0
	for seq := uint64(1); seq <= total; seq++ {
		switch got[seq] {
		case 0:
			t.Fatalf("event %d lost", seq)
		case 1:
		default:
			dups++
		}
	}
	if len(got) != total {
		t.Fatalf("stream holds %d distinct events, want %d", len(got), total)
	}
	t.Logf("%d events, %d spooled during the outages, %d stored twice", total, spooled, dups)
}

// runPublisher runs p.Run until stop is called; done gets what Run returned.
func runPublisher(ctx context.Context, p *Publisher) (stop context.CancelFunc, done <-chan error) {
	runCtx, stop := context.WithCancel(ctx)
	ch := make(chan error, 1)
	go func() { ch <- p.Run(runCtx) }()
	return stop, ch
}

// restartableUsageBus is usageBus on a server the test can stop and start
// again; the connection reconnects every 50 ms. ctx bounds the test.
func restartableUsageBus(t *testing.T) (*testenv.NATSHandle, *nats.Conn, jetstream.JetStream, context.Context) {
	t.Helper()
	h := testenv.NATSRestartable(t)
	nc, err := bus.Connect(h.URL(), "test", quiet, nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	if _, err := bus.EnsureUsageStream(ctx, js, bus.UsageOptions{}); err != nil {
		t.Fatal(err)
	}
	return h, nc, js, ctx
}

// usageBus starts a NATS server with the USAGE stream; ctx bounds the test.
func usageBus(t *testing.T) (*nats.Conn, jetstream.JetStream, context.Context) {
	t.Helper()
	_, nc := testenv.NATS(t)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if _, err := bus.EnsureUsageStream(ctx, js, bus.UsageOptions{}); err != nil {
		t.Fatal(err)
	}
	return nc, js, ctx
}

// Events spooled by an earlier process are published by the next one.
func TestSpoolOfAnEarlierProcessIsReplayed(t *testing.T) {
	nc, js, ctx := usageBus(t)
	dir := t.TempDir()
	old := spoolWith(t, dir, "edge-old", 10)
	old.close()

	p, err := New(nc, Config{SpoolDir: dir}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	stop, done := runPublisher(ctx, p)
	waitStored(t, js, "edge-old", 10)
	stop()
	<-done
	if got := streamSequences(t, js)["edge-old"]; len(got) != 10 {
		t.Fatalf("replayed %d of 10 events of the earlier process", len(got))
	}
}

// An edge started again with the same configured instance: the events of its
// second run are new events, not copies of the first run's that the stream
// (by message id) and metering (by instance and sequence) would drop.
func TestRestartWithAFixedInstanceLosesNoEvent(t *testing.T) {
	nc, js, ctx := usageBus(t)
	dir := t.TempDir()
	const runs, perRun = 2, 10
	var instances []string
	for run := range runs {
		p, err := New(nc, Config{Instance: "edge-a", SpoolDir: dir}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		stop, done := runPublisher(ctx, p)
		for i := range perRun {
			p.Publish(&eventsv1.UsageEvent{KeyId: "key_x", Account: "acme", Cost: int64(100*run + i)})
		}
		deadline := time.Now().Add(10 * time.Second)
		for published, _ := p.Stats(); published < perRun && time.Now().Before(deadline); published, _ = p.Stats() {
			time.Sleep(20 * time.Millisecond)
		}
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		instances = append(instances, p.Instance())
	}
	stored := 0
	for _, seqs := range streamSequences(t, js) {
		stored += len(seqs)
	}
	if stored != runs*perRun {
		t.Fatalf("the stream holds %d of the %d events of %d runs (instances %q)", stored, runs*perRun, runs, instances)
	}
	if instances[0] == instances[1] {
		t.Fatalf("both runs published as %q", instances[0])
	}
	for _, in := range instances {
		if !regexp.MustCompile(`^edge-a-[0-9a-f]{12}$`).MatchString(in) {
			t.Errorf("instance %q: want the configured name, a dash and random hex", in)
		}
	}
}

// An edge that dies while another runs on the same spool dir leaves its
// spool behind; the running one adopts it within AdoptInterval and publishes
// its events. A clean exit leaves no spool file.
func TestRunningEdgeAdoptsTheSpoolOfOneThatDied(t *testing.T) {
	nc, js, ctx := usageBus(t)
	dir := t.TempDir()
	p, err := New(nc, Config{SpoolDir: dir, AdoptInterval: 100 * time.Millisecond}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	stop, done := runPublisher(ctx, p)

	dead := spoolWith(t, dir, "edge-dead", 10)
	dead.f.Close() // the process dies: its lock goes, its file stays

	waitStored(t, js, "edge-dead", 10)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := streamSequences(t, js)["edge-dead"]; len(got) != 10 {
		t.Fatalf("published %d of the 10 events of the edge that died", len(got))
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Fatalf("files left in the spool dir after a clean exit: %v", left)
	}
}

// With the bus away and the spool failing too, a running publisher keeps
// retrying (nothing is dropped while it runs), but a stop ends: after
// StopSpoolTimeout the events are counted as lost and Run says so.
func TestStopEndsWhenNeitherBusNorSpoolTakesEvents(t *testing.T) {
	nc, _, ctx := usageBus(t)
	p, err := New(nc, Config{SpoolDir: t.TempDir(), StopSpoolTimeout: 300 * time.Millisecond, AckTimeout: 100 * time.Millisecond}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()        // the bus is away
	p.spool.f.Close() // and the spool cannot be written
	stop, done := runPublisher(ctx, p)
	const n = 7
	for range n {
		p.Publish(&eventsv1.UsageEvent{KeyId: "key_x", Account: "acme"})
	}
	time.Sleep(500 * time.Millisecond) // longer than StopSpoolTimeout: a running publisher never gives up
	select {
	case err := <-done:
		t.Fatalf("Run ended while running: %v", err)
	default:
	}
	if got := p.lost.Load(); got != 0 {
		t.Fatalf("%d events given up while running", got)
	}
	stop()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "7 events lost") {
			t.Fatalf("Run at stop: %v, want an error counting 7 events lost", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not end within 15 s of the stop")
	}
	if got := p.lost.Load(); got != n {
		t.Fatalf("%d events counted as lost, want %d", got, n)
	}
}

// The bus comes back while the spool still cannot be written: the events
// the spool did not take are published, not held until the disk heals.
func TestBusTakesWhatTheFailingSpoolCouldNot(t *testing.T) {
	h, nc, js, ctx := restartableUsageBus(t)
	p, err := New(nc, Config{SpoolDir: t.TempDir(), AckTimeout: 200 * time.Millisecond}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	h.Shutdown()      // the bus is away
	p.spool.f.Close() // and the spool cannot be written
	stop, done := runPublisher(ctx, p)
	const n = 5
	for range n {
		p.Publish(&eventsv1.UsageEvent{KeyId: "key_x", Account: "acme"})
	}
	time.Sleep(300 * time.Millisecond) // the batch fails to publish and to spool
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	waitStored(t, js, p.Instance(), n)
	if got := len(streamSequences(t, js)[p.Instance()]); got != n {
		t.Fatalf("%d of %d events in the stream once the bus was back", got, n)
	}
	stop()
	// Run reports the spool it cannot close (the test closed its file), but
	// no event lost.
	if err := <-done; err != nil && strings.Contains(err.Error(), "lost") {
		t.Fatalf("Run: %v", err)
	}
}
