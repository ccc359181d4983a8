package edge

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/catalog"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/mockllm"
	"github.com/tollgate/tollgate/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const testPepper = "pepper-for-edge-tests-0123456789abcdef"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// world is a bus with keys and a catalog, a mock upstream that counts the
// requests it gets, and a way to start edges on it.
type world struct {
	t        *testing.T
	natsURL  string
	nc       *nats.Conn
	js       jetstream.JetStream
	keyLog   *bus.KeyLog
	catalog  *catalog.Store
	hasher   *keys.Hasher
	upstream *httptest.Server
	mock     *mockllm.Handler
	calls    atomic.Int64 // requests that reached the upstream
}

func newWorld(t *testing.T) *world {
	_, nc := testenv.NATS(t)
	return newWorldOn(t, nc.ConnectedUrl())
}

func newWorldOn(t *testing.T, natsURL string) *world {
	t.Helper()
	w := &world{t: t, natsURL: natsURL}
	var err error
	if w.nc, err = bus.Connect(natsURL, "test", quiet, nats.ReconnectWait(50*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.nc.Close)
	w.js, _ = jetstream.New(w.nc)
	ctx := ctxT(t)
	if w.keyLog, err = bus.NewKeyLog(ctx, w.js, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	w.hasher, _ = keys.NewHasher([]byte(testPepper), "p1")
	mock, err := mockllm.New(mockllm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.mock = mock
	w.upstream = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.calls.Add(1)
		mock.ServeHTTP(rw, r)
	}))
	t.Cleanup(w.upstream.Close)

	store, err := catalog.Open(ctx, w.js, 1)
	if err != nil {
		t.Fatal(err)
	}
	w.catalog = store
	for _, s := range []*eventsv1.Service{
		{Id: "acme/openai", Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: w.upstream.URL},
		{Id: "acme/anthropic", Adapter: eventsv1.Adapter_ADAPTER_ANTHROPIC, BaseUrl: w.upstream.URL},
		{Id: "acme/echo", Adapter: eventsv1.Adapter_ADAPTER_HTTP, BaseUrl: w.upstream.URL, RequestPrice: 1_000_000},
	} {
		if err := store.PutService(ctx, s, catalog.By("test")); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []*eventsv1.Model{
		{Name: "gpt-4", Service: "acme/openai", InputPricePerMillion: 30e9, OutputPricePerMillion: 60e9, MaxOutputTokens: 8192},
		{Name: "gpt-3.5-turbo", Service: "acme/openai", InputPricePerMillion: 5e8, OutputPricePerMillion: 15e8, MaxOutputTokens: 4096},
		{Name: "claude-3-opus", Service: "acme/anthropic", InputPricePerMillion: 15e9, OutputPricePerMillion: 75e9, MaxOutputTokens: 4096},
	} {
		if err := store.PutModel(ctx, m, "", catalog.By("test"), catalog.Unconditional); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// key creates a key (through the same pure command the admin uses) and
// returns its secret and state.
func (w *world) key(edit func(k *eventsv1.Key)) (string, *eventsv1.Key) {
	w.t.Helper()
	k := &eventsv1.Key{Account: "acme", Name: "test", Permissions: []eventsv1.Permission{eventsv1.Permission_PERMISSION_PREDICT}}
	if edit != nil {
		edit(k)
	}
	ev, secret, err := keys.Create(time.Now(), "test", w.hasher, k, "en_")
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.keyLog.Append(ctxT(w.t), ev, 0); err != nil {
		w.t.Fatal(err)
	}
	return secret, ev.GetKey()
}

// change appends the event that fn returns for the key's current state.
func (w *world) change(k *eventsv1.Key, fn func(cur *eventsv1.Key) (*eventsv1.KeyEvent, error)) *eventsv1.Key {
	w.t.Helper()
	cur, rev, err := w.keyLog.Last(ctxT(w.t), k.GetAccount(), k.GetId())
	if err != nil {
		w.t.Fatal(err)
	}
	ev, err := fn(cur.GetKey())
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.keyLog.Append(ctxT(w.t), ev, rev); err != nil {
		w.t.Fatal(err)
	}
	return ev.GetKey()
}

type testEdge struct {
	*Server
	url  string
	stop func()
}

func (w *world) edge(edit func(*Config)) *testEdge {
	w.t.Helper()
	return w.edgeSetUp(edit, nil)
}

// edgeSetUp is edge with setUp called on the server before it runs (to
// replace its upstream transport, lower a bound).
func (w *world) edgeSetUp(edit func(*Config), setUp func(*Server)) *testEdge {
	w.t.Helper()
	te := w.startEdge(edit, setUp)
	if err := te.WaitReady(ctxT(w.t)); err != nil {
		w.t.Fatal(err)
	}
	return te
}

// startEdge starts an edge without waiting for it to be ready.
func (w *world) startEdge(edit func(*Config), setUp func(*Server)) *testEdge {
	w.t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATSURL = w.natsURL
	cfg.Pepper = testPepper
	cfg.SpoolDir = w.t.TempDir()
	if edit != nil {
		edit(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg, quiet)
	if err != nil {
		cancel()
		w.t.Fatal(err)
	}
	if setUp != nil {
		setUp(s)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once atomic.Bool
	te := &testEdge{Server: s, url: "http://" + s.Addr(), stop: func() {
		if once.Swap(true) {
			return
		}
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			w.t.Error("edge did not stop")
		}
		s.Close()
	}}
	w.t.Cleanup(te.stop)
	return te
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// do sends a request to an edge.
func do(t *testing.T, url, method, path, secret, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctxT(t), method, url+path, strings.NewReader(body))
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return res, string(data)
}

// usageEvents reads every usage event in the stream.
func (w *world) usageEvents() []*eventsv1.UsageEvent {
	w.t.Helper()
	ctx := ctxT(w.t)
	s, err := w.js.Stream(ctx, bus.UsageStream)
	if err != nil {
		w.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	var out []*eventsv1.UsageEvent
	if info.State.Msgs == 0 {
		return out
	}
	c, err := w.js.OrderedConsumer(ctx, bus.UsageStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		w.t.Fatal(err)
	}
	for uint64(len(out)) < info.State.Msgs {
		batch, err := c.Fetch(int(min(1000, info.State.Msgs-uint64(len(out)))), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			w.t.Fatal(err)
		}
		n := len(out)
		for m := range batch.Messages() {
			ev := new(eventsv1.UsageEvent)
			if err := proto.Unmarshal(m.Data(), ev); err != nil {
				w.t.Fatal(err)
			}
			out = append(out, ev)
		}
		if len(out) == n {
			break
		}
	}
	return out
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
