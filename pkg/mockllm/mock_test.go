package mockllm

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pkg/llm"
)

const (
	chatOne   = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello there, mock!"}]}`
	chatTwo   = `{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"max_tokens":7,"n":2}`
	chatLong  = `{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}],"max_tokens":1000}`
	complBody = `{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","max_tokens":3}`
	msgBody   = `{"model":"claude-3-5-haiku-latest","max_tokens":9,"system":"Be brief.","messages":[{"role":"user","content":"Hello, Claude"},{"role":"assistant","content":"Hi."},{"role":"user","content":"More?"}]}`
)

func TestChat(t *testing.T) {
	h, srv := server(t, Options{})
	tests := []struct {
		body, text, finish string
		choices            int
		input, output      int64
	}{
		// "user" + "Hello there, mock!": 22 bytes, 6 tokens, +3 for the message.
		{chatOne, "mock reply to 1 message.", "stop", 1, 9, 5},
		// 21 bytes of strings: 6 tokens, +3 per message; 7 tokens per choice.
		{chatTwo, "mock reply to 2 messages. mock reply", "length", 2, 6 + 6, 14},
		// 128 tokens, the cap: 25 times the phrase and three words.
		{chatLong, strings.Repeat("mock reply to 1 message. ", 25) + "mock reply to", "stop", 1, 2 + 3, 128},
	}
	for _, tt := range tests {
		resp, data, err := post(t, srv, "/v1/chat/completions", tt.body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, %v: %s", resp.StatusCode, err, data)
		}
		a := decode[chatAnswer](t, data)
		if a.Object != "chat.completion" || !strings.HasPrefix(a.ID, "chatcmpl-mock-") || len(a.Choices) != tt.choices {
			t.Errorf("answer %s", data)
		}
		for i, c := range a.Choices {
			if c.Index != i || c.Message.Role != "assistant" || c.Message.Content != tt.text || c.FinishReason != tt.finish {
				t.Errorf("choice %d: %+v, want text %q, finish %q", i, c, tt.text, tt.finish)
			}
		}
		if a.Usage == nil || a.Usage.PromptTokens != tt.input || a.Usage.CompletionTokens != tt.output ||
			a.Usage.TotalTokens != tt.input+tt.output {
			t.Errorf("usage %+v, want %d + %d", a.Usage, tt.input, tt.output)
		}
		want := llm.Usage{InputTokens: tt.input, OutputTokens: tt.output}
		if u, err := h.ExpectedUsage(llm.Chat, []byte(tt.body)); err != nil || u != want {
			t.Errorf("ExpectedUsage = %+v, %v; want %+v", u, err, want)
		}
		if u, ok := llm.ParseUsage(llm.Chat, data); !ok || u != want {
			t.Errorf("llm.ParseUsage = %+v, %v; want %+v", u, ok, want)
		}
	}
	// Deterministic: the same request gets the same bytes.
	_, a, _ := post(t, srv, "/v1/chat/completions", chatTwo)
	_, b, _ := post(t, srv, "/v1/chat/completions", chatTwo)
	if string(a) != string(b) {
		t.Errorf("two answers to one request differ:\n%s\n%s", a, b)
	}
}

func TestCompletions(t *testing.T) {
	_, srv := server(t, Options{})
	resp, data, _ := post(t, srv, "/v1/completions", complBody)
	a := decode[chatAnswer](t, data)
	if resp.StatusCode != 200 || a.Object != "text_completion" || len(a.Choices) != 1 ||
		a.Choices[0].Text != "mock completion of" || a.Choices[0].FinishReason != "length" {
		t.Errorf("answer %s", data)
	}
	// "Say this is a test": 18 bytes, 5 tokens, +3 for the prompt.
	if a.Usage == nil || a.Usage.PromptTokens != 8 || a.Usage.CompletionTokens != 3 {
		t.Errorf("usage %+v", a.Usage)
	}
}

func TestEmbeddings(t *testing.T) {
	_, srv := server(t, Options{EmbeddingDims: 4})
	type answer struct {
		Object string `json:"object"`
		Data   []struct {
			Object    string `json:"object"`
			Index     int    `json:"index"`
			Embedding any    `json:"embedding"`
		} `json:"data"`
		Model string `json:"model"`
		Usage struct {
			PromptTokens int64 `json:"prompt_tokens"`
			TotalTokens  int64 `json:"total_tokens"`
		} `json:"usage"`
	}
	body := `{"model":"text-embedding-3-small","input":["The food was delicious","and the waiter"]}`
	_, data, _ := post(t, srv, "/v1/embeddings", body)
	a := decode[answer](t, data)
	// 22 + 14 bytes: 9 tokens, +3 per input.
	if a.Object != "list" || len(a.Data) != 2 || a.Usage.PromptTokens != 15 || a.Usage.TotalTokens != 15 {
		t.Fatalf("answer %s", data)
	}
	for i, d := range a.Data {
		v, ok := d.Embedding.([]any)
		if d.Index != i || !ok || len(v) != 4 {
			t.Errorf("embedding %d: %+v", i, d)
		}
		for _, x := range v {
			if f := x.(float64); f < -1 || f >= 1 {
				t.Errorf("component %v out of [-1, 1)", f)
			}
		}
	}
	if u, ok := llm.ParseUsage(llm.Embeddings, data); !ok || u != (llm.Usage{InputTokens: 15}) {
		t.Errorf("llm.ParseUsage = %+v, %v", u, ok)
	}

	// The official Python SDK asks for base64 by default.
	_, data, _ = post(t, srv, "/v1/embeddings", `{"model":"m","input":"x","encoding_format":"base64"}`)
	a = decode[answer](t, data)
	s, _ := a.Data[0].Embedding.(string)
	if raw, err := base64.StdEncoding.DecodeString(s); err != nil || len(raw) != 16 {
		t.Errorf("base64 embedding %q: %d bytes, %v", s, len(raw), err)
	}

	resp, data, _ := post(t, srv, "/v1/embeddings", `{"model":"m"}`)
	if resp.StatusCode != 400 || !strings.Contains(string(data), `\"input\" is required`) {
		t.Errorf("no input: %d %s", resp.StatusCode, data)
	}
}

func TestMessages(t *testing.T) {
	h, srv := server(t, Options{})
	_, data, _ := post(t, srv, "/v1/messages", msgBody)
	a := decode[messageAnswer](t, data)
	if a.Type != "message" || a.Model != "claude-3-5-haiku-latest" || len(a.Content) != 1 ||
		a.Content[0].Text != "mock reply to 3 messages. mock reply to 3" || a.StopReason != "max_tokens" {
		t.Errorf("answer %s", data)
	}
	want, _ := h.ExpectedUsage(llm.Messages, []byte(msgBody))
	if a.Usage == nil || a.Usage.InputTokens != want.InputTokens || a.Usage.OutputTokens != 9 || want.OutputTokens != 9 {
		t.Errorf("usage %+v, want %+v", a.Usage, want)
	}
	if u, ok := llm.ParseUsage(llm.Messages, data); !ok || u != want {
		t.Errorf("llm.ParseUsage = %+v, %v; want %+v", u, ok, want)
	}
}

func TestRequestErrors(t *testing.T) {
	_, srv := server(t, Options{MaxBodyBytes: 100})
	tests := []struct {
		path, body string
		status     int
		want       string
	}{
		{"/v1/chat/completions", `{"model":`, 400,
			`{"error":{"message":"the body is not valid JSON: unexpected end of JSON input","type":"invalid_request_error","param":null,"code":null}}`},
		{"/v1/messages", `{"model":"claude"}`, 400,
			`{"type":"error","error":{"type":"invalid_request_error","message":"\"max_tokens\" is required"}}`},
		{"/v1/messages", `{"model":"` + strings.Repeat("x", 100) + `"}`, 413,
			`{"type":"error","error":{"type":"request_too_large","message":"the request body is larger than 100 bytes"}}`},
		{"/anything", strings.Repeat("x", 101), 413,
			`{"error":{"message":"the request body is larger than 100 bytes","type":"invalid_request_error","param":null,"code":"request_too_large"}}`},
	}
	for _, tt := range tests {
		resp, data, _ := post(t, srv, tt.path, tt.body)
		if resp.StatusCode != tt.status || strings.TrimSpace(string(data)) != tt.want {
			t.Errorf("%s %s: %d %s\nwant %d %s", tt.path, tt.body, resp.StatusCode, data, tt.status, tt.want)
		}
	}
}

func TestModels(t *testing.T) {
	_, srv := server(t, Options{Models: []string{"a", "b"}})
	get := func(anthropic bool) string {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/models", nil)
		if anthropic {
			req.Header.Set("anthropic-version", "2023-06-01")
		}
		return get(t, srv, req)
	}
	if got, want := get(false), `{"object":"list","data":[{"id":"a","object":"model","created":1735689600,"owned_by":"tollgate-mock"},{"id":"b","object":"model","created":1735689600,"owned_by":"tollgate-mock"}]}`; got != want {
		t.Errorf("OpenAI models:\n got %s\nwant %s", got, want)
	}
	if got, want := get(true), `{"data":[{"type":"model","id":"a","display_name":"a","created_at":"2025-01-01T00:00:00Z"},{"type":"model","id":"b","display_name":"b","created_at":"2025-01-01T00:00:00Z"}],"has_more":false,"first_id":"a","last_id":"b"}`; got != want {
		t.Errorf("Anthropic models:\n got %s\nwant %s", got, want)
	}
}

func TestEcho(t *testing.T) {
	_, srv := server(t, Options{})
	_, data, _ := post(t, srv, "/acme/search/v2/find?q=a%20b&x=1", "0123456789")
	if got, want := string(data), `{"method":"POST","path":"/acme/search/v2/find","query":"q=a%20b\u0026x=1","body_bytes":10}`; got != want {
		t.Errorf("echo:\n got %s\nwant %s", got, want)
	}
	// Only POST is an LLM call; anything else on those paths is echoed.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/chat/completions", nil)
	got := get(t, srv, req)
	if want := `{"method":"GET","path":"/v1/chat/completions","query":"","body_bytes":0}`; got != want {
		t.Errorf("GET on an LLM path: %s", got)
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := (Options{}).Validate(); err != nil {
		t.Errorf("zero Options: %v", err)
	}
	err := Options{Chunks: -1, MaxReplyTokens: 2_000_000, MaxDelay: -1, Models: []string{""}}.Validate()
	for _, want := range []string{"Chunks", "MaxReplyTokens", "MaxDelay", "Models"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want a complaint about %s", err, want)
		}
	}
	if _, err := New(Options{EmbeddingDims: -3}); err == nil {
		t.Error("New accepted invalid options")
	}
}
