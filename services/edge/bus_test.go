package edge

import (
	"bufio"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/catalog"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/testenv"
)

// load sends requests from a few goroutines until stop is closed and reports
// each answer's status and body.
func load(t *testing.T, url, secret string, stop <-chan struct{}, onAnswer func(status int, body string, at time.Time)) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, body := do(t, url, "POST", "/v1/chat/completions", secret, chatBody)
				onAnswer(res.StatusCode, body, time.Now())
			}
		}()
	}
	return &wg
}

// A key revoked or changed while two edges serve it under load is refused as
// the change says at both within one second (DESIGN.md section 5).
func TestKeyChangesReachEveryEdgeWithinASecond(t *testing.T) {
	tests := []struct {
		name   string
		change func(now time.Time, cur *eventsv1.Key) (*eventsv1.KeyEvent, error)
		status int
		code   string
	}{
		{"revoked", func(now time.Time, cur *eventsv1.Key) (*eventsv1.KeyEvent, error) {
			return keys.Revoke(now, "t", cur)
		}, 401, "key_revoked"},
		{"models restricted", func(now time.Time, cur *eventsv1.Key) (*eventsv1.KeyEvent, error) {
			next := proto.CloneOf(cur)
			next.Models = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED, Names: []string{"gpt-3.5-turbo"}}
			return keys.Update(now, "t", cur, next, []string{"models"})
		}, 403, "model_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			edges := []*testEdge{w.edge(nil), w.edge(nil)}
			secret, k := w.key(nil)
			for _, e := range edges {
				waitFor(t, "key at each edge", func() bool { return e.keys.Len() == 1 })
			}
			stop := make(chan struct{})
			var mu sync.Mutex
			lastOK := map[int]time.Time{}
			firstRefused := map[int]time.Time{}
			var served atomic.Int64
			var groups []*sync.WaitGroup
			for i, e := range edges {
				groups = append(groups, load(t, e.url, secret, stop, func(status int, body string, at time.Time) {
					mu.Lock()
					defer mu.Unlock()
					switch {
					case status == 200:
						lastOK[i] = at
						served.Add(1)
					case status == tt.status && strings.Contains(body, `"code":"`+tt.code+`"`):
						if firstRefused[i].IsZero() {
							firstRefused[i] = at
						}
					default:
						t.Errorf("edge %d: %d %s, want 200 or %d %s", i, status, body, tt.status, tt.code)
					}
				}))
			}
			waitFor(t, "load on both edges", func() bool { return served.Load() > 100 })
			changedAt := time.Now()
			w.change(k, func(cur *eventsv1.Key) (*eventsv1.KeyEvent, error) { return tt.change(changedAt, cur) })
			time.Sleep(1500 * time.Millisecond)
			close(stop)
			for _, g := range groups {
				g.Wait()
			}
			for i := range edges {
				if firstRefused[i].IsZero() {
					t.Fatalf("edge %d never refused the key after the change", i)
				}
				if d := lastOK[i].Sub(changedAt); d > time.Second {
					t.Fatalf("edge %d served the key as before %v after the change", i, d)
				}
				t.Logf("edge %d: last success %v after the change was appended, first refusal after %v", i,
					lastOK[i].Sub(changedAt).Round(time.Millisecond), firstRefused[i].Sub(changedAt).Round(time.Millisecond))
			}
		})
	}
}

// The bus dies under load: the edge keeps serving (fail-open), spools the
// usage events, and after the bus is back every request has its event.
func TestBusOutageLosesNoUsageEvent(t *testing.T) {
	h := testenv.NATSRestartable(t)
	w := newWorldOn(t, h.URL())
	e := w.edge(nil)
	secret, _ := w.key(nil)
	waitFor(t, "key", func() bool { return e.keys.Len() == 1 })

	stop := make(chan struct{})
	var ok, failed atomic.Int64
	g := load(t, e.url, secret, stop, func(status int, _ string, _ time.Time) {
		if status == 200 {
			ok.Add(1)
		} else {
			failed.Add(1)
		}
	})
	waitFor(t, "load", func() bool { return ok.Load() > 200 })
	h.Shutdown()
	during := ok.Load()
	time.Sleep(700 * time.Millisecond)
	servedWhileDown := ok.Load() - during
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "more load after the bus is back", func() bool { return ok.Load() > during+servedWhileDown+200 })
	close(stop)
	g.Wait()
	if servedWhileDown == 0 {
		t.Fatal("the edge served nothing while the bus was down (fail-open expected)")
	}
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed", failed.Load())
	}
	total := ok.Load()
	waitFor(t, "every usage event in the stream", func() bool {
		pub, _ := e.usage.Stats()
		return int64(pub) >= total
	})
	// Every event, whatever the order: the spool is replayed in order, but
	// the tail of the batch in flight when the bus went away can reach the
	// stream first (the NATS client re-sends what it held on reconnect), and
	// a copy of a stored event may come again. Metering and the sink take
	// events in any order and de-duplicate them by (instance, sequence).
	evs := w.usageEvents()
	seen := map[uint64]bool{}
	for _, ev := range evs {
		seen[ev.GetSequence()] = true
	}
	for seq := uint64(1); seq <= uint64(total); seq++ {
		if !seen[seq] {
			t.Fatalf("usage event %d of %d is missing", seq, total)
		}
	}
	_, spooled := e.usage.Stats()
	t.Logf("%d requests, %d served while the bus was down, %d events spooled, %d stored (%d distinct)", total, servedWhileDown, spooled, len(evs), len(seen))
}

// The catalog reaches a running edge through the CATALOG bucket: a new
// price, a new model and a deleted service apply without a restart.
func TestCatalogChangesApplyWithoutRestart(t *testing.T) {
	w := newWorld(t)
	e := w.edge(nil)
	secret, _ := w.key(nil)
	waitFor(t, "key", func() bool { return e.keys.Len() == 1 })
	ctx := ctxT(t)
	published := func() uint64 { p, _ := e.usage.Stats(); return p }
	request := func(body string) (int, *eventsv1.UsageEvent) {
		t.Helper()
		before := published()
		res, text := do(t, e.url, "POST", "/v1/chat/completions", secret, body)
		if res.StatusCode != 200 {
			return res.StatusCode, nil
		}
		waitFor(t, "the usage event", func() bool { return published() > before })
		evs := w.usageEvents()
		if len(evs) == 0 {
			t.Fatalf("no usage event after %s", text)
		}
		return res.StatusCode, evs[len(evs)-1]
	}

	svc := &eventsv1.Service{Id: "acme/openai", Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: w.upstream.URL}
	_, before := request(chatBody)
	newPrice := &eventsv1.Model{Name: "gpt-4", Service: "acme/openai", InputPricePerMillion: 3e9, OutputPricePerMillion: 6e9, MaxOutputTokens: 8192}
	if err := w.catalog.PutModel(ctx, newPrice, "", catalog.By("test"), catalog.Unconditional); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new price at the edge", func() bool {
		m, _, _ := e.catalog.Snapshot().Model("gpt-4")
		return m.GetInputPricePerMillion() == 3e9
	})
	_, after := request(chatBody)
	if want := catalog.Cost(svc, newPrice, after.GetInputTokens(), after.GetOutputTokens()); after.GetCost() != want || want == before.GetCost() {
		t.Fatalf("cost after the price change %d, want %d (before the change %d)", after.GetCost(), want, before.GetCost())
	}

	mini := strings.Replace(chatBody, "gpt-4", "gpt-4o-mini", 1)
	if status, _ := request(mini); status != 404 {
		t.Fatalf("gpt-4o-mini before it is in the catalog: %d, want 404", status)
	}
	if err := w.catalog.PutModel(ctx, &eventsv1.Model{Name: "gpt-4o-mini", Service: "acme/openai", InputPricePerMillion: 15e7, OutputPricePerMillion: 6e8, MaxOutputTokens: 4096}, "", catalog.By("test"), catalog.Unconditional); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new model served", func() bool {
		res, _ := do(t, e.url, "POST", "/v1/chat/completions", secret, mini)
		return res.StatusCode == 200
	})

	if err := w.catalog.Delete(ctx, catalog.ServiceKey("acme/openai"), catalog.By("test"), catalog.Unconditional); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted service's models refused", func() bool {
		res, body := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody)
		return res.StatusCode == 404 && strings.Contains(body, "model_not_found")
	})
}

// With --fail-closed the edge refuses requests it could not meter while the
// bus is away (503, nothing sent upstream), and serves again once it is back.
func TestFailClosedRefusesWhileTheBusIsAway(t *testing.T) {
	h := testenv.NATSRestartable(t)
	w := newWorldOn(t, h.URL())
	e := w.edge(func(c *Config) { c.FailClosed = true })
	secret, _ := w.key(nil)
	waitFor(t, "key", func() bool { return e.keys.Len() == 1 })
	if res, body := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody); res.StatusCode != 200 {
		t.Fatalf("with the bus up: %d %s", res.StatusCode, body)
	}
	h.Shutdown()
	waitFor(t, "the edge to notice the bus is away", func() bool { return !e.busUp() })
	calls := w.calls.Load()
	res, body := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody)
	if res.StatusCode != 503 || !strings.Contains(body, `"code":"bus_unavailable"`) {
		t.Fatalf("with the bus away: %d %s, want 503 bus_unavailable", res.StatusCode, body)
	}
	if n := w.calls.Load() - calls; n != 0 {
		t.Fatalf("a refused request reached the upstream %d times", n)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the edge to serve again", func() bool {
		res, _ := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody)
		return res.StatusCode == 200
	})
	published, spooled := e.usage.Stats()
	if spooled != 0 {
		t.Fatalf("%d events spooled: the refused request must not be metered", spooled)
	}
	waitFor(t, "both served requests' events", func() bool { p, _ := e.usage.Stats(); return p >= 2 })
	if evs := w.usageEvents(); len(evs) != 2 {
		t.Fatalf("%d usage events (published %d), want the 2 served requests'", len(evs), published)
	}
}

// A (re)started edge applies the balances metering published before it
// serves: a key that has used up a limit is refused from the first request,
// not given a full limit again.
func TestStartedEdgeRespectsStoredBalances(t *testing.T) {
	w := newWorld(t)
	secret, k := w.key(func(k *eventsv1.Key) {
		k.Limits = []*eventsv1.Limit{{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: 5, Window: eventsv1.Window_WINDOW_ROLLING}}
	})
	ctx := ctxT(t)
	kv, err := bus.EnsureBalances(ctx, w.js, bus.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	data, _ := proto.Marshal(&eventsv1.KeyBalance{KeyId: k.GetId(), Account: k.GetAccount(), Requests: 5, UpdatedAt: timestamppb.New(now),
		Limits: []*eventsv1.LimitBalance{{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_DAY, Level: 0, At: timestamppb.New(now)}}})
	if _, err := kv.Put(ctx, k.GetId(), data); err != nil {
		t.Fatal(err)
	}
	for range 5 { // fresh edges, each as after a restart
		e := w.edge(nil)
		res, body := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody)
		if res.StatusCode != 429 {
			t.Fatalf("first request at a started edge: %d %s, want 429 (the stored balance is spent)", res.StatusCode, body)
		}
		e.stop()
	}
}

// Streams that Shutdown does not drain (net/http's server returns at its
// deadline and leaves handlers running; HTTP/2 connections go to h1's
// fallback server) are ended when the edge stops, and their usage events
// still reach the bus before the publisher stops.
func TestStopMetersStreamsShutdownDoesNotDrain(t *testing.T) {
	for _, tt := range []struct {
		name   string
		server string
		h2c    bool
	}{
		{"net/http server", HTTPServerStd, false},
		{"h1 server, HTTP/2 client", HTTPServerH1, true},
	} {
		t.Run(strings.ReplaceAll(tt.name, "/", "_"), func(t *testing.T) {
			w := newWorld(t)
			e := w.edge(func(c *Config) { c.HTTPServer, c.ShutdownTimeout = tt.server, 200*time.Millisecond })
			secret, _ := w.key(nil)
			waitFor(t, "key", func() bool { return e.keys.Len() == 1 })
			client := &http.Client{Transport: &http.Transport{Protocols: new(http.Protocols)}}
			if tt.h2c {
				client.Transport.(*http.Transport).Protocols.SetUnencryptedHTTP2(true)
			} else {
				client.Transport.(*http.Transport).Protocols.SetHTTP1(true)
			}
			body := `{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"a long story"}],"max_tokens":100}`
			req, _ := http.NewRequestWithContext(ctxT(t), "POST", e.url+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+secret)
			req.Header.Set("X-Mock-Chunks", "50")
			req.Header.Set("X-Mock-Chunk-Delay-Ms", "100") // 5 s of answer
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if wantMajor := map[bool]int{false: 1, true: 2}[tt.h2c]; res.ProtoMajor != wantMajor {
				t.Fatalf("the stream went over HTTP/%d, want HTTP/%d", res.ProtoMajor, wantMajor)
			}
			if _, err := bufio.NewReader(res.Body).ReadString('\n'); err != nil {
				t.Fatal(err)
			}
			e.stop() // the stream is in flight
			evs := w.usageEvents()
			if len(evs) != 1 || !evs[0].GetStreamed() {
				t.Fatalf("%d usage events after the edge stopped mid-stream, want the stream's", len(evs))
			}
		})
	}
}

// An edge started while the bus is away comes up and says it is not ready
// (it does not exit, which would make it restart in a loop), then loads what
// it needs and serves once the bus is there.
func TestEdgeStartsWhileTheBusIsAway(t *testing.T) {
	h := testenv.NATSRestartable(t)
	w := newWorldOn(t, h.URL())
	secret, _ := w.key(nil)
	h.Shutdown()
	e := w.startEdge(nil, nil)
	res, body := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody)
	if res.StatusCode != 503 || !strings.Contains(body, "not_ready") {
		t.Fatalf("with the bus away: %d %s, want 503 not_ready", res.StatusCode, body)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	if err := e.WaitReady(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if res, body := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody); res.StatusCode != 200 {
		t.Fatalf("once the bus is back: %d %s", res.StatusCode, body)
	}
	waitFor(t, "the request's usage event", func() bool { p, _ := e.usage.Stats(); return p == 1 })
}
