package edge

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/catalog"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/limits"
	"github.com/tollgate/tollgate/pkg/llm"
)

// lastEvent waits for n usage events and returns the last one.
func (w *world) waitEvents(t *testing.T, n int) []*eventsv1.UsageEvent {
	t.Helper()
	var evs []*eventsv1.UsageEvent
	waitFor(t, "usage events", func() bool { evs = w.usageEvents(); return len(evs) >= n })
	if len(evs) != n {
		t.Fatalf("want %d usage events, got %d", n, len(evs))
	}
	return evs
}

func gpt4() *eventsv1.Model {
	return &eventsv1.Model{Name: "gpt-4", InputPricePerMillion: 30e9, OutputPricePerMillion: 60e9}
}

func TestChatRoundTripIsMeteredExactly(t *testing.T) {
	w := newWorld(t)
	e := w.edge(nil)
	secret, k := w.key(nil)
	waitFor(t, "key", func() bool { return e.keys.Len() == 1 })

	res, body := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody)
	if res.StatusCode != 200 || !strings.Contains(body, `"usage"`) {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	want, err := w.mock.ExpectedUsage(llm.Chat, []byte(chatBody))
	if err != nil {
		t.Fatal(err)
	}
	ev := w.waitEvents(t, 1)[0]
	cost := catalog.Cost(nil, gpt4(), want.InputTokens, want.OutputTokens)
	if ev.GetInputTokens() != want.InputTokens || ev.GetOutputTokens() != want.OutputTokens || ev.GetCost() != cost || ev.GetEstimated() {
		t.Fatalf("event %v, want usage %+v and cost %d", ev, want, cost)
	}
	if ev.GetKeyId() != k.GetId() || ev.GetAccount() != "acme" || ev.GetService() != "acme/openai" || ev.GetModel() != "gpt-4" ||
		ev.GetStatus() != 200 || ev.GetSequence() != 1 || ev.GetEdgeInstance() != e.Instance() || ev.GetStreamed() || ev.GetLatencyUs() <= 0 {
		t.Fatalf("event fields wrong: %v", ev)
	}
	if res.Header.Get("X-Ratelimit-Limit-Requests") != "" {
		t.Fatal("a key without limits got rate-limit headers")
	}
}

// readSSE reads a stream and records when each event arrived.
func readSSE(t *testing.T, res *http.Response) (events []string, arrivals []time.Time) {
	t.Helper()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "data: ") {
			events = append(events, strings.TrimPrefix(line, "data: "))
			arrivals = append(arrivals, time.Now())
		}
	}
	return events, arrivals
}

func stream(t *testing.T, url, path, secret, body string, hdr ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctxT(t), "POST", url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+secret)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func TestStreamPassesThroughAsItArrives(t *testing.T) {
	w := newWorld(t)
	e := w.edge(nil)
	secret, _ := w.key(nil)
	waitFor(t, "key", func() bool { return e.keys.Len() == 1 })
	body := `{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"stream please"}],"max_tokens":32}`

	// The client did not ask for usage: the edge asks upstream for it, meters
	// it, and keeps the usage-only chunk from the client.
	res := stream(t, e.url, "/v1/chat/completions", secret, body, "X-Mock-Chunk-Delay-Ms", "40")
	events, arrivals := readSSE(t, res)
	if len(events) < 4 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream: %v", events)
	}
	for _, ev := range events {
		if strings.Contains(ev, `"choices":[]`) {
			t.Fatalf("the client got a usage chunk it did not ask for: %s", ev)
		}
	}
	// Chunks arrive spread out, as the upstream sends them, not all at the end.
	if spread := arrivals[len(arrivals)-1].Sub(arrivals[0]); spread < 100*time.Millisecond {
		t.Fatalf("events arrived within %v of each other: the stream was buffered", spread)
	}
	want, _ := w.mock.ExpectedUsage(llm.Chat, []byte(body))
	ev := w.waitEvents(t, 1)[0]
	if !ev.GetStreamed() || ev.GetEstimated() || ev.GetInputTokens() != want.InputTokens || ev.GetOutputTokens() != want.OutputTokens {
		t.Fatalf("streamed event %v, want %+v", ev, want)
	}

	// A client that asks for usage gets the usage chunk.
	withUsage := strings.Replace(body, `"stream":true`, `"stream":true,"stream_options":{"include_usage":true}`, 1)
	events, _ = readSSE(t, stream(t, e.url, "/v1/chat/completions", secret, withUsage))
	found := false
	for _, ev := range events {
		found = found || strings.Contains(ev, `"usage":{`)
	}
	if !found {
		t.Fatalf("the client asked for usage and did not get it: %v", events)
	}

	// Anthropic streams are metered from message_start and message_delta.
	msgs := `{"model":"claude-3-opus","stream":true,"max_tokens":20,"messages":[{"role":"user","content":"hi"}]}`
	events, _ = readSSE(t, stream(t, e.url, "/v1/messages", secret, msgs, "anthropic-version", "2023-06-01"))
	if len(events) == 0 || !strings.Contains(events[len(events)-1], "message_stop") {
		t.Fatalf("anthropic stream: %v", events)
	}
	want, _ = w.mock.ExpectedUsage(llm.Messages, []byte(msgs))
	last := w.waitEvents(t, 3)[2]
	if last.GetModel() != "claude-3-opus" || last.GetInputTokens() != want.InputTokens || last.GetOutputTokens() != want.OutputTokens || last.GetEstimated() {
		t.Fatalf("anthropic event %v, want %+v", last, want)
	}
}

func TestAbandonedAndBrokenStreamsAreStillMetered(t *testing.T) {
	w := newWorld(t)
	e := w.edge(nil)
	secret, _ := w.key(nil)
	waitFor(t, "key", func() bool { return e.keys.Len() == 1 })
	body := `{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"a long story"}],"max_tokens":100}`

	// The client reads two events and hangs up.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("X-Mock-Chunk-Delay-Ms", "50")
	req.Header.Set("X-Mock-Chunks", "20")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(res.Body)
	for seen := 0; seen < 2; {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "data: ") {
			seen++
		}
	}
	cancel()
	res.Body.Close()
	ev := w.waitEvents(t, 1)[0]
	if ev.GetStatus() != 499 || !ev.GetEstimated() || ev.GetOutputTokens() <= 0 || ev.GetCost() <= 0 {
		t.Fatalf("abandoned stream: %v", ev)
	}

	// The upstream breaks mid-stream without usage.
	_, _ = readSSE(t, stream(t, e.url, "/v1/chat/completions", secret, body, "X-Mock-Break-After", "3"))
	ev = w.waitEvents(t, 2)[1]
	if !ev.GetEstimated() || ev.GetOutputTokens() <= 0 {
		t.Fatalf("broken stream: %v", ev)
	}
	// The edge added stream_options.include_usage upstream; the event counts
	// what the client sent.
	if ev.GetRequestBytes() != int64(len(body)) {
		t.Fatalf("request_bytes %d, want the client's %d", ev.GetRequestBytes(), len(body))
	}

	// Upstream errors pass through and cost what they report (nothing here).
	res2, body2 := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody, "X-Mock-Status", "429")
	if res2.StatusCode != 429 || !strings.Contains(body2, "error") {
		t.Fatalf("upstream 429: %d %s", res2.StatusCode, body2)
	}
	ev = w.waitEvents(t, 3)[2]
	if ev.GetStatus() != 429 || ev.GetCost() != 0 {
		t.Fatalf("upstream error event: %v", ev)
	}
}

// A buffered answer that reports no usage is metered from its text; one
// that breaks off upstream reaches the client as a 502 error (not a cut-off
// body under 200) and is metered, estimated, like a broken stream.
func TestBufferedAnswersWithoutUsageAreEstimated(t *testing.T) {
	w := newWorld(t)
	e := w.edge(nil)
	secret, _ := w.key(nil)
	waitFor(t, "key", func() bool { return e.keys.Len() == 1 })
	price := func(in, out int64) int64 { return catalog.Cost(&eventsv1.Service{}, gpt4(), in, out) }

	res, full := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody, "X-Mock-Omit-Usage", "1")
	if res.StatusCode != 200 || strings.Contains(full, `"usage"`) {
		t.Fatalf("without usage: %d %s", res.StatusCode, full)
	}
	ev := w.waitEvents(t, 1)[0]
	wantOut := llm.EstimateOutput(llm.Chat, []byte(full))
	if ev.GetStatus() != 200 || !ev.GetEstimated() || ev.GetInputTokens() <= 0 || wantOut <= 0 || ev.GetOutputTokens() != wantOut ||
		ev.GetCost() != price(ev.GetInputTokens(), wantOut) {
		t.Fatalf("answer without usage: %v; want estimated, %d output tokens, priced", ev, wantOut)
	}

	// Cut off a few bytes before its end, after the generated text.
	res, body := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody,
		"X-Mock-Omit-Usage", "1", "X-Mock-Break-After", strconv.Itoa(len(full)-3))
	if res.StatusCode != 502 || !strings.Contains(body, `"code":"upstream_error"`) || !strings.Contains(body, "broke off") {
		t.Fatalf("broken answer: %d %s; want 502 upstream_error", res.StatusCode, body)
	}
	ev = w.waitEvents(t, 2)[1]
	if ev.GetStatus() != 502 || !ev.GetEstimated() || ev.GetOutputTokens() != wantOut ||
		ev.GetCost() != price(ev.GetInputTokens(), wantOut) {
		t.Fatalf("broken answer's event: %v; want 502, estimated, %d output tokens, priced", ev, wantOut)
	} // response_bytes is what the client got, whoever wrote it: the answer
	// passed on, or the edge's own error.
	if got := w.waitEvents(t, 2); got[0].GetResponseBytes() != int64(len(full)) || got[1].GetResponseBytes() != int64(len(body)) {
		t.Fatalf("response_bytes %d and %d; the client got %d and %d bytes", got[0].GetResponseBytes(), got[1].GetResponseBytes(), len(full), len(body))
	}
}

func TestHTTPServiceIsMeteredPerRequest(t *testing.T) {
	w := newWorld(t)
	e := w.edge(nil)
	secret, _ := w.key(nil)
	waitFor(t, "key", func() bool { return e.keys.Len() == 1 })
	res, body := do(t, e.url, "PUT", "/v1/services/acme/echo/things/7?x=1", secret, `{"a":1}`)
	var echo struct {
		Method, Path, Query string
	}
	if err := json.Unmarshal([]byte(body), &echo); err != nil || res.StatusCode != 200 || echo.Method != "PUT" || echo.Path != "/things/7" || echo.Query != "x=1" {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	ev := w.waitEvents(t, 1)[0]
	if ev.GetCost() != 1_000_000 || ev.GetEndpoint() != "service" || ev.GetService() != "acme/echo" {
		t.Fatalf("service event: %v", ev)
	}
	if res, _ := do(t, e.url, "GET", "/v1/services/acme/nope/x", secret, ""); res.StatusCode != 404 {
		t.Fatalf("unknown service: %d", res.StatusCode)
	}
}

// Concurrent requests held in flight at one edge cannot spend the same money
// twice: reservations are taken before going upstream.
func TestReservationsStopConcurrentOverspend(t *testing.T) {
	w := newWorld(t)
	e := w.edge(nil)
	// gpt-4 costs $30/M in and $60/M out: one request of max_tokens 16 has a
	// worst case well under a cent; $0.002 lets a handful start.
	secret, _ := w.key(func(k *eventsv1.Key) {
		k.Limits = []*eventsv1.Limit{{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: 2_000_000, Window: eventsv1.Window_WINDOW_CALENDAR}}
	})
	waitFor(t, "key", func() bool { return e.keys.Len() == 1 })
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, _ := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody, "X-Mock-Delay-Ms", "300")
			mu.Lock()
			codes[res.StatusCode]++
			mu.Unlock()
			if res.StatusCode == 429 && res.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		}()
	}
	wg.Wait()
	evs := w.waitEvents(t, codes[200])
	var spent int64
	var maxCost int64
	for _, ev := range evs {
		spent += ev.GetCost()
		maxCost = max(maxCost, ev.GetCost())
	}
	if codes[429] == 0 || codes[200] == 0 {
		t.Fatalf("want some requests served and some refused, got %v", codes)
	}
	// The limit ends below zero by at most one request beyond its reservation.
	if spent > 2_000_000+maxCost {
		t.Fatalf("spent %d nano-dollars against a limit of 2000000 (codes %v)", spent, codes)
	}
	t.Logf("40 concurrent requests: %v, spent %d of 2000000", codes, spent)
}

func TestRequestsPerMinuteAndHeaders(t *testing.T) {
	w := newWorld(t)
	e := w.edge(nil)
	secret, _ := w.key(func(k *eventsv1.Key) {
		k.Limits = []*eventsv1.Limit{{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_MINUTE, Amount: 2, Window: eventsv1.Window_WINDOW_ROLLING}}
	})
	waitFor(t, "key", func() bool { return e.keys.Len() == 1 })
	for i := range 2 {
		res, _ := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody)
		if res.StatusCode != 200 || res.Header.Get("X-Ratelimit-Limit-Requests") != "2" {
			t.Fatalf("request %d: %d %v", i, res.StatusCode, res.Header)
		}
	}
	res, body := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody)
	if res.StatusCode != 429 || res.Header.Get("Retry-After") == "" || res.Header.Get("X-Ratelimit-Remaining-Requests") != "0" ||
		!strings.Contains(body, "rate_limit_exceeded") || !strings.Contains(body, "request limit per minute") {
		t.Fatalf("third request: %d %v %s", res.StatusCode, res.Header, body)
	}
	retry := res.Header.Get("Retry-After")
	if retry != "30" && retry != "31" && retry != "29" {
		t.Fatalf("Retry-After %s: 2 per minute refill one every 30 s", retry)
	}
	io.Discard.Write(nil)
}

// TestEitherHTTPServerServesAndNoticesHangUps runs the edge with its own
// HTTP/1.1 server and with net/http's: both answer HTTP/1.1 and HTTP/2
// without TLS, and both cancel the upstream request of a client that hangs
// up while it waits, which is then metered as 499 (not as the 200 the
// upstream would have answered a second later).
func TestEitherHTTPServerServesAndNoticesHangUps(t *testing.T) {
	defer func(d time.Duration) { watchInterval = d }(watchInterval)
	watchInterval = 20 * time.Millisecond
	for _, server := range []string{HTTPServerH1, HTTPServerStd} {
		t.Run(strings.ReplaceAll(server, "/", "_"), func(t *testing.T) {
			w := newWorld(t)
			e := w.edge(func(c *Config) { c.HTTPServer = server })
			secret, _ := w.key(nil)
			waitFor(t, "key", func() bool { return e.keys.Len() == 1 })

			res, body := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody)
			if res.StatusCode != 200 || res.ProtoMajor != 1 || !strings.Contains(body, `"usage"`) {
				t.Fatalf("HTTP/1.1: %d %s %s", res.StatusCode, res.Proto, body)
			}
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			h2c := &http.Client{Transport: &http.Transport{Protocols: &p}}
			req, _ := http.NewRequestWithContext(ctxT(t), "POST", e.url+"/v1/chat/completions", strings.NewReader(chatBody))
			req.Header.Set("Authorization", "Bearer "+secret)
			res, err := h2c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || res.ProtoMajor != 2 || !strings.Contains(string(data), `"usage"`) {
				t.Fatalf("h2c: %d %s %s", res.StatusCode, res.Proto, data)
			}

			// The client gives up after 100 ms; the mock would answer after
			// a second.
			ctx, cancel := context.WithTimeout(ctxT(t), 100*time.Millisecond)
			defer cancel()
			req, _ = http.NewRequestWithContext(ctx, "POST", e.url+"/v1/chat/completions", strings.NewReader(chatBody))
			req.Header.Set("Authorization", "Bearer "+secret)
			req.Header.Set("X-Mock-Delay-Ms", "1000")
			if res, err := http.DefaultClient.Do(req); err == nil {
				res.Body.Close()
				t.Fatalf("the client should have given up, got %d", res.StatusCode)
			}
			ev := w.waitEvents(t, 3)[2]
			if ev.GetStatus() != 499 {
				t.Fatalf("a client that hung up: event status %d, want 499 (the upstream request cancelled)", ev.GetStatus())
			}
		})
	}
}

// panicOnce is an upstream transport whose first round trip panics.
type panicOnce struct {
	next  http.RoundTripper
	calls atomic.Int64
}

func (p *panicOnce) RoundTrip(r *http.Request) (*http.Response, error) {
	if p.calls.Add(1) == 1 {
		panic("upstream transport broke")
	}
	return p.next.RoundTrip(r)
}

// A request that panics after its worst case was reserved gives the
// reservation back: held, it would leave the key short until a restart.
func TestPanicReleasesTheReservation(t *testing.T) {
	w := newWorld(t)
	// Less than one request's worst case (max_tokens 16): a request reserves
	// all of it (a reservation is capped at what is left), so a reservation
	// never given back would refuse the next request.
	secret, _ := w.key(func(k *eventsv1.Key) {
		k.Limits = []*eventsv1.Limit{{Metric: eventsv1.Metric_METRIC_TOKENS, Interval: eventsv1.Interval_INTERVAL_DAY,
			Amount: 10, Window: eventsv1.Window_WINDOW_ROLLING}}
	})
	var up *panicOnce
	e := w.edgeSetUp(nil, func(s *Server) {
		up = &panicOnce{next: s.upstream}
		s.upstream = up
	})
	ctx := ctxT(t)
	url := e.url
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/chat/completions", strings.NewReader(chatBody))
	req.Header.Set("Authorization", "Bearer "+secret)
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Fatal("the panicking request was answered 200")
		}
	}
	if res, body := do(t, url, "POST", "/v1/chat/completions", secret, chatBody); res.StatusCode != 200 {
		t.Fatalf("after a panic: %d %s, want 200 (the panicked request's reservation given back)", res.StatusCode, body)
	}
	if n := up.calls.Load(); n != 2 {
		t.Fatalf("upstream called %d times, want 2", n)
	}
	// Each request has its usage event: the panicked one costs nothing and
	// says it is estimated, with status 500.
	var evs []*eventsv1.UsageEvent
	waitFor(t, "usage events", func() bool { evs = w.usageEvents(); return len(evs) >= 2 })
	if len(evs) != 2 {
		t.Fatalf("%d usage events, want 2", len(evs))
	}
	if ev := evs[0]; ev.GetStatus() != 500 || !ev.GetEstimated() || ev.GetCost() != 0 || ev.GetInputTokens() != 0 {
		t.Errorf("the panicked request's event %v, want status 500, estimated, nothing charged", ev)
	}
	if ev := evs[1]; ev.GetStatus() != 200 || ev.GetCost() <= 0 {
		t.Errorf("the next request's event %v, want status 200 and a cost", ev)
	}
}

// What an HTTP service answers is passed on, but for the operator's: its
// cookies and its provider organisation. A HEAD answer has no body whatever
// its Content-Length says; an answer larger than the edge passes on is a
// 502, not a cut-off body under 200.
func TestServiceAnswersHeadersAndSizes(t *testing.T) {
	w := newWorld(t)
	raw := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		h := rw.Header()
		h.Set("Set-Cookie", "session=operator")
		h.Set("Openai-Organization", "org-operator")
		h.Set("X-Kept", "yes")
		switch r.URL.Path {
		case "/head":
			h.Set("Content-Length", "100")
			rw.WriteHeader(http.StatusOK)
		case "/fail":
			rw.WriteHeader(http.StatusInternalServerError)
		case "/big": // chunked: no Content-Length
			for range 2 {
				rw.Write(bytes.Repeat([]byte("x"), 1024)) //nolint:errcheck // the test reads it
				rw.(http.Flusher).Flush()
			}
		default:
			rw.Write([]byte(`{"ok":true}`)) //nolint:errcheck // as above
		}
	}))
	t.Cleanup(raw.Close)
	if err := w.catalog.PutService(ctxT(t), &eventsv1.Service{Id: "acme/raw", Adapter: eventsv1.Adapter_ADAPTER_HTTP, BaseUrl: raw.URL, RequestPrice: 1_000_000}, catalog.By("test")); err != nil {
		t.Fatal(err)
	}
	e := w.edgeSetUp(nil, func(s *Server) { s.maxResponse = 1500 })
	secret, _ := w.key(nil)
	waitFor(t, "key", func() bool { return e.keys.Len() == 1 })

	res, body := do(t, e.url, "GET", "/v1/services/acme/raw/ok", secret, "")
	if res.StatusCode != 200 || body != `{"ok":true}` || res.Header.Get("X-Kept") != "yes" {
		t.Fatalf("plain answer: %d %q %v", res.StatusCode, body, res.Header)
	}
	for _, name := range []string{"Set-Cookie", "Openai-Organization"} {
		if v := res.Header.Get(name); v != "" {
			t.Errorf("the upstream's %s reached the client: %q", name, v)
		}
	}
	if res, body := do(t, e.url, "HEAD", "/v1/services/acme/raw/head", secret, ""); res.StatusCode != 200 {
		t.Fatalf("HEAD: %d %q, want 200", res.StatusCode, body)
	}
	res, body = do(t, e.url, "GET", "/v1/services/acme/raw/big", secret, "")
	if res.StatusCode != 502 || !strings.Contains(body, "larger than this edge passes on") {
		t.Fatalf("an answer over the bound: %d %q, want 502", res.StatusCode, body)
	}
	if res, body := do(t, e.url, "GET", "/v1/services/acme/raw/fail", secret, ""); res.StatusCode != 500 {
		t.Fatalf("the service's own error: %d %q, want 500", res.StatusCode, body)
	}
	// The service answered the big one (it was the edge that could not pass
	// it on): charged its price, as the others it answered; its own server
	// error is not.
	var evs []*eventsv1.UsageEvent
	waitFor(t, "usage events", func() bool { evs = w.usageEvents(); return len(evs) >= 4 })
	for _, ev := range evs {
		want := int64(1_000_000)
		if ev.GetStatus() == 500 {
			want = 0
		}
		if ev.GetCost() != want {
			t.Errorf("status %d charged %d, want %d", ev.GetStatus(), ev.GetCost(), want)
		}
	}
}

// A request that went upstream and got no answer within the upstream
// timeout is a 504, and its input is charged, estimated, as for a client
// that hung up: the provider took it and may bill it. Before, it was a 502
// that cost nothing, however often it was repeated.
func TestNoAnswerInTimeIsChargedItsInput(t *testing.T) {
	w := newWorld(t)
	e := w.edge(func(c *Config) { c.UpstreamTimeout = 200 * time.Millisecond })
	secret, _ := w.key(nil)
	waitFor(t, "key", func() bool { return e.keys.Len() == 1 })
	res, body := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody, "X-Mock-Delay-Ms", "2000")
	if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, "upstream_timeout") {
		t.Fatalf("no answer in time: %d %s, want 504 upstream_timeout", res.StatusCode, body)
	}
	var evs []*eventsv1.UsageEvent
	waitFor(t, "usage event", func() bool { evs = w.usageEvents(); return len(evs) >= 1 })
	ev := evs[0]
	if ev.GetStatus() != 504 || !ev.GetEstimated() || ev.GetInputTokens() <= 0 || ev.GetOutputTokens() != 0 || ev.GetCost() <= 0 {
		t.Fatalf("event %v, want status 504, estimated, its input tokens charged and no output", ev)
	}
}

// An upstream that compresses its answer although the edge asked for
// identity is still metered from its real usage; the client gets it plain.
func TestGzippedAnswerIsMeteredFromItsUsage(t *testing.T) {
	w := newWorld(t)
	gz := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		w.mock.ServeHTTP(rec, r)
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(rec.Body.Bytes()) //nolint:errcheck // a bytes.Buffer
		zw.Close()
		rw.Header().Set("Content-Type", rec.Header().Get("Content-Type"))
		rw.Header().Set("Content-Encoding", "gzip")
		rw.WriteHeader(rec.Code)
		rw.Write(b.Bytes()) //nolint:errcheck // the test reads it
	}))
	t.Cleanup(gz.Close)
	ctx := ctxT(t)
	if err := w.catalog.PutService(ctx, &eventsv1.Service{Id: "acme/gz", Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: gz.URL}, catalog.By("test")); err != nil {
		t.Fatal(err)
	}
	if err := w.catalog.PutModel(ctx, &eventsv1.Model{Name: "gpt-gz", Service: "acme/gz", InputPricePerMillion: 30e9, OutputPricePerMillion: 60e9, MaxOutputTokens: 4096}, "", catalog.By("test"), catalog.Unconditional); err != nil {
		t.Fatal(err)
	}
	e := w.edge(nil)
	secret, _ := w.key(nil)
	waitFor(t, "key", func() bool { return e.keys.Len() == 1 })
	for i, body := range []string{
		strings.Replace(chatBody, "gpt-4", "gpt-gz", 1),
		`{"model":"gpt-gz","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}],"max_tokens":16}`,
	} {
		res, got := do(t, e.url, "POST", "/v1/chat/completions", secret, body)
		if res.StatusCode != 200 || !strings.Contains(got, `"prompt_tokens"`) || res.Header.Get("Content-Encoding") != "" {
			t.Fatalf("request %d: %d %q (Content-Encoding %q), want the plain answer", i, res.StatusCode, got, res.Header.Get("Content-Encoding"))
		}
		ev := w.waitEvents(t, i+1)[i]
		if ev.GetEstimated() || ev.GetOutputTokens() <= 0 {
			t.Fatalf("request %d's event: %v, want the upstream's usage (not estimated)", i, ev)
		}
	}
}

// A request whose usage event waits to be queued (the bus and the spool both
// far behind) holds no lock that others need: a change to its key applies,
// and other keys are served meanwhile. It used to wait holding its key's
// lock, which the key's change then waited for while holding the ring's:
// every request of every key stopped.
func TestWaitingUsageEventBlocksNoOtherRequest(t *testing.T) {
	w := newWorld(t)
	secretA, keyA := w.key(nil)
	secretB, _ := w.key(nil)
	held, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	e := w.edgeSetUp(nil, func(s *Server) {
		publish := s.publish
		s.publish = func(ev *eventsv1.UsageEvent) uint64 {
			if ev.GetKeyId() == keyA.GetId() && !first.Swap(true) {
				close(held)
				<-release
			}
			return publish(ev)
		}
	})
	defer close(release)
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(chatBody))
		req.Header.Set("Authorization", "Bearer "+secretA)
		if res, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	}()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the first request's usage event was never published")
	}

	w.change(keyA, func(cur *eventsv1.Key) (*eventsv1.KeyEvent, error) { return keys.Revoke(time.Now(), "t", cur) })
	waitFor(t, "key A's revocation applied while its request's event waits", func() bool {
		res, _ := do(t, e.url, "POST", "/v1/chat/completions", secretA, chatBody)
		return res.StatusCode == http.StatusUnauthorized
	})
	if res, body := do(t, e.url, "POST", "/v1/chat/completions", secretB, chatBody); res.StatusCode != 200 {
		t.Fatalf("key B while key A's event waits: %d %s", res.StatusCode, body)
	}
	release <- struct{}{}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the held request did not finish")
	}
}

// A balance that already holds a request can come in between the request's
// usage event being queued and its settlement: the request is then not
// charged again on top of the balance's states.
func TestBalanceThatHoldsTheRequestBeforeItSettles(t *testing.T) {
	w := newWorld(t)
	id := limits.ID{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_DAY}
	secret, key := w.key(func(k *eventsv1.Key) {
		k.Limits = []*eventsv1.Limit{{Metric: id.Metric, Interval: id.Interval, Amount: 10, Window: eventsv1.Window_WINDOW_CALENDAR}}
	})
	var srv *Server
	e := w.edgeSetUp(nil, func(s *Server) {
		srv = s
		publish := s.publish
		s.publish = func(ev *eventsv1.UsageEvent) uint64 {
			seq := publish(ev)
			// Metering folded it at once: 4 requests used today, this one
			// among them.
			s.keys.ApplyBalance(&eventsv1.KeyBalance{KeyId: ev.GetKeyId(), UpdatedAt: timestamppb.Now(),
				Folded: []*eventsv1.EdgeProgress{{EdgeInstance: ev.GetEdgeInstance(), Watermark: seq}},
				Limits: []*eventsv1.LimitBalance{{Metric: id.Metric, Interval: id.Interval, Used: 4,
					At: timestamppb.New(time.Now().UTC().Truncate(24 * time.Hour))}}}, ev.GetEdgeInstance(), 1<<40+seq)
			return seq
		}
	})
	if res, body := do(t, e.url, "POST", "/v1/chat/completions", secret, chatBody); res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	entry, ok := srv.keys.Get(key.GetId())
	if !ok {
		t.Fatal("key not loaded")
	}
	entry.State.Mu.Lock()
	st, _ := entry.State.Limits.State(id)
	entry.State.Mu.Unlock()
	if st.Used != 4 {
		t.Fatalf("requests used %d, want 4 (the balance's, which holds this request)", st.Used)
	}
}
