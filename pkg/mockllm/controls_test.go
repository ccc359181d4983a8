package mockllm

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pkg/llm"
)

func TestDelay(t *testing.T) {
	_, srv := server(t, Options{})
	start := time.Now()
	resp, _, _ := post(t, srv, "/v1/chat/completions", chatOne, HeaderDelayMs, "80")
	if took := time.Since(start); resp.StatusCode != 200 || took < 80*time.Millisecond {
		t.Errorf("status %d after %v, want 200 after 80ms", resp.StatusCode, took)
	}
	start = time.Now()
	_, stream, _ := post(t, srv, "/v1/chat/completions", streamed(chatOne, ""), HeaderChunkDelayMs, "30", HeaderChunks, "3")
	// role, 3 pieces, finish: four gaps; [DONE] follows the finish at once.
	if took := time.Since(start); len(events(t, stream)) != 6 || took < 120*time.Millisecond {
		t.Errorf("%d events in %v, want 6 in 120ms or more", len(events(t, stream)), took)
	}
}

// The events that close a stream (usage, the end) follow the last generated
// one at once: the chunk delay stands for generating tokens. Each wait is
// marked in the answer where it happens, instead of timed.
func TestChunkDelayNotBeforeTheClosingEvents(t *testing.T) {
	h, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	const slept = "<slept>\n"
	t.Cleanup(func() { sleep = waitFor })
	for _, tt := range []struct{ path, body, lastGenerated string }{
		{"/v1/chat/completions", `{"model":"gpt-4","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`, `"finish_reason":"stop"`},
		{"/v1/messages", streamed(msgBody, ""), "content_block_stop"},
	} {
		rec := httptest.NewRecorder()
		sleep = func(ctx context.Context, d time.Duration) bool {
			if d > 0 {
				rec.Body.WriteString(slept)
			}
			return ctx.Err() == nil
		}
		req := httptest.NewRequest(http.MethodPost, tt.path, strings.NewReader(tt.body))
		req.Header.Set(HeaderChunkDelayMs, "300")
		req.Header.Set(HeaderChunks, "1")
		h.ServeHTTP(rec, req)
		out := rec.Body.String()
		// The closing events are those after the last generated one.
		last := strings.Index(out, tt.lastGenerated)
		if last < 0 {
			t.Fatalf("%s: no %q event in %q", tt.path, tt.lastGenerated, out)
		}
		if !strings.Contains(out[:last], slept) {
			t.Errorf("%s: no chunk delay between the generated events: %q", tt.path, out)
		}
		if strings.Contains(out[last:], slept) {
			t.Errorf("%s: a chunk delay before a closing event: %q", tt.path, out)
		}
	}
}

// A client that hangs up ends the delays at once.
func TestDelayEndsWithClient(t *testing.T) {
	h, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	returned := make(chan time.Time, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		returned <- time.Now()
	}))
	defer srv.Close()

	for _, tt := range []struct{ header, body string }{
		{HeaderDelayMs, chatOne},
		{HeaderChunkDelayMs, streamed(chatOne, "")},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(tt.body))
		req.Header.Set(tt.header, "60000")
		go func() {
			time.Sleep(50 * time.Millisecond)
			cancel()
		}()
		start := time.Now()
		if resp, err := srv.Client().Do(req); err == nil {
			_, err = io.ReadAll(resp.Body) // a stream starts at once and is cut by cancel
			resp.Body.Close()
			if err == nil {
				t.Errorf("%s: the request finished despite the cancel", tt.header)
			}
		}
		select {
		case at := <-returned:
			if at.Sub(start) > 2*time.Second {
				t.Errorf("%s: the handler ran %v after the client left", tt.header, at.Sub(start))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the handler is still waiting after the client left", tt.header)
		}
	}
}

func TestStatus(t *testing.T) {
	_, srv := server(t, Options{})
	tests := []struct {
		path, status string
		want         string
		retryAfter   string
	}{
		{"/v1/chat/completions", "429", `{"error":{"message":"mock error 429 (X-Mock-Status)","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`, "1"},
		{"/v1/embeddings", "500", `{"error":{"message":"mock error 500 (X-Mock-Status)","type":"server_error","param":null,"code":null}}`, ""},
		{"/v1/messages", "529", `{"type":"error","error":{"type":"overloaded_error","message":"mock error 529 (X-Mock-Status)"}}`, "1"},
		{"/v1/messages", "401", `{"type":"error","error":{"type":"authentication_error","message":"mock error 401 (X-Mock-Status)"}}`, ""},
		{"/any/service", "503", `{"error":{"message":"mock error 503 (X-Mock-Status)","type":"server_error","param":null,"code":null}}`, "1"},
	}
	for _, tt := range tests {
		resp, data, _ := post(t, srv, tt.path, "{}", HeaderStatus, tt.status)
		if resp.Status[:3] != tt.status || strings.TrimSpace(string(data)) != tt.want || resp.Header.Get("Retry-After") != tt.retryAfter {
			t.Errorf("%s %s: %s %s (Retry-After %q)\nwant %s", tt.path, tt.status, resp.Status, data, resp.Header.Get("Retry-After"), tt.want)
		}
	}
	if resp, _, _ := post(t, srv, "/v1/chat/completions", chatOne, HeaderStatus, "200"); resp.StatusCode != 200 {
		t.Errorf("X-Mock-Status 200: %s", resp.Status)
	}
}

func TestBadControlHeaders(t *testing.T) {
	_, srv := server(t, Options{MaxDelay: time.Second})
	for _, h := range [][2]string{
		{HeaderStatus, "302"}, {HeaderStatus, "abc"}, {HeaderDelayMs, "-1"}, {HeaderDelayMs, "1001"},
		{HeaderBreakAfter, "x"}, {HeaderOmitUsage, "maybe"}, {HeaderChunks, "100000"},
	} {
		resp, data, _ := post(t, srv, "/v1/messages", msgBody, h[0], h[1])
		if resp.StatusCode != 400 || !strings.Contains(string(data), h[0]) || !strings.HasPrefix(string(data), `{"type":"error"`) {
			t.Errorf("%s: %s: %d %s", h[0], h[1], resp.StatusCode, data)
		}
	}
}

func TestBreakAfter(t *testing.T) {
	h, srv := server(t, Options{})
	want, _ := h.ExpectedUsage(llm.Messages, []byte(msgBody))
	tests := []struct {
		name, path, body, n string
		events              int
		kind                llm.Kind
		usage               llm.Usage
	}{
		// The meter's input estimate is 1; output comes from the text seen.
		// The role chunk and two pieces of 16 words, 160 bytes.
		{"chat after 3", "/v1/chat/completions", streamed(chatLong, includeUsage), "3", 3, llm.Chat,
			llm.Usage{InputTokens: 1, OutputTokens: 40, Estimated: true}},
		{"chat after 0", "/v1/chat/completions", streamed(chatLong, includeUsage), "0", 0, llm.Chat,
			llm.Usage{InputTokens: 1, Estimated: true}},
		// A break later than the last piece cuts just before the usage.
		// Role, 8 pieces (638 bytes), finish.
		{"chat after 1000", "/v1/chat/completions", streamed(chatLong, includeUsage), "1000", 10, llm.Chat,
			llm.Usage{InputTokens: 1, OutputTokens: 160, Estimated: true}},
		// message_start has told the input already; the first piece is "mock".
		{"messages after 4", "/v1/messages", streamed(msgBody, ""), "4", 4, llm.Messages,
			llm.Usage{InputTokens: want.InputTokens, OutputTokens: 1, Estimated: true}},
		// Up to content_block_stop: 41 bytes of text.
		{"messages after 1000", "/v1/messages", streamed(msgBody, ""), "1000", 12, llm.Messages,
			llm.Usage{InputTokens: want.InputTokens, OutputTokens: 11, Estimated: true}},
	}
	for _, tt := range tests {
		resp, stream, err := post(t, srv, tt.path, tt.body, HeaderBreakAfter, tt.n)
		if resp.StatusCode != 200 || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: status %d, read error %v; want 200 and an unexpected EOF", tt.name, resp.StatusCode, err)
		}
		if got := len(events(t, stream)); got != tt.events {
			t.Errorf("%s: %d events, want %d", tt.name, got, tt.events)
		}
		u, complete, done := meterStream(tt.kind, stream, 7)
		if u != tt.usage || complete || done {
			t.Errorf("%s: meter %+v, complete %v, done %v; want %+v, incomplete", tt.name, u, complete, done, tt.usage)
		}
	}

	// An answer that is not streamed stops after N bytes.
	resp, data, err := post(t, srv, "/v1/chat/completions", chatOne, HeaderBreakAfter, "10")
	if resp.StatusCode != 200 || len(data) != 10 || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("unstreamed break: status %d, %q, %v", resp.StatusCode, data, err)
	}
}

func TestOmitUsage(t *testing.T) {
	_, srv := server(t, Options{})
	for _, tt := range []struct {
		path, body string
		kind       llm.Kind
	}{
		{"/v1/chat/completions", chatTwo, llm.Chat},
		{"/v1/completions", complBody, llm.Completions},
		{"/v1/messages", msgBody, llm.Messages},
		{"/v1/embeddings", `{"model":"m","input":"x"}`, llm.Embeddings},
	} {
		_, data, _ := post(t, srv, tt.path, tt.body, HeaderOmitUsage, "1")
		if strings.Contains(string(data), "usage") {
			t.Errorf("%s: usage despite %s: %s", tt.path, HeaderOmitUsage, data)
		}
		if tt.kind == llm.Embeddings {
			continue
		}
		_, stream, err := post(t, srv, tt.path, streamed(tt.body, includeUsage), HeaderOmitUsage, "true")
		if err != nil || strings.Contains(string(stream), "usage") {
			t.Errorf("%s: streamed usage despite %s (%v): %s", tt.path, HeaderOmitUsage, err, stream)
		}
		if u, complete, done := meterStream(tt.kind, stream, 13); complete || !done || !u.Estimated {
			t.Errorf("%s: meter %+v, complete %v, done %v", tt.path, u, complete, done)
		}
	}
}

// Events arrive one by one as they are sent, not all at the end.
func TestStreamFlushesEachEvent(t *testing.T) {
	_, srv := server(t, Options{})
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/messages", strings.NewReader(streamed(msgBody, "")))
	req.Header.Set(HeaderChunkDelayMs, "200")
	start := time.Now()
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "event: message_start\n" || time.Since(start) > 150*time.Millisecond {
		t.Errorf("first line %q after %v (%v); want message_start at once", line, time.Since(start), err)
	}
}
