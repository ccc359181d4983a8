package edge

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/limits"
	"github.com/tollgate/tollgate/pkg/money"
)

const chatBody = `{"model":"gpt-4","messages":[{"role":"user","content":"hello there"}],"max_tokens":16}`

// Every refusal of DESIGN.md section 5 answers with the right status, an
// error body the SDKs understand, and no upstream call.
func TestChecksRefuseBeforeUpstream(t *testing.T) {
	w := newWorld(t)
	e := w.edge(nil)
	predict, _ := w.key(nil)
	reader, _ := w.key(func(k *eventsv1.Key) { k.Permissions = []eventsv1.Permission{eventsv1.Permission_PERMISSION_READ} })
	small, _ := w.key(func(k *eventsv1.Key) { k.MaxRequestBytes = 64 })
	onlyGPT35, _ := w.key(func(k *eventsv1.Key) {
		k.Models = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED, Names: []string{"gpt-3.5-turbo"}}
	})
	upperGPT4, _ := w.key(func(k *eventsv1.Key) {
		k.Models = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED, Names: []string{"GPT-4"}}
	})
	noServices, _ := w.key(func(k *eventsv1.Key) {
		k.Services = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_NONE}
	})
	revokedSecret, revoked := w.key(nil)
	w.change(revoked, func(cur *eventsv1.Key) (*eventsv1.KeyEvent, error) { return keys.Revoke(time.Now(), "t", cur) })
	expiredSecret, expiring := w.key(nil)
	w.change(expiring, func(cur *eventsv1.Key) (*eventsv1.KeyEvent, error) {
		next := proto.CloneOf(cur)
		next.ExpiresAt = timestamppb.New(time.Now().Add(50 * time.Millisecond))
		return keys.Update(time.Now(), "t", cur, next, []string{"expires_at"})
	})
	waitFor(t, "key changes at the edge", func() bool {
		_, v := e.keys.Lookup(revokedSecret, time.Now())
		return v != 0 && e.keys.Len() == 8
	})
	time.Sleep(60 * time.Millisecond) // let the expiring key expire

	big := `{"model":"gpt-4","messages":[{"role":"user","content":"` + strings.Repeat("x", 200) + `"}]}`
	tests := []struct {
		name, path, secret, body string
		status                   int
		code, message            string
		chunked                  bool
	}{
		{"no key", "/v1/chat/completions", "", chatBody, 401, "invalid_api_key", "No API key", false},
		{"unknown key", "/v1/chat/completions", "en_nope", chatBody, 401, "invalid_api_key", "Incorrect API key", false},
		{"revoked key", "/v1/chat/completions", revokedSecret, chatBody, 401, "key_revoked", "revoked", false},
		{"expired key", "/v1/chat/completions", expiredSecret, chatBody, 401, "key_expired", "expired", false},
		{"read key calls a model", "/v1/chat/completions", reader, chatBody, 403, "permission_denied", "PREDICT", false},
		{"predict key lists models", "/v1/models", predict, "", 403, "permission_denied", "READ", false},
		{"too large by length", "/v1/chat/completions", small, big, 413, "request_too_large", "64 bytes", false},
		{"too large chunked", "/v1/chat/completions", small, big, 413, "request_too_large", "64 bytes", true},
		{"model filter", "/v1/chat/completions", onlyGPT35, chatBody, 403, "model_not_allowed", "Model not allowed", false},
		{"model filter is case-sensitive", "/v1/chat/completions", onlyGPT35, strings.Replace(chatBody, "gpt-4", "GPT-3.5-turbo", 1), 403, "model_not_allowed", "Model not allowed", false},
		{"model filter names compare exactly", "/v1/chat/completions", upperGPT4, chatBody, 403, "model_not_allowed", "Model not allowed", false},
		// A key limited to some models learns nothing about the others:
		// not whether they exist, nor which endpoint serves them.
		{"model filter before the catalog", "/v1/chat/completions", onlyGPT35, strings.Replace(chatBody, "gpt-4", "gpt-9", 1), 403, "model_not_allowed", "Model not allowed", false},
		{"model filter before the endpoint", "/v1/messages", onlyGPT35, `{"model":"gpt-4","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, 403, "model_not_allowed", "Model not allowed", false},
		{"service filter", "/v1/chat/completions", noServices, chatBody, 403, "service_not_allowed", "Service not allowed", false},
		{"service filter before the catalog", "/v1/services/acme/nope/x", noServices, "", 403, "service_not_allowed", "Service not allowed", false},
		{"malformed json", "/v1/chat/completions", predict, `{"model":`, 400, "invalid_request", "JSON", false},
		{"no model", "/v1/chat/completions", predict, `{"messages":[]}`, 400, "invalid_request", "model", false},
		{"unknown model", "/v1/chat/completions", predict, strings.Replace(chatBody, "gpt-4", "gpt-9", 1), 404, "model_not_found", "gpt-9", false},
		{"wrong endpoint", "/v1/messages", predict, `{"model":"gpt-4","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, 400, "wrong_endpoint", "/v1/chat/completions", false},
		{"anthropic without max_tokens", "/v1/messages", predict, `{"model":"claude-3-opus","messages":[]}`, 400, "invalid_request", "max_tokens", false},
		{"enclava path", "/api/v1/chat/completions", "en_nope", chatBody, 401, "invalid_api_key", "", false},
		{"wrong method", "/v1/chat/completions", predict, "", 405, "method_not_allowed", "use POST", false},
		{"wrong method, anthropic", "/v1/messages", predict, "", 405, "method_not_allowed", "use POST", false},
		{"wrong method, enclava path", "/api/v1/embeddings", predict, "", 405, "method_not_allowed", "use POST", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := http.MethodPost
			if tt.body == "" {
				method = http.MethodGet
			}
			req, _ := http.NewRequest(method, e.url+tt.path, strings.NewReader(tt.body))
			if tt.chunked {
				req.ContentLength = -1 // no Content-Length: the limited reader must catch it
				req.Body = struct {
					*strings.Reader
					closer
				}{strings.NewReader(tt.body), closer{}}
			}
			if tt.secret != "" {
				req.Header.Set("Authorization", "Bearer "+tt.secret)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var body struct {
				Type  string `json:"type"`
				Error struct {
					Message string `json:"message"`
					Type    string `json:"type"`
					Code    string `json:"code"`
				} `json:"error"`
			}
			if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
				t.Fatalf("error body is not JSON: %v", err)
			}
			if res.StatusCode != tt.status || body.Error.Code != tt.code || !strings.Contains(body.Error.Message, tt.message) || body.Error.Type == "" {
				t.Fatalf("got %d %+v, want %d code %q message containing %q", res.StatusCode, body, tt.status, tt.code, tt.message)
			}
			if strings.HasPrefix(tt.path, "/v1/messages") && body.Type != "error" {
				t.Fatalf("an Anthropic endpoint must answer Anthropic's error shape, got %+v", body)
			}
		})
	}
	if n := w.calls.Load(); n != 0 {
		t.Fatalf("refused requests reached the upstream %d times", n)
	}
	if evs := w.usageEvents(); len(evs) != 0 {
		t.Fatalf("refused requests published %d usage events", len(evs))
	}
}

type closer struct{}

func (closer) Close() error { return nil }

func TestListModelsFollowsTheKeysFilters(t *testing.T) {
	w := newWorld(t)
	e := w.edge(nil)
	reader, _ := w.key(func(k *eventsv1.Key) {
		k.Permissions = []eventsv1.Permission{eventsv1.Permission_PERMISSION_READ}
		k.Models = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED, Names: []string{"gpt-4", "claude-3-opus"}}
		k.Services = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED, Names: []string{"acme/openai"}}
	})
	waitFor(t, "the key at the edge", func() bool { return e.keys.Len() == 1 })
	res, body := do(t, e.url, "GET", "/v1/models", reader, "")
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil || res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	if list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != "gpt-4" {
		t.Fatalf("want only gpt-4 (claude is on a service the key may not use), got %s", body)
	}
}

func TestAppendDurationIsDurationString(t *testing.T) {
	cases := []time.Duration{0, time.Millisecond, 999 * time.Millisecond, time.Second, 1500 * time.Millisecond,
		time.Minute, time.Minute + 50*time.Millisecond, time.Hour, 25*time.Hour + 61*time.Second + 7*time.Millisecond}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10_000 {
		cases = append(cases, time.Duration(rng.Int64N(int64(48*time.Hour))).Round(time.Millisecond))
	}
	for _, d := range cases {
		if got, want := string(appendDuration(nil, d)), d.String(); got != want {
			t.Fatalf("appendDuration(%d) = %q, want %q", d, got, want)
		}
	}
}

// The x-ratelimit headers carry, per metric, the tightest limit's amount,
// what is left of it and when it is whole again: here a rolling $240/day
// with $10 spent (refills $10/hour), 100 tokens/minute with 40 used and 5
// requests/minute with 2 used.
func TestRateLimitHeaders(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	set := limits.NewKeySet([]*eventsv1.Limit{
		{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: 240 * int64(money.Dollar), Window: eventsv1.Window_WINDOW_ROLLING},
		{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_MONTH, Amount: 10_000 * int64(money.Dollar), Window: eventsv1.Window_WINDOW_CALENDAR},
		{Metric: eventsv1.Metric_METRIC_TOKENS, Interval: eventsv1.Interval_INTERVAL_MINUTE, Amount: 100, Window: eventsv1.Window_WINDOW_ROLLING},
		{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_MINUTE, Amount: 5, Window: eventsv1.Window_WINDOW_ROLLING},
	}, time.UTC, now)
	set.Debit(limits.Usage{Spend: 10 * money.Dollar, InputTokens: 30, OutputTokens: 10, Requests: 2}, now)
	h := http.Header{}
	setRateLimitHeaders(h, set, now)
	want := map[string]string{
		"X-Ratelimit-Limit-Requests": "5", "X-Ratelimit-Remaining-Requests": "3", "X-Ratelimit-Reset-Requests": "24s",
		"X-Ratelimit-Limit-Tokens": "100", "X-Ratelimit-Remaining-Tokens": "60", "X-Ratelimit-Reset-Tokens": "24s",
		"X-Ratelimit-Limit-Spend": "240", "X-Ratelimit-Remaining-Spend": "230", "X-Ratelimit-Reset-Spend": "1h0m0s",
	}
	for name, v := range want {
		if got := h.Values(name); len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", name, got, v)
		}
	}
	if len(h) != len(want) {
		t.Errorf("%d headers, want %d: %v", len(h), len(want), h)
	}
	// A header added to one value slice must not show in another's.
	h.Add("X-Ratelimit-Limit-Requests", "extra")
	if got := h.Get("X-Ratelimit-Remaining-Requests"); got != "3" {
		t.Errorf("remaining after an Add to limit = %q", got)
	}
	if n := testing.AllocsPerRun(100, func() { setRateLimitHeaders(h, set, now) }); n != 2 {
		t.Errorf("%v allocations per call, want 2 (the values' string and their slices)", n)
	}
}

// An edge that has not read its keys and catalog yet answers 503 with
// Retry-After, not 401: a valid key must not be told it is invalid.
func TestNotReadyBeforeKeysAndCatalogAreLoaded(t *testing.T) {
	w := newWorld(t)
	secret, _ := w.key(nil)
	cfg := DefaultConfig()
	cfg.Listen, cfg.NATSURL, cfg.Pepper, cfg.SpoolDir = "127.0.0.1:0", w.natsURL, testPepper, t.TempDir()
	ctx, cancel := context.WithCancel(ctxT(t))
	s, err := New(ctx, cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	serve := func(path, body string) *httptest.ResponseRecorder {
		method := http.MethodPost
		if body == "" {
			method = http.MethodGet
		}
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secret)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		return rec
	}
	// New does not read the bus; Run does.
	for _, tt := range []struct{ path, body string }{
		{"/v1/chat/completions", chatBody},
		{"/v1/messages", `{"model":"claude-3-opus","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/models", ""},
		{"/v1/services/acme/echo/x", ""},
	} {
		rec := serve(tt.path, tt.body)
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" || !strings.Contains(rec.Body.String(), "still loading") {
			t.Errorf("%s before loading: %d, Retry-After %q, %s; want 503, 1, still loading", tt.path, rec.Code, rec.Header().Get("Retry-After"), rec.Body)
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if rec := serve("/v1/chat/completions", chatBody); rec.Code != http.StatusOK {
		t.Fatalf("once loaded: %d %s, want 200", rec.Code, rec.Body)
	}
}

// A declared Content-Length is only a claim: the edge allocates as the bytes
// arrive, not the whole declared length up front.
func TestReadExactlyAllocatesAsTheBytesArrive(t *testing.T) {
	const body = `{"model":"gpt-4"}`
	for _, declared := range []int64{int64(len(body)), 100, preallocMax + 1, 1 << 34} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		got, err := readExactly(strings.NewReader(body), declared)
		runtime.ReadMemStats(&after)
		wantErr := declared > int64(len(body))
		if string(got) != body || (err != nil) != wantErr || wantErr && err != io.ErrUnexpectedEOF {
			t.Errorf("declared %d: got %q, %v", declared, got, err)
		}
		if d := after.TotalAlloc - before.TotalAlloc; d > 2*preallocMax {
			t.Errorf("declared %d: allocated %d bytes for a %d-byte body", declared, d, len(body))
		}
	}
}
