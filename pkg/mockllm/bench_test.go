package mockllm

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkHandler measures the mock without the network: the cost it adds
// as the baseline of a load test.
func BenchmarkHandler(b *testing.B) {
	h, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, path, body string }{
		{"chat", "/v1/chat/completions", chatTwo},
		{"chat-stream", "/v1/chat/completions", streamed(chatLong, includeUsage)},
		{"messages", "/v1/messages", msgBody},
		{"messages-stream", "/v1/messages", streamed(msgBody, "")},
		{"embeddings", "/v1/embeddings", `{"model":"m","input":["a","b"]}`},
		{"echo", "/svc/anything", `{"a":1}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest("POST", bc.path, strings.NewReader(bc.body)))
				if w.Code != 200 {
					b.Fatal(w.Code, w.Body)
				}
			}
		})
	}
}
