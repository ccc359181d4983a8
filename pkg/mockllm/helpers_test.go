package mockllm

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pkg/llm"
)

// server starts a mock on a real listener: streams, flushes and dropped
// connections only show their true behaviour over TCP.
func server(t *testing.T, opts Options) (*Handler, *httptest.Server) {
	t.Helper()
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv
}

// post sends body and returns the response with its body read; readErr is
// what reading the body failed with (a dropped connection), if anything.
func post(t *testing.T, srv *httptest.Server, path, body string, headers ...string) (resp *http.Response, data []byte, readErr error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err = srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, readErr = io.ReadAll(resp.Body)
	return resp, data, readErr
}

// get sends req and returns the body.
func get(t *testing.T, srv *httptest.Server, req *http.Request) string {
	t.Helper()
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func decode[T any](t *testing.T, data []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("%s: %v", data, err)
	}
	return v
}

// event is one server-sent event.
type event struct{ name, data string }

// events splits a stream into its events.
func events(t *testing.T, stream []byte) []event {
	t.Helper()
	var out []event
	for _, block := range strings.Split(string(stream), "\n\n") {
		if block == "" {
			continue
		}
		var e event
		for _, line := range strings.Split(block, "\n") {
			switch {
			case strings.HasPrefix(line, "event: "):
				e.name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				e.data = line[len("data: "):]
			default:
				t.Fatalf("unexpected line %q in stream", line)
			}
		}
		if e.data != "[DONE]" && !json.Valid([]byte(e.data)) {
			t.Fatalf("event data is not JSON: %s", e.data)
		}
		out = append(out, e)
	}
	return out
}

// The answer shapes, as far as the tests look into them.
type (
	chatAnswer struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Index   int `json:"index"`
			Message struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"message"`
			Text         string `json:"text"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage *struct {
			PromptTokens     int64 `json:"prompt_tokens"`
			CompletionTokens int64 `json:"completion_tokens"`
			TotalTokens      int64 `json:"total_tokens"`
		} `json:"usage"`
	}
	chatChunk struct {
		Choices []struct {
			Index int `json:"index"`
			Delta struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"delta"`
			Text         string  `json:"text"`
			FinishReason *string `json:"finish_reason"`
		} `json:"choices"`
		Usage *struct {
			PromptTokens     int64 `json:"prompt_tokens"`
			CompletionTokens int64 `json:"completion_tokens"`
		} `json:"usage"`
	}
	messageAnswer struct {
		Type    string `json:"type"`
		Model   string `json:"model"`
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
		StopReason string `json:"stop_reason"`
		Usage      *struct {
			InputTokens  int64 `json:"input_tokens"`
			OutputTokens int64 `json:"output_tokens"`
		} `json:"usage"`
	}
)

// meterStream runs a stream through llm's StreamMeter in chunks of size n.
func meterStream(kind llm.Kind, stream []byte, n int) (llm.Usage, bool, bool) {
	m := llm.NewStreamMeter(kind, 1)
	for rest := stream; len(rest) > 0; {
		k := min(n, len(rest))
		m.Observe(rest[:k])
		rest = rest[k:]
	}
	u, complete := m.Usage()
	return u, complete, m.Done()
}
