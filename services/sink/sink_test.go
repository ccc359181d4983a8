package sink

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pkg/testenv"
)

var base = time.Date(2025, 3, 31, 23, 0, 0, 0, time.UTC) // batches span two months

func newEnv(t *testing.T) (natsURL, dsn string, f *feed) {
	t.Helper()
	_, nc := testenv.NATS(t)
	addr, db := testenv.ClickHouse(t)
	return nc.ConnectedUrl(), fmt.Sprintf("clickhouse://%s/%s", addr, db), newFeed(t, nc)
}

// Every event once, though some reach the stream twice: once more within the
// stream's de-duplication window (hidden by the bus) and once more without a
// message id (as an edge's spool replayed after the window), which only the
// sink can recognise.
func TestSinkStoresEachEventOnce(t *testing.T) {
	natsURL, dsn, f := newEnv(t)
	ctx := ctxFor(t, 2*time.Minute)
	evs := f.make("edge-a", 5000, base)
	if err := f.publish(ctx, evs, true); err != nil {
		t.Fatal(err)
	}
	if err := f.publish(ctx, evs[:1000], true); err != nil {
		t.Fatal(err)
	}
	if err := f.publish(ctx, evs[2000:3500], false); err != nil {
		t.Fatal(err)
	}
	s := startSink(t, testConfig(natsURL, dsn))
	more := f.make("edge-b", 3000, base)
	if err := f.publish(ctx, more, true); err != nil {
		t.Fatal(err)
	}
	if err := f.publish(ctx, append(evs[4000:], more[:100]...), false); err != nil {
		t.Fatal(err)
	}
	conn := openCH(t, dsn)
	waitStored(t, conn, f.wantTotals(), time.Minute)
	// The last messages are all copies: wait for the sink to get to them.
	st := s.srv.Sink().Stats()
	for deadline := time.Now().Add(10 * time.Second); st.Duplicates.Load() < 2600 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if st.Events.Load() != 8000 || st.Duplicates.Load() != 1500+1100 {
		t.Errorf("stats: %d events, %d duplicates; want 8000 and 2600", st.Events.Load(), st.Duplicates.Load())
	}
	if err := s.stop(); err != nil {
		t.Fatalf("sink stopped with %v", err)
	}
}

// A sink that starts again reads on from where it stopped: it neither writes
// the events before again nor misses those published while it was down.
func TestSinkResumesAfterRestart(t *testing.T) {
	natsURL, dsn, f := newEnv(t)
	ctx := ctxFor(t, 2*time.Minute)
	cfg := testConfig(natsURL, dsn)
	cfg.ShutdownTimeout = 5 * time.Second
	conn := openCH(t, dsn)
	for round := range 3 {
		s := startSink(t, cfg)
		if err := f.publish(ctx, f.make("edge-a", 3000, base), true); err != nil {
			t.Fatal(err)
		}
		waitStored(t, conn, f.wantTotals(), time.Minute)
		if err := s.stop(); err != nil {
			t.Fatalf("round %d: sink stopped with %v", round, err)
		}
		if err := f.publish(ctx, f.make("edge-b", 1000, base), true); err != nil {
			t.Fatal(err)
		}
	}
	startSink(t, cfg)
	waitStored(t, conn, f.wantTotals(), time.Minute)
}

// A message that is not a usage event is skipped, not retried forever.
func TestSinkSkipsMessagesThatAreNotUsageEvents(t *testing.T) {
	natsURL, dsn, f := newEnv(t)
	ctx := ctxFor(t, time.Minute)
	if _, err := f.js.Publish(ctx, "tollgate.usage.0.acme.key_x", []byte(strings.Repeat("\xff", 10))); err != nil {
		t.Fatal(err)
	}
	if err := f.publish(ctx, f.make("edge-a", 10, base), true); err != nil {
		t.Fatal(err)
	}
	s := startSink(t, testConfig(natsURL, dsn))
	waitStored(t, openCH(t, dsn), f.wantTotals(), time.Minute)
	if n := s.srv.Sink().Stats().Invalid.Load(); n != 1 {
		t.Errorf("invalid messages = %d, want 1", n)
	}
}

func TestSinkHealthEndpoints(t *testing.T) {
	natsURL, dsn, _ := newEnv(t)
	cfg := testConfig(natsURL, dsn)
	cfg.Listen = "127.0.0.1:0"
	s := startSink(t, cfg)
	url := "http://" + s.srv.listener.Addr().String()
	get := func(path string) (int, string) {
		res, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "tollgate_sink_events_written_total 0") {
		t.Errorf("/metrics = %d %q", code, body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get("/readyz")
		if code == http.StatusOK && strings.Contains(body, "events 0") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %q", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
