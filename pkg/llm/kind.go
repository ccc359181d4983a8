package llm

import (
	"net/http"
	"strings"
)

// Kind is the LLM endpoint a request is for. It decides which fields a body
// has, how usage is reported and which error shape a client expects.
type Kind uint8

const (
	// Other is any endpoint the edge proxies without looking inside.
	Other Kind = iota
	// Chat is OpenAI's POST /v1/chat/completions.
	Chat
	// Completions is OpenAI's legacy POST /v1/completions.
	Completions
	// Embeddings is OpenAI's POST /v1/embeddings.
	Embeddings
	// Messages is Anthropic's POST /v1/messages.
	Messages
)

var kindNames = [...]string{"other", "chat", "completions", "embeddings", "messages"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Dialect is the family of API a kind belongs to: it picks the error body a
// client's SDK can read.
type Dialect uint8

const (
	// OpenAI is OpenAI's API and every server compatible with it.
	OpenAI Dialect = iota
	// Anthropic is Anthropic's Messages API.
	Anthropic
)

// Dialect returns the API family of k; Other counts as OpenAI, whose error
// shape is the edge's default.
func (k Kind) Dialect() Dialect {
	if k == Messages {
		return Anthropic
	}
	return OpenAI
}

// KindOf tells which endpoint a request is for. The path matches by suffix, so
// a provider mounted under a prefix ("/openai/v1/chat/completions") is still
// recognised; only POST creates anything, so other methods (GET
// /v1/chat/completions lists stored completions) are Other. The edge should
// ask only for services registered as LLM providers: a plain HTTP service may
// well have a path that ends in /v1/messages.
func KindOf(method, path string) Kind {
	if method != http.MethodPost {
		return Other
	}
	switch {
	case strings.HasSuffix(path, "/v1/chat/completions"):
		return Chat
	case strings.HasSuffix(path, "/v1/completions"):
		return Completions
	case strings.HasSuffix(path, "/v1/embeddings"):
		return Embeddings
	case strings.HasSuffix(path, "/v1/messages"):
		return Messages
	}
	return Other
}
