package sink

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pkg/localdb"
	"github.com/tollgate/tollgate/pkg/testenv"
)

var errCrash = errors.New("injected crash")

// A sink that dies after any step of a batch, and starts again, stores every
// event exactly once; so does one whose insert lands but reports failure.
func TestSinkCrashAtEachStep(t *testing.T) {
	for _, tc := range []struct {
		step string
		err  error
	}{
		{"recorded", errCrash},              // batch recorded, nothing inserted
		{"inserted", errCrash},              // all written, but the sink never learnt it
		{"done", errCrash},                  // all written, the next batch not begun
		{"inserted", errInjectedWriteError}, // rows in, but the sink believes it failed: it repairs at once
	} {
		t.Run(tc.step+"/"+tc.err.Error(), func(t *testing.T) {
			natsURL, dsn, f := newEnv(t)
			ctx := ctxFor(t, 2*time.Minute)
			if err := f.publish(ctx, f.make("edge-a", 20_000, base), true); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig(natsURL, dsn)
			var n atomic.Int32
			s := startSinkWith(t, cfg, sinkOptions{fault: func(step string) error {
				if step == tc.step && n.Add(1) == 3 {
					return tc.err
				}
				return nil
			}})
			conn := openCH(t, dsn)
			if tc.err == errCrash {
				select {
				case err := <-s.done:
					if !errors.Is(err, errCrash) {
						t.Fatalf("sink stopped with %v, want the injected crash", err)
					}
					s.cancel = nil
				case <-ctx.Done():
					t.Fatal("the sink did not crash")
				}
				got, _, err := storedTotals(ctx, conn)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("crashed with %d events stored", got.Requests)
				s = startSink(t, cfg)
			}
			if err := f.publish(ctx, f.make("edge-b", 5000, base), true); err != nil {
				t.Fatal(err)
			}
			waitStored(t, conn, f.wantTotals(), time.Minute)
			if s.srv.Sink().Stats().Repairs.Load() == 0 && tc.step != "done" {
				t.Error("no batch was repaired")
			}
		})
	}
}

// publishSteadily publishes batches of events until stop is closed, and
// returns how many it published.
func publishSteadily(ctx context.Context, t *testing.T, f *feed, edge string, perBatch int, every time.Duration, stop <-chan struct{}) func() int {
	var wg sync.WaitGroup
	var sent atomic.Int64
	wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := f.publish(ctx, f.make(edge, perBatch, base), true); err != nil {
				t.Errorf("publish: %v", err)
				return
			}
			sent.Add(int64(perBatch))
		}
	})
	return func() int { wg.Wait(); return int(sent.Load()) }
}

// The sink is killed (its context cancelled, with no time to finish the
// batch in hand, so inserts are cut off mid-flight) at random moments while
// events keep arriving, and started again each time.
func TestSinkKilledAtRandomPoints(t *testing.T) {
	natsURL, dsn, f := newEnv(t)
	ctx := ctxFor(t, 3*time.Minute)
	cfg := testConfig(natsURL, dsn)
	cfg.BatchSize = 3000
	stop := make(chan struct{})
	wait := publishSteadily(ctx, t, f, "edge-a", 300, 20*time.Millisecond, stop)
	rng := rand.New(rand.NewPCG(7, 7))
	var repaired, inserted uint64
	for range 12 {
		s := startSink(t, cfg)
		time.Sleep(time.Duration(50+rng.IntN(400)) * time.Millisecond)
		if err := s.stop(); err != nil {
			t.Fatalf("sink stopped with %v", err)
		}
		repaired += s.srv.Sink().Stats().Repairs.Load()
		inserted += s.srv.Sink().Stats().Events.Load()
	}
	close(stop)
	sent := wait()
	startSink(t, cfg)
	waitStored(t, openCH(t, dsn), f.wantTotals(), time.Minute)
	t.Logf("%d events sent; %d written by the killed sinks, which repaired %d batches", sent, inserted, repaired)
}

// The bus restarts under the sink: the ordered consumer picks up where it
// was, without a gap.
func TestSinkSurvivesNATSRestart(t *testing.T) {
	h := testenv.NATSRestartable(t)
	addr, db := testenv.ClickHouse(t)
	dsn := fmt.Sprintf("clickhouse://%s/%s", addr, db)
	nc := mustConnect(t, h.URL())
	f := newFeed(t, nc)
	ctx := ctxFor(t, 2*time.Minute)
	startSink(t, testConfig(h.URL(), dsn))
	stop := make(chan struct{})
	wait := publishSteadily(ctx, t, f, "edge-a", 200, 10*time.Millisecond, stop)
	time.Sleep(time.Second)
	if err := h.Restart(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	close(stop)
	wait()
	waitStored(t, openCH(t, dsn), f.wantTotals(), time.Minute)
}

// ClickHouse is stopped while events keep arriving, stays away for a while
// (long enough for the server to drop the sink's idle reading consumer), and
// is started again: the totals in ClickHouse, in the events and in the
// rollup, are exactly those of the events sent.
func TestSinkSurvivesClickHouseOutage(t *testing.T) {
	_, nc := testenv.NATS(t)
	f := newFeed(t, nc)
	ctx := ctxFor(t, 3*time.Minute)
	dir := t.TempDir()
	ch, err := localdb.StartClickHouse(ctx, localdb.ClickHouseConfig{Dir: dir, Logger: testLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Stop(context.Background()) })
	_, port, _ := net.SplitHostPort(ch.Addr())
	tcpPort, _ := strconv.Atoi(port)
	dsn := "clickhouse://" + ch.Addr() + "/outage"

	cfg := testConfig(nc.ConnectedUrl(), dsn)
	cfg.WriteTimeout = 2 * time.Second
	cfg.BatchSize = 10_000 // to catch up quickly after the outage
	s := startSinkWith(t, cfg, sinkOptions{inactive: 2 * time.Second})
	stop := make(chan struct{})
	wait := publishSteadily(ctx, t, f, "edge-a", 100, 10*time.Millisecond, stop)

	time.Sleep(2 * time.Second)
	if err := ch.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	before := s.srv.Sink().Stats().Events.Load()
	time.Sleep(8 * time.Second)
	if ch, err = localdb.StartClickHouse(ctx, localdb.ClickHouseConfig{Dir: dir, TCPPort: tcpPort, HTTPPort: ch.HTTPPort(), Logger: testLog()}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	sent := wait()
	waitStored(t, openCH(t, dsn), f.wantTotals(), 2*time.Minute)
	st := s.srv.Sink().Stats()
	t.Logf("%d events sent; %d stored before the outage, %d in all; %d batches, %d repaired", sent, before, st.Events.Load(), st.Batches.Load(), st.Repairs.Load())
	if before == 0 || before >= uint64(sent) {
		t.Errorf("the outage did not fall in the middle of the stream: %d of %d stored before it", before, sent)
	}
}

// A sink started while ClickHouse is down waits for it, then writes
// everything that arrived in the meantime.
func TestSinkStartsBeforeClickHouse(t *testing.T) {
	_, nc := testenv.NATS(t)
	f := newFeed(t, nc)
	ctx := ctxFor(t, 2*time.Minute)
	dir := t.TempDir()
	ch, err := localdb.StartClickHouse(ctx, localdb.ClickHouseConfig{Dir: dir, Logger: testLog()})
	if err != nil {
		t.Fatal(err)
	}
	addr, httpPort := ch.Addr(), ch.HTTPPort()
	if err := ch.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	startSink(t, testConfig(nc.ConnectedUrl(), "clickhouse://"+addr+"/late"))
	if err := f.publish(ctx, f.make("edge-a", 3000, base), true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	_, port, _ := net.SplitHostPort(addr)
	tcpPort, _ := strconv.Atoi(port)
	if ch, err = localdb.StartClickHouse(ctx, localdb.ClickHouseConfig{Dir: dir, TCPPort: tcpPort, HTTPPort: httpPort, Logger: testLog()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Stop(context.Background()) })
	waitStored(t, openCH(t, "clickhouse://"+addr+"/late"), f.wantTotals(), time.Minute)
}
