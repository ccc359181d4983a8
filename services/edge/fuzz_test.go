package edge

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/llm"
	"github.com/tollgate/tollgate/pkg/mockllm"
	"github.com/tollgate/tollgate/services/edge/internal/keyring"
)

// The fuzz tests send arbitrary bodies, with a choice of credentials and of
// honest or lying Content-Length, to the edge's LLM endpoints in process
// (Server.Handler, the mock upstream behind an in-memory transport, the
// usage publisher running on an embedded NATS). Whatever arrives, the edge
// must not panic, must not answer 5xx, must refuse in the order of
// DESIGN.md section 5 (key, permission, size, parse, filters, limits) with
// the right status, and must answer valid JSON in the endpoint's dialect.
// `go test` runs the seeds; run one for longer with, e.g.,
//
//	go test ./services/edge -run '^$' -fuzz '^FuzzEdgeChat$' -fuzztime 20s

func FuzzEdgeChat(f *testing.F) {
	fuzzEdge(f, llm.Chat, "/v1/chat/completions",
		`{"model":"gpt-4","messages":[{"role":"user","content":"hello there"}],"max_tokens":16}`,
		`{"model":"gpt-3.5-turbo","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"stream":true}`,
		`{"model":"gpt-4","messages":[{"role":"user","content":"Hi"}],"stream":true,"stream_options":{"include_usage":true},"n":2,"max_completion_tokens":8}`,
		`{"model":"gpt-4","messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}]}`,
		`{"model":"claude-3-opus","messages":[{"role":"user","content":"wrong endpoint"}]}`,
		`{"model":"gpt-9","messages":[]}`, `{"model":"GPT-4","messages":[]}`, `{"model":`, `{"messages":[]}`, `[]`, ``,
		`{"model":"gpt-4","max_tokens":-1,"messages":[]}`, `{"model":"gpt-4","max_tokens":1e400}`, `{"model":"gpt-4","n":129}`,
		`{"model":"gpt-4","messages":[{"role":"user","content":"\ud800"}],"max_tokens":2}`, "{\"model\":\"gpt-4\"}\x00")
}

func FuzzEdgeCompletions(f *testing.F) {
	fuzzEdge(f, llm.Completions, "/v1/completions",
		`{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","max_tokens":7,"temperature":0}`,
		`{"model":"gpt-3.5-turbo-instruct","prompt":["a","b"],"best_of":3,"n":2,"max_tokens":4,"stream":true}`,
		`{"model":"gpt-3.5-turbo-instruct","prompt":[[1,2,3],[4]],"suffix":"end","echo":true}`,
		`{"model":"gpt-3.5-turbo-instruct","prompt":null}`, `{"prompt":"no model"}`, `{"model":1}`, `{"model":"gpt-4","prompt":"x","stream":"yes"}`)
}

func FuzzEdgeEmbeddings(f *testing.F) {
	fuzzEdge(f, llm.Embeddings, "/v1/embeddings",
		`{"model":"text-embedding-3-small","input":"The food was delicious and the waiter was kind."}`,
		`{"model":"text-embedding-3-small","input":["one","two"],"encoding_format":"base64","dimensions":8}`,
		`{"model":"text-embedding-3-small","input":[[1,2,3]]}`, `{"model":"text-embedding-3-small","input":[]}`,
		`{"model":"text-embedding-3-small"}`, `{"input":"x"}`, `{"model":"text-embedding-3-small","input":"x","stream":true}`)
}

func FuzzEdgeMessages(f *testing.F) {
	fuzzEdge(f, llm.Messages, "/v1/messages",
		`{"model":"claude-3-opus","max_tokens":32,"messages":[{"role":"user","content":"Hello, Claude"}]}`,
		`{"model":"claude-3-opus","max_tokens":16,"stream":true,"system":"Be terse.","messages":[{"role":"user","content":"Hi"}]}`,
		`{"model":"claude-3-opus","max_tokens":64,"system":[{"type":"text","text":"You are terse.","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},{"type":"text","text":"What is this?"}]}],"tools":[{"name":"f","input_schema":{"type":"object"}}]}`,
		`{"model":"claude-3-opus","messages":[]}`, `{"model":"gpt-4","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"claude-3-opus","max_tokens":0,"messages":[]}`, `{"type":"error"}`)
}

// fuzzKeys are the keys of the fuzz rig; the fuzzer's auth byte picks how
// (and whether) a request presents one of them.
var fuzzKeys = []perfKey{
	{name: "ok"},
	{name: "reader", edit: func(k *eventsv1.Key) { k.Permissions = []eventsv1.Permission{eventsv1.Permission_PERMISSION_READ} }},
	{name: "small", edit: func(k *eventsv1.Key) { k.MaxRequestBytes = 200 }},
	{name: "gpt35", edit: func(k *eventsv1.Key) {
		k.Models = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED, Names: []string{"gpt-3.5-turbo"}}
	}},
	{name: "noservices", edit: func(k *eventsv1.Key) { k.Services = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_NONE} }},
	{name: "broke", edit: func(k *eventsv1.Key) {
		k.Limits = []*eventsv1.Limit{{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_MINUTE, Amount: 0, Window: eventsv1.Window_WINDOW_ROLLING}}
	}},
	{name: "revoked", revoke: true},
	{name: "expired", want: keyring.Expired, edit: func(k *eventsv1.Key) { k.ExpiresAt = timestamppb.New(time.Now().Add(300 * time.Millisecond)) }},
}

// fuzzAuth is how a request presents its credential.
type fuzzAuth struct {
	name   string
	header func(h http.Header, secrets map[string]string)
	// want is the refusal the credential alone must cause (0: none), with
	// its OpenAI code; key is the key that is let in otherwise.
	want int
	code string
	key  string
}

var fuzzAuths = []fuzzAuth{
	{"bearer", func(h http.Header, s map[string]string) { h.Set("Authorization", "Bearer "+s["ok"]) }, 0, "", "ok"},
	{"x-api-key", func(h http.Header, s map[string]string) { h.Set("X-Api-Key", s["ok"]) }, 0, "", "ok"},
	{"api-key", func(h http.Header, s map[string]string) { h.Set("Api-Key", s["ok"]) }, 0, "", "ok"},
	{"lowercase scheme, padded", func(h http.Header, s map[string]string) { h.Set("Authorization", "bearer   "+s["ok"]+" ") }, 0, "", "ok"},
	{"none", func(http.Header, map[string]string) {}, 401, "invalid_api_key", ""},
	{"unknown", func(h http.Header, s map[string]string) { h.Set("Authorization", "Bearer "+s["ok"]+"x") }, 401, "invalid_api_key", ""},
	{"basic", func(h http.Header, s map[string]string) {
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("u:"+s["ok"])))
	}, 401, "invalid_api_key", ""},
	{"bearer without token", func(h http.Header, _ map[string]string) { h.Set("Authorization", "Bearer") }, 401, "invalid_api_key", ""},
	{"bad authorization wins over good x-api-key", func(h http.Header, s map[string]string) {
		h.Set("Authorization", "Token "+s["ok"])
		h.Set("X-Api-Key", s["ok"])
	}, 401, "invalid_api_key", ""},
	{"revoked", func(h http.Header, s map[string]string) { h.Set("Authorization", "Bearer "+s["revoked"]) }, 401, "key_revoked", ""},
	{"expired", func(h http.Header, s map[string]string) { h.Set("X-Api-Key", s["expired"]) }, 401, "key_expired", ""},
	{"read only", func(h http.Header, s map[string]string) { h.Set("Authorization", "Bearer "+s["reader"]) }, 403, "permission_denied", ""},
	{"small", func(h http.Header, s map[string]string) { h.Set("Authorization", "Bearer "+s["small"]) }, 0, "", "small"},
	{"gpt-3.5 only", func(h http.Header, s map[string]string) { h.Set("Authorization", "Bearer "+s["gpt35"]) }, 0, "", "gpt35"},
	{"no services", func(h http.Header, s map[string]string) { h.Set("Authorization", "Bearer "+s["noservices"]) }, 0, "", "noservices"},
	{"zero request limit", func(h http.Header, s map[string]string) { h.Set("Authorization", "Bearer "+s["broke"]) }, 0, "", "broke"},
}

// fuzzLength is how the request's length is declared.
const (
	lengthHonest  = iota // Content-Length is the body's length
	lengthChunked        // no Content-Length (chunked)
	lengthLonger         // Content-Length promises more than arrives, then the client hangs up
	lengthShorter        // Content-Length is less than what was sent: the rest is never read
	lengthModes
)

// mockTransport serves the mock upstream in memory, through a recorder:
// the answer is complete before the edge reads it, which is all the fuzz
// tests need. It counts calls, so a test can tell that a refusal never went
// upstream.
type mockTransport struct {
	mock  *mockllm.Handler
	calls atomic.Int64
}

func (m *mockTransport) RoundTrip(req *http.Request) (res *http.Response, err error) {
	m.calls.Add(1)
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	in := httptest.NewRequestWithContext(req.Context(), req.Method, req.URL.RequestURI(), bytes.NewReader(body))
	in.Header = req.Header.Clone()
	rec := httptest.NewRecorder()
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler { //nolint:errorlint // the sentinel is panicked as is
				panic(p)
			}
			res, err = nil, errors.New("mock upstream dropped the connection")
		}
	}()
	m.mock.ServeHTTP(rec, in)
	return rec.Result(), nil
}

func newFuzzRig(f *testing.F) (*perfRig, *mockTransport) {
	mock, err := mockllm.New(mockllm.Options{})
	if err != nil {
		f.Fatal(err)
	}
	up := &mockTransport{mock: mock}
	return newPerfRig(f, publishUsage, up, fuzzKeys...), up
}

// lyingBody is what net/http's server hands a handler when the client
// declared more than it sent and hung up: the bytes, then
// io.ErrUnexpectedEOF.
type lyingBody struct{ r io.Reader }

func (b lyingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
func (lyingBody) Close() error { return nil }

func fuzzEdge(f *testing.F, kind llm.Kind, path string, seeds ...string) {
	for i, s := range seeds {
		for _, a := range []uint8{0, uint8(i)} {
			f.Add([]byte(s), a, uint8(i%lengthModes))
		}
	}
	rig, up := newFuzzRig(f)
	f.Fuzz(func(t *testing.T, body []byte, authPick, lengthPick uint8) {
		auth := fuzzAuths[int(authPick)%len(fuzzAuths)]
		mode := int(lengthPick) % lengthModes
		req := httptest.NewRequest(http.MethodPost, path, nil)
		req.Header.Set("Content-Type", "application/json")
		if kind == llm.Messages {
			req.Header.Set("Anthropic-Version", "2023-06-01")
		}
		auth.header(req.Header, rig.secrets)
		received := body // what the edge can read of the body
		switch mode {
		case lengthHonest:
			req.ContentLength = int64(len(body))
			req.Body = io.NopCloser(bytes.NewReader(body))
		case lengthChunked:
			req.ContentLength = -1
			req.Body = io.NopCloser(bytes.NewReader(body))
		case lengthLonger:
			req.ContentLength = int64(len(body)) + 1 + int64(authPick)
			req.Body = lyingBody{bytes.NewReader(body)}
			received = nil
		case lengthShorter:
			received = body[:len(body)/2]
			req.ContentLength = int64(len(received))
			req.Body = io.NopCloser(bytes.NewReader(received))
		}
		before := up.calls.Load()

		rec := httptest.NewRecorder()
		rig.h.ServeHTTP(rec, req) // a panic fails the fuzz test
		res := rec.Result()
		got := rec.Body.Bytes()
		called := up.calls.Load() != before
		describe := func() string {
			return fmt.Sprintf("%s %q (auth %s, length mode %d): %d %s", path, body, auth.name, mode, res.StatusCode, got)
		}

		switch res.StatusCode {
		case http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden,
			http.StatusNotFound, http.StatusRequestEntityTooLarge:
		case http.StatusTooManyRequests:
			if auth.key != "broke" {
				t.Fatalf("429 for a key without limits: %s", describe())
			}
		default:
			t.Fatalf("unexpected status: %s", describe())
		}
		if res.StatusCode != http.StatusOK {
			e := checkErrorBody(t, kind, res, got, describe)
			if auth.want == 0 && called && res.StatusCode != http.StatusBadRequest {
				t.Fatalf("the upstream answered %d: the mock refuses only with 400: %s", res.StatusCode, describe())
			}
			if !called || auth.want != 0 {
				// The edge refused by itself: it must be the refusal the
				// checks' order makes the first one to apply.
				if want, code := expectRefusal(auth, mode, received, req.ContentLength, kind); want != 0 &&
					(res.StatusCode != want || code != "" && e.code != code) {
					t.Fatalf("want %d %s: %s", want, code, describe())
				}
			}
			if called && auth.want != 0 {
				t.Fatalf("a refused request went upstream: %s", describe())
			}
			return
		}

		// 200: the request passed every check, so it must have been one
		// that passes them, and went upstream.
		if auth.want != 0 || !called {
			t.Fatalf("served a request that should have been refused: %s", describe())
		}
		r, err := llm.ParseRequest(kind, received)
		if err != nil {
			t.Fatalf("served a body llm.ParseRequest rejects (%v): %s", err, describe())
		}
		if auth.key == "broke" || auth.key == "noservices" || auth.key == "gpt35" && r.Model != "gpt-3.5-turbo" {
			t.Fatalf("served a request the key's filters or limits refuse: %s", describe())
		}
		if isEventStream(res.Header.Get("Content-Type")) {
			if !r.Stream || kind == llm.Embeddings {
				t.Fatalf("streamed an answer that was not asked to stream: %s", describe())
			}
			checkStream(t, kind, r, got, describe)
		} else if !json.Valid(got) {
			t.Fatalf("the answer is not JSON: %s", describe())
		}
	})
}

// errorBody is the part of an error answer the fuzz tests check.
type errorBody struct{ typ, message, code string }

// checkErrorBody checks that an error answer is JSON in the endpoint's
// dialect: {"error":{"message","type","param","code"}} for OpenAI's,
// {"type":"error","error":{"type","message"}} for Anthropic's (with
// Tollgate's "code" when the edge refused by itself).
func checkErrorBody(t *testing.T, kind llm.Kind, res *http.Response, got []byte, describe func() string) errorBody {
	t.Helper()
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error with Content-Type %q: %s", ct, describe())
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(got, &top); err != nil {
		t.Fatalf("error body is not a JSON object (%v): %s", err, describe())
	}
	var inner map[string]any
	if err := json.Unmarshal(top["error"], &inner); err != nil {
		t.Fatalf("error body has no error object: %s", describe())
	}
	str := func(k string) string { s, _ := inner[k].(string); return s }
	e := errorBody{typ: str("type"), message: str("message"), code: str("code")}
	if e.typ == "" || e.message == "" {
		t.Fatalf("error without type or message: %s", describe())
	}
	if kind == llm.Messages {
		// Anthropic's type and message, and Tollgate's code when it has one.
		if _, hasCode := inner["code"]; len(top) != 2 || string(top["type"]) != `"error"` || len(inner) != 2 && !(len(inner) == 3 && hasCode) {
			t.Fatalf("not Anthropic's error shape: %s", describe())
		}
		return e
	}
	_, hasCode := inner["code"]
	_, hasParam := inner["param"]
	if len(top) != 1 || len(inner) != 4 || !hasCode || !hasParam {
		t.Fatalf("not OpenAI's error shape: %s", describe())
	}
	return e
}

// expectRefusal is the refusal the first applicable check of DESIGN.md
// section 5 gives, as far as the credential and the body decide it: the key,
// the permission, the size, then the parse. It returns 0 when the outcome
// depends on more (catalog, filters, limits, the upstream).
func expectRefusal(auth fuzzAuth, mode int, received []byte, declared int64, kind llm.Kind) (int, string) {
	if auth.want != 0 {
		return auth.want, auth.code
	}
	limit := int64(10 << 20)
	if auth.key == "small" {
		limit = 200
	}
	if declared > limit || int64(len(received)) > limit {
		return http.StatusRequestEntityTooLarge, "request_too_large"
	}
	if mode == lengthLonger {
		return http.StatusBadRequest, "invalid_body"
	}
	if _, err := llm.ParseRequest(kind, received); err != nil {
		return http.StatusBadRequest, "invalid_request"
	}
	return 0, ""
}

// checkStream checks a streamed answer: every data line is JSON or [DONE],
// and a client that did not ask for usage gets no usage-only chunk.
func checkStream(t *testing.T, kind llm.Kind, r llm.Request, got []byte, describe func() string) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(got))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		data, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok {
			continue
		}
		if string(data) != "[DONE]" && !json.Valid(data) {
			t.Fatalf("stream event %q is not JSON: %s", data, describe())
		}
		if kind != llm.Messages && !r.IncludeUsage && isUsageOnly(data) {
			t.Fatalf("the client got a usage chunk it did not ask for: %s", describe())
		}
	}
}

func isUsageOnly(event []byte) bool {
	return bytes.Contains(event, []byte(`"choices":[]`)) && bytes.Contains(event, []byte(`"usage":{`))
}

// FuzzEdgeUpstreamStream sends whatever an upstream might stream back, cut
// into chunks of any size, through the edge: it must not panic, must pass
// the stream through byte for byte, less the usage-only events of a client
// that did not ask for usage, and must publish one usage event for it. (The
// events are taken off the publisher's queue here, not sent to NATS.)
func FuzzEdgeUpstreamStream(f *testing.F) {
	openAI := "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello there\"},\"finish_reason\":null}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n" +
		"data: [DONE]\n\n"
	anthropic := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-3-opus\",\"content\":[],\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	for _, s := range []string{openAI, anthropic, openAI[:200], "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}", "\n\n\n", ": ping\r\n\r\n", ""} {
		for _, chunk := range []uint16{0, 7, 64} {
			f.Add([]byte(s), chunk, false)
			f.Add([]byte(s), chunk, true)
		}
	}
	up := &fuzzStreamUpstream{}
	rig := newPerfRig(f, collectUsage, up, perfKey{name: "ok"})
	var mu sync.Mutex // one stream at a time through up
	finished := true  // the last iteration read its usage event
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint16, includeUsage bool) {
		mu.Lock()
		defer mu.Unlock()
		// An iteration that failed before reading its usage event left it
		// in the channel (the fuzzer goes on with the same process while it
		// minimizes): drop it, or every later iteration reads the event of
		// the one before. After an iteration that finished, an event left
		// over is a second event for one request.
		for len(rig.usage) > 0 {
			ev := <-rig.usage
			if finished {
				t.Fatalf("a second usage event for one request: %v", ev)
			}
		}
		finished = false
		size := 1 + int(chunk)%512
		up.set(stream, size)
		kind, path, body := llm.Chat, "/v1/chat/completions", `{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"hi"}]}`
		if chunk%3 == 2 {
			kind, path, body = llm.Messages, "/v1/messages", `{"model":"claude-3-opus","stream":true,"max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`
		} else if includeUsage {
			body = strings.Replace(body, `"stream":true`, `"stream":true,"stream_options":{"include_usage":true}`, 1)
		}
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+rig.secrets["ok"])
		rec := httptest.NewRecorder()
		rig.h.ServeHTTP(rec, req)
		got := rec.Body.Bytes()
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d for a stream %q: %s", rec.Code, stream, got)
		}
		if kind == llm.Messages || includeUsage {
			if !bytes.Equal(got, stream) {
				t.Fatalf("stream changed on the way:\nupstream %q\nclient   %q", stream, got)
			}
		} else if !isStreamLessUsage(stream, got) {
			t.Fatalf("the client's stream is not the upstream's less usage-only events:\nupstream %q\nclient   %q", stream, got)
		}
		select {
		case ev := <-rig.usage:
			// response_bytes is what the client got, to the byte, including
			// what usageFilter.flush passes on when the stream ends within an
			// event.
			if n := ev.GetResponseBytes(); n != int64(len(got)) {
				t.Fatalf("usage event says %d response bytes, the client got %d: %q", n, len(got), stream)
			}
			if ev.GetStatus() != http.StatusOK || !ev.GetStreamed() ||
				ev.GetInputTokens() < 0 || ev.GetOutputTokens() < 0 || ev.GetCost() < 0 {
				t.Fatalf("usage event %v for a stream %q of which the client got %d bytes", ev, stream, len(got))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no usage event for the request")
		}
		finished = true
	})
}

// isStreamLessUsage reports whether got is stream with zero or more whole
// usage-only events removed.
func isStreamLessUsage(stream, got []byte) bool {
	for _, ev := range bytes.SplitAfter(stream, []byte("\n\n")) {
		if rest, ok := bytes.CutPrefix(got, ev); ok {
			got = rest
			continue
		}
		if !isUsageOnly(ev) {
			return false
		}
	}
	return len(got) == 0
}

// fuzzStreamUpstream answers every request with the fuzzer's bytes as an
// event stream, size bytes per Read.
type fuzzStreamUpstream struct {
	mu     sync.Mutex
	stream []byte
	size   int
}

func (u *fuzzStreamUpstream) set(stream []byte, size int) {
	u.mu.Lock()
	u.stream, u.size = stream, size
	u.mu.Unlock()
}

func (u *fuzzStreamUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	io.Copy(io.Discard, req.Body) //nolint:errcheck // as a transport sends it
	req.Body.Close()
	u.mu.Lock()
	stream, size := u.stream, u.size
	u.mu.Unlock()
	var events [][]byte
	for rest := stream; len(rest) > 0; {
		n := min(size, len(rest))
		events, rest = append(events, rest[:n]), rest[n:]
	}
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: &cannedBody{events: events}, ContentLength: -1, Request: req}, nil
}
