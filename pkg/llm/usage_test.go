package llm

import (
	"math"
	"strings"
	"testing"
)

func TestParseUsage(t *testing.T) {
	tests := []struct {
		name string
		kind Kind
		body string
		want Usage
		ok   bool
	}{
		{"chat", Chat, `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi, \"usage\": {}"},"finish_reason":"stop"}],
			"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":8,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":4}}}`,
			Usage{InputTokens: 19, OutputTokens: 10, CacheReadTokens: 8}, true},
		{"completions", Completions, `{"id":"cmpl-1","object":"text_completion","choices":[{"text":"ok","index":0}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`,
			Usage{InputTokens: 5, OutputTokens: 7}, true},
		{"embeddings", Embeddings, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2]}],"model":"m","usage":{"prompt_tokens":8,"total_tokens":8}}`,
			Usage{InputTokens: 8}, true},
		{"embeddings total only", Embeddings, `{"usage":{"total_tokens":3}}`, Usage{InputTokens: 3}, true},
		{"anthropic", Messages, `{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn",
			"usage":{"input_tokens":2095,"cache_creation_input_tokens":100,"cache_read_input_tokens":1000,"output_tokens":503}}`,
			Usage{InputTokens: 3195, OutputTokens: 503, CacheReadTokens: 1000, CacheWriteTokens: 100}, true},
		{"total instead of completion", Chat, `{"usage":{"prompt_tokens":5,"total_tokens":12}}`, Usage{InputTokens: 5, OutputTokens: 7}, true},
		{"anthropic names on openai path", Chat, `{"usage":{"input_tokens":5,"output_tokens":6}}`, Usage{InputTokens: 5, OutputTokens: 6}, true},
		{"anthropic counts that overflow saturate", Messages, `{"usage":{"input_tokens":9223372036854775807,"cache_creation_input_tokens":2,"cache_read_input_tokens":3,"output_tokens":1}}`,
			Usage{InputTokens: math.MaxInt64, OutputTokens: 1, CacheReadTokens: 3, CacheWriteTokens: 2}, true},
		{"no usage", Chat, `{"choices":[]}`, Usage{}, false},
		{"null usage", Chat, `{"usage":null}`, Usage{}, false},
		{"no output", Chat, `{"usage":{"prompt_tokens":5}}`, Usage{}, false},
		{"no input", Messages, `{"usage":{"output_tokens":5}}`, Usage{}, false},
		{"bad counts ignored", Chat, `{"usage":{"prompt_tokens":-1,"completion_tokens":"2"}}`, Usage{}, false},
		{"invalid json", Chat, `{"usage":{"prompt_tokens":5,"completion_tokens":6}`, Usage{}, false},
		{"not an object", Chat, `[{"usage":{"prompt_tokens":5,"completion_tokens":6}}]`, Usage{}, false},
		{"error body", Messages, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, Usage{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseUsage(tt.kind, []byte(tt.body))
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: ParseUsage = %+v, %v; want %+v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestEstimateOutput(t *testing.T) {
	chat := `{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"0123456789abcdef"},"finish_reason":"stop"}]}`
	tests := []struct {
		name string
		kind Kind
		body string
		want int64
	}{
		{"chat", Chat, chat, 4},
		{"chat with a tool call", Chat, `{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"f","arguments":"{\"city\":\"Paris\"}"}}]}}]}`, 5},
		{"completions", Completions, `{"object":"text_completion","choices":[{"text":"0123456789","index":0}]}`, 3},
		{"anthropic", Messages, `{"type":"message","role":"assistant","content":[{"type":"text","text":"0123456789abcdef0123"},{"type":"text","text":"4567"}],"stop_reason":"end_turn"}`, 6},
		{"embeddings", Embeddings, `{"object":"list","data":[{"embedding":[0.1,0.2]}]}`, 0},
		{"cut off after the text", Chat, chat[:strings.Index(chat, `,"finish_reason"`)], 4},
		{"cut off inside the text", Chat, chat[:strings.Index(chat, "abc")], 0},
		{"not json", Chat, `<html>bad gateway</html>`, 0},
		{"empty", Chat, ``, 0},
	}
	for _, tt := range tests {
		if got := EstimateOutput(tt.kind, []byte(tt.body)); got != tt.want {
			t.Errorf("%s: EstimateOutput = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestTotalTokensSaturates(t *testing.T) {
	for _, u := range []Usage{{InputTokens: math.MaxInt64, OutputTokens: math.MaxInt64}, {InputTokens: 1, OutputTokens: math.MaxInt64}} {
		if got := u.TotalTokens(); got != math.MaxInt64 {
			t.Errorf("%+v: TotalTokens() = %d, want %d", u, got, int64(math.MaxInt64))
		}
	}
	if got := (Usage{InputTokens: 19, OutputTokens: 10}).TotalTokens(); got != 29 {
		t.Errorf("TotalTokens() = %d, want 29", got)
	}
}
