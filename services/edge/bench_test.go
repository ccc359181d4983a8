package edge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/catalog"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/llm"
	"github.com/tollgate/tollgate/pkg/mockllm"
	"github.com/tollgate/tollgate/pkg/testenv"
	"github.com/tollgate/tollgate/services/edge/internal/keyring"
)

// The benchmarks and fuzz tests drive Server.Handler() in memory: no client
// socket, and an upstream that is an http.RoundTripper answering from
// memory. What they measure and exercise is the edge's own code: key lookup
// (HMAC of the secret, map lookup), the checks, the body parse, reservation,
// the forward through net/http's client (minus the network), the copy of the
// answer, settlement and the usage event.

// perfKey is a key a rig creates; revoke appends a revocation after it.
// The rig waits until the edge's verdict on the key is want (Found unless
// revoked; Expired for a key whose edit makes it expire within moments).
type perfKey struct {
	name   string
	edit   func(k *eventsv1.Key)
	revoke bool
	want   keyring.Verdict
}

// perfRig is an edge on an embedded NATS with a catalog and keys, its
// upstream replaced by an in-memory RoundTripper.
type perfRig struct {
	srv     *Server
	h       http.Handler
	secrets map[string]string
	// usage receives every usage event, in collectUsage mode.
	usage chan *eventsv1.UsageEvent
}

// usageMode is what happens to a rig's usage events.
type usageMode int

const (
	// publishUsage runs the edge as in production (Server.Run): the usage
	// publisher sends every event to the embedded NATS, which stores it.
	publishUsage usageMode = iota
	// drainUsage runs only the key and catalog followers, and takes the
	// events off the publisher's queue (Publisher.Consume) and drops them,
	// so that a benchmark measures the request path alone, in steady state.
	drainUsage
	// collectUsage is drainUsage handing each event to perfRig.usage,
	// which the test must read.
	collectUsage
)

// perfModels is the rig's catalog: the harness's models and one each for
// completions and embeddings.
var perfModels = []*eventsv1.Model{
	{Name: "gpt-4", Service: "acme/openai", InputPricePerMillion: 30e9, OutputPricePerMillion: 60e9, MaxOutputTokens: 8192},
	{Name: "gpt-3.5-turbo", Service: "acme/openai", InputPricePerMillion: 5e8, OutputPricePerMillion: 15e8, MaxOutputTokens: 4096},
	{Name: "gpt-3.5-turbo-instruct", Service: "acme/openai", InputPricePerMillion: 15e8, OutputPricePerMillion: 2e9, MaxOutputTokens: 4096},
	{Name: "text-embedding-3-small", Service: "acme/openai", InputPricePerMillion: 2e7},
	{Name: "claude-3-opus", Service: "acme/anthropic", InputPricePerMillion: 15e9, OutputPricePerMillion: 75e9, MaxOutputTokens: 4096},
}

func newPerfRig(tb testing.TB, mode usageMode, upstream http.RoundTripper, ks ...perfKey) *perfRig {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, nc := testenv.NATS(tb)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	keyLog, err := bus.NewKeyLog(ctx, js, bus.StreamOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	hasher, err := keys.NewHasher([]byte(testPepper), "p1")
	if err != nil {
		tb.Fatal(err)
	}
	store, err := catalog.Open(ctx, js, 1)
	if err != nil {
		tb.Fatal(err)
	}
	// The host is never dialled: upstream answers every request.
	for _, s := range []*eventsv1.Service{
		{Id: "acme/openai", Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: "http://upstream.invalid"},
		{Id: "acme/anthropic", Adapter: eventsv1.Adapter_ADAPTER_ANTHROPIC, BaseUrl: "http://upstream.invalid"},
	} {
		if err := store.PutService(ctx, s, catalog.By("test")); err != nil {
			tb.Fatal(err)
		}
	}
	for _, m := range perfModels {
		if err := store.PutModel(ctx, m, "", catalog.By("test"), catalog.Unconditional); err != nil {
			tb.Fatal(err)
		}
	}
	r := &perfRig{secrets: map[string]string{}}
	want := map[string]keyring.Verdict{}
	for _, pk := range ks {
		k := &eventsv1.Key{Account: "acme", Name: pk.name, Permissions: []eventsv1.Permission{eventsv1.Permission_PERMISSION_PREDICT}}
		if pk.edit != nil {
			pk.edit(k)
		}
		ev, secret, err := keys.Create(time.Now(), "bench", hasher, k, "en_")
		if err != nil {
			tb.Fatalf("key %s: %v", pk.name, err)
		}
		rev, err := keyLog.Append(ctx, ev, 0)
		if err != nil {
			tb.Fatal(err)
		}
		want[secret] = pk.want
		if pk.revoke {
			rv, err := keys.Revoke(time.Now(), "bench", ev.GetKey())
			if err != nil {
				tb.Fatal(err)
			}
			if _, err := keyLog.Append(ctx, rv, rev); err != nil {
				tb.Fatal(err)
			}
			want[secret] = keyring.Revoked
		}
		r.secrets[pk.name] = secret
	}

	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0" // New listens; nothing connects
	cfg.NATSURL = nc.ConnectedUrl()
	cfg.Pepper = testPepper
	cfg.SpoolDir = tb.TempDir()
	runCtx, stop := context.WithCancel(context.Background())
	s, err := New(runCtx, cfg, quiet)
	if err != nil {
		stop()
		tb.Fatal(err)
	}
	s.upstream = upstream
	var wg sync.WaitGroup
	switch mode {
	case publishUsage:
		wg.Go(func() {
			if err := s.Run(runCtx); err != nil {
				tb.Errorf("edge: %v", err)
			}
		})
	case drainUsage, collectUsage:
		var out chan<- *eventsv1.UsageEvent
		if mode == collectUsage {
			r.usage = make(chan *eventsv1.UsageEvent, 16)
			out = r.usage
		}
		wg.Go(func() {
			keepRunning(runCtx, quiet, "keyring", func(c context.Context) error { return s.keys.Run(c, s.js) })
		})
		wg.Go(func() {
			keepRunning(runCtx, quiet, "catalog", s.watchCatalog)
		})
		wg.Go(func() { s.ensureUsageStream(runCtx) })
		wg.Go(func() {
			keepRunning(runCtx, quiet, "balances", func(c context.Context) error { return s.keys.WatchBalances(c, s.js, s.Instance()) })
		})
		wg.Go(func() {
			s.usage.Consume(runCtx, func(evs []*eventsv1.UsageEvent) {
				for _, ev := range evs {
					if out == nil {
						continue
					}
					select {
					case out <- ev:
					case <-runCtx.Done():
						return
					}
				}
			})
		})
	}
	tb.Cleanup(func() {
		stop()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			tb.Error("edge did not stop")
		}
		s.Close()
	})
	if err := s.WaitReady(ctx); err != nil {
		tb.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		ok := true
		for secret, v := range want {
			_, got := s.keys.Lookup(secret, time.Now())
			ok = ok && got == v
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatal("the keys did not reach the edge")
		}
	}
	r.srv, r.h = s, s.Handler()
	return r
}

// cannedUpstream is an in-memory upstream: a RoundTripper that answers from
// prepared bytes, with no socket. It stands in for the network in the
// benchmark so that what is measured is the edge's code; that is acceptable
// only in a benchmark (the load test in scripts/loadtest measures the real
// thing). A streamed answer is handed out one SSE event per Read, as a
// provider flushing each event over the network would deliver it, so the
// edge's per-chunk work runs once per event.
type cannedUpstream struct {
	plain  cannedAnswer
	stream map[string]cannedAnswer // by X-Mock-Chunks
	bodies sync.Pool               // of *cannedBody
}

type cannedAnswer struct {
	header http.Header // shared, read-only
	events [][]byte
	whole  [][]byte // the events in one piece, for benchReadsHeader: 1
	length int64    // Content-Length: as a server sends it with a buffered answer, -1 with a stream
}

// benchReadsHeader set to 1 makes the canned upstream hand out a whole
// stream in one Read, as a fast upstream's events arrive on loopback. The
// edge passes X-Mock-* headers upstream.
const benchReadsHeader = "X-Mock-Bench-Reads"

func (u *cannedUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body) //nolint:errcheck // as a transport would send it
		req.Body.Close()
	}
	a := u.plain
	if n := req.Header.Get(mockllm.HeaderChunks); n != "" {
		var ok bool
		if a, ok = u.stream[n]; !ok {
			return nil, fmt.Errorf("no canned stream of %s pieces", n)
		}
	}
	body, _ := u.bodies.Get().(*cannedBody)
	if body == nil {
		body = &cannedBody{pool: &u.bodies}
	}
	body.events, body.off = a.events, 0
	if req.Header.Get(benchReadsHeader) == "1" {
		body.events = a.whole
	}
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: a.header, Body: body, ContentLength: a.length, Request: req}, nil
}

// cannedBody reads its events one per Read call and goes back to its pool
// when closed.
type cannedBody struct {
	events [][]byte
	off    int
	pool   *sync.Pool
}

func (b *cannedBody) Read(p []byte) (int, error) {
	if len(b.events) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.events[0][b.off:])
	if b.off += n; b.off == len(b.events[0]) {
		b.events, b.off = b.events[1:], 0
	}
	return n, nil
}

func (b *cannedBody) Close() error {
	if b.pool != nil {
		b.events = nil
		b.pool.Put(b)
	}
	return nil
}

// record asks the mock upstream what it answers to body, as the upstream
// would see it from the edge, and keeps the answer as a canned one.
func record(tb testing.TB, mock *mockllm.Handler, path string, body []byte, hdr http.Header) cannedAnswer {
	tb.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	for k, v := range hdr {
		req.Header[k] = v
	}
	mock.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		tb.Fatalf("mock: %d %s", rec.Code, rec.Body)
	}
	res := rec.Result()
	data := rec.Body.Bytes()
	var events [][]byte
	length := int64(len(data))
	if isEventStream(res.Header.Get("Content-Type")) {
		length = -1
		for _, ev := range bytes.SplitAfter(data, []byte("\n\n")) {
			if len(ev) > 0 {
				events = append(events, ev)
			}
		}
	} else {
		events = [][]byte{data}
	}
	return cannedAnswer{header: res.Header, events: events, whole: [][]byte{data}, length: length}
}

// discardWriter is a ResponseWriter that keeps only the status and the byte
// count, and can be reused: httptest.ResponseRecorder would add its own
// buffer growth and header snapshot to every operation measured.
type discardWriter struct {
	header  http.Header
	status  int
	n       int
	flushes int
}

func (w *discardWriter) Header() http.Header { return w.header }
func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}
func (w *discardWriter) Flush() { w.flushes++ }

func (w *discardWriter) reset() {
	clear(w.header)
	w.status, w.n, w.flushes = 0, 0, 0
}

// benchChat is a realistic small chat request: a system prompt, one earlier
// turn and a question, as an application sends it.
const benchChat = `{"model":"gpt-4","messages":[` +
	`{"role":"system","content":"You are a helpful assistant for an online shop. Answer in two sentences at most and never invent prices."},` +
	`{"role":"user","content":"Do you ship to Portugal?"},` +
	`{"role":"assistant","content":"Yes, we ship to every country in the European Union within five working days."},` +
	`{"role":"user","content":"And how much does shipping cost for an order of two books?"}` +
	`],"temperature":0.2,"max_tokens":64}`

var benchStreamChat = strings.Replace(benchChat, `"max_tokens":64`, `"max_tokens":64,"stream":true`, 1)

// benchHeaders are what the official OpenAI Python SDK sends.
func benchHeaders(secret string) http.Header {
	return http.Header{
		"Authorization":               {"Bearer " + secret},
		"Content-Type":                {"application/json"},
		"Accept":                      {"application/json"},
		"User-Agent":                  {"OpenAI/Python 1.54.0"},
		"X-Stainless-Lang":            {"python"},
		"X-Stainless-Package-Version": {"1.54.0"},
		"X-Stainless-Os":              {"Linux"},
		"X-Stainless-Arch":            {"x64"},
		"X-Stainless-Runtime":         {"CPython"},
		"X-Stainless-Runtime-Version": {"3.12.7"},
		"X-Stainless-Retry-Count":     {"0"},
		"Accept-Encoding":             {"gzip, deflate"},
	}
}

// benchKeyLimits are four limits, each far from being reached: spend per
// rolling day and calendar month, tokens and requests per minute.
func benchKeyLimits(k *eventsv1.Key) {
	k.Limits = []*eventsv1.Limit{
		{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: 1e18, Window: eventsv1.Window_WINDOW_ROLLING},
		{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_MONTH, Amount: 1e18, Window: eventsv1.Window_WINDOW_CALENDAR},
		{Metric: eventsv1.Metric_METRIC_TOKENS, Interval: eventsv1.Interval_INTERVAL_MINUTE, Amount: 1e15, Window: eventsv1.Window_WINDOW_ROLLING},
		{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_MINUTE, Amount: 1e12, Window: eventsv1.Window_WINDOW_ROLLING},
	}
	k.Models = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED, Names: []string{"gpt-3.5-turbo", "gpt-4"}}
	k.TimeZone = "Europe/Berlin"
}

// benchStreamPieces are the X-Mock-Chunks values of the streamed variants:
// the stream has pieces+4 events (role, pieces, finish, usage, [DONE]); the
// usage event is removed by the edge, since the client did not ask for it.
var benchStreamPieces = []int{4, 16, 64}

func newBenchRig(b *testing.B, mode usageMode) *perfRig {
	mock, err := mockllm.New(mockllm.Options{})
	if err != nil {
		b.Fatal(err)
	}
	up := &cannedUpstream{stream: map[string]cannedAnswer{}}
	up.plain = record(b, mock, "/v1/chat/completions", []byte(benchChat), nil)
	withUsage, err := llm.WithIncludeUsage([]byte(benchStreamChat))
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range benchStreamPieces {
		up.stream[strconv.Itoa(n)] = record(b, mock, "/v1/chat/completions", withUsage,
			http.Header{mockllm.HeaderChunks: {strconv.Itoa(n)}})
	}
	return newPerfRig(b, mode, up, perfKey{name: "bench", edit: benchKeyLimits})
}

// benchClient is one client's reusable request and writer.
type benchClient struct {
	req  *http.Request
	body *bytes.Reader
	w    *discardWriter
}

func newBenchClient(rig *perfRig, body string, extra http.Header) *benchClient {
	c := &benchClient{body: bytes.NewReader([]byte(body)), w: &discardWriter{header: http.Header{}}}
	c.req = httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
	c.req.Header = benchHeaders(rig.secrets["bench"])
	for k, v := range extra {
		c.req.Header[k] = v
	}
	c.req.ContentLength = int64(len(body))
	c.req.Body = io.NopCloser(c.body)
	return c
}

// do serves the request once and returns the response writer. The request
// is reused: only its body is rewound.
func (c *benchClient) do(h http.Handler) *discardWriter {
	c.body.Seek(0, io.SeekStart) //nolint:errcheck // cannot fail
	c.w.reset()
	h.ServeHTTP(c.w, c.req)
	return c.w
}

func (c *benchClient) check(b *testing.B, events int) {
	b.Helper()
	w := c.w
	if w.status != http.StatusOK || w.n == 0 {
		b.Fatalf("status %d, %d bytes", w.status, w.n)
	}
	if events > 0 && w.flushes != events-1 { // the usage event is kept from the client
		b.Fatalf("%d flushes for a stream of %d events", w.flushes, events)
	}
	if events == 0 && w.flushes != 0 {
		b.Fatalf("a buffered answer was flushed %d times", w.flushes)
	}
}

// BenchmarkDecisionPath is the edge's own work per request, without the
// network: find the key (HMAC-SHA-256 of the secret, map lookup), the
// permission, size, model and service checks, the body parse, the
// reservation on a key with four limits (spend per rolling day and calendar
// month, tokens and requests per minute) and a model filter, the forward
// through net/http's client to an in-memory upstream, the copy of the answer
// with usage read from it, the settlement and the usage event.
//
//   - plain: a buffered chat answer.
//   - parallel: the same from GOMAXPROCS goroutines on one key, whose limits'
//     mutex they share.
//   - stream-N: a streamed chat answer of N SSE events, each its own Read,
//     meter and filter pass, Write and Flush. The client did not ask for
//     usage, so the edge rewrites the body to ask upstream for it and
//     removes the usage event from the answer, as for most SDK clients.
//     (stream-68 − stream-8) / 60 is the cost of one chunk.
//   - stream-20-one-read: stream-20 arriving in a single read, as a fast
//     upstream's events do on loopback.
//
// The usage events are taken off the publisher's queue and dropped
// (drainUsage): the loop is in steady state and measures the request path
// alone. BenchmarkDecisionPathWithBus adds the publisher and NATS. cpu-ns/op
// is the process's CPU time (getrusage) per request, GC included.
func BenchmarkDecisionPath(b *testing.B) {
	benchDecisionPath(b, newBenchRig(b, drainUsage), true)
}

// BenchmarkDecisionPathWithBus is BenchmarkDecisionPath with the edge run as
// in production: its usage publisher marshals every event and publishes it to
// the embedded NATS server, in this process, which stores it in a file. At
// the benchmark's rate (tens of thousands of events a second, where a real
// edge at 2,000 req/s sends 2,000) that background work competes with the
// requests for the two cores: ns/op is then the throughput of the whole
// process, cpu-ns/op the CPU of the edge, its publisher and the NATS
// server together, and B/op and allocs/op include the publisher's and the
// server's allocations.
func BenchmarkDecisionPathWithBus(b *testing.B) {
	benchDecisionPath(b, newBenchRig(b, publishUsage), false)
}

func benchDecisionPath(b *testing.B, rig *perfRig, all bool) {
	b.Run("plain", func(b *testing.B) {
		c := newBenchClient(rig, benchChat, nil)
		c.do(rig.h)
		c.check(b, 0)
		cpu := startCPU()
		b.ReportAllocs()
		for b.Loop() {
			c.do(rig.h)
		}
		cpu.report(b)
		c.check(b, 0)
	})
	if all {
		b.Run("parallel", func(b *testing.B) {
			cpu := startCPU()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				c := newBenchClient(rig, benchChat, nil)
				for pb.Next() {
					if c.do(rig.h).status != http.StatusOK {
						b.Errorf("status %d", c.w.status)
						return
					}
				}
			})
			cpu.report(b)
		})
	}
	for _, pieces := range benchStreamPieces {
		events := pieces + 4
		if !all && events != 20 {
			continue
		}
		b.Run(fmt.Sprintf("stream-%d", events), func(b *testing.B) {
			c := newBenchClient(rig, benchStreamChat, http.Header{mockllm.HeaderChunks: {strconv.Itoa(pieces)}})
			c.do(rig.h)
			c.check(b, events)
			cpu := startCPU()
			b.ReportAllocs()
			for b.Loop() {
				c.do(rig.h)
			}
			cpu.report(b)
			c.check(b, events)
		})
	}
	if all {
		// The same stream of 20 events arriving in one read: the usage
		// event is then removed from the middle of a chunk.
		b.Run("stream-20-one-read", func(b *testing.B) {
			c := newBenchClient(rig, benchStreamChat, http.Header{mockllm.HeaderChunks: {"16"}, benchReadsHeader: {"1"}})
			c.do(rig.h)
			if c.w.status != http.StatusOK || c.w.flushes != 1 {
				b.Fatalf("status %d, %d flushes", c.w.status, c.w.flushes)
			}
			cpu := startCPU()
			b.ReportAllocs()
			for b.Loop() {
				c.do(rig.h)
			}
			cpu.report(b)
		})
	}
	if _, spooled := rig.srv.usage.Stats(); spooled > 0 {
		b.Logf("%d usage events were spooled: the publisher fell behind", spooled)
	}
}

// processCPU measures the CPU time of the process (user and system, every
// thread: GC and background goroutines included) across a benchmark loop.
type processCPU struct{ start time.Duration }

func startCPU() processCPU { return processCPU{cpuTime()} }

// report adds cpu-ns/op; call it after the loop, when b.N is the number of
// iterations.
func (c processCPU) report(b *testing.B) {
	if d := cpuTime() - c.start; d > 0 && b.N > 0 {
		b.ReportMetric(float64(d.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
