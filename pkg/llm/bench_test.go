package llm

import (
	"encoding/json"
	"strings"
	"testing"
)

func BenchmarkParseRequest(b *testing.B) {
	for _, bc := range []struct {
		name string
		kind Kind
		body string
	}{
		{"chat-2KB", Chat, chat2K},
		{"chat-100KB", Chat, chat100K},
		{"chat-parts", Chat, chatParts},
		{"messages", Messages, messagesBody},
		{"embeddings", Embeddings, embeddingsBody},
	} {
		body := []byte(bc.body)
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseRequest(bc.kind, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncodingJSON is the alternative ParseRequest was measured
// against: decoding the same fields with encoding/json into small structs
// (content kept raw, so even less work than ParseRequest's counting).
func BenchmarkEncodingJSON(b *testing.B) {
	type request struct {
		Model     string            `json:"model"`
		MaxTokens *int64            `json:"max_tokens"`
		Stream    bool              `json:"stream"`
		Messages  []json.RawMessage `json:"messages"`
	}
	for _, bc := range []struct{ name, body string }{{"chat-2KB", chat2K}, {"chat-100KB", chat100K}} {
		body := []byte(bc.body)
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				var r request
				if err := json.Unmarshal(body, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkWithIncludeUsage(b *testing.B) {
	for _, bc := range []struct{ name, body string }{{"chat-2KB", chat2K}, {"chat-100KB", chat100K}} {
		body := []byte(bc.body)
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := WithIncludeUsage(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAppendIncludeUsage reuses its buffer, as an edge with a pool does.
func BenchmarkAppendIncludeUsage(b *testing.B) {
	for _, bc := range []struct{ name, body string }{{"chat-2KB", chat2K}, {"chat-100KB", chat100K}} {
		body := []byte(bc.body)
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				var err error
				if buf, err = AppendIncludeUsage(buf[:0], body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseUsage(b *testing.B) {
	body := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1718000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat(lorem, 20) + `","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":400,"total_tokens":419,"prompt_tokens_details":{"cached_tokens":0}}}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := ParseUsage(Chat, body); !ok {
			b.Fatal("no usage")
		}
	}
}

// BenchmarkStreamMeter reports the cost of one Observe call (ns/op is per
// chunk) over whole streams: one SSE event per chunk, as providers flush
// them, or 37-byte pieces that split most lines.
func BenchmarkStreamMeter(b *testing.B) {
	for _, bc := range []struct {
		name   string
		kind   Kind
		stream string
		size   int
	}{
		{"openai-event-chunks", Chat, openAIStream(words(200), 20, 200), 0},
		{"anthropic-event-chunks", Messages, anthropicStream(words(200), 20, 0, 200), 0},
		{"openai-37B-chunks", Chat, openAIStream(words(200), 20, 200), 37},
	} {
		var chunks [][]byte
		if bc.size == 0 {
			for _, ev := range strings.SplitAfter(bc.stream, "\n\n") {
				if ev != "" {
					chunks = append(chunks, []byte(ev))
				}
			}
		} else {
			for rest := bc.stream; rest != ""; {
				n := min(len(rest), bc.size)
				chunks = append(chunks, []byte(rest[:n]))
				rest = rest[n:]
			}
		}
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.stream) / len(chunks)))
			b.ReportAllocs()
			m := NewStreamMeter(bc.kind, 1)
			i := 0
			for b.Loop() {
				m.Observe(chunks[i])
				if i++; i == len(chunks) {
					if _, complete := m.Usage(); !complete {
						b.Fatal("incomplete usage")
					}
					i = 0
					m.Reset(bc.kind, 1)
				}
			}
		})
	}
}
