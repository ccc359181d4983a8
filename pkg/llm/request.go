package llm

import (
	"fmt"
)

// Request is what the edge needs to know about an LLM request before it goes
// upstream: the model for the model filter, and enough to reserve the
// request's worst-case cost.
type Request struct {
	Kind  Kind
	Model string
	// MaxTokens is max_tokens, or for chat the larger of max_tokens and
	// max_completion_tokens when both are set (the worst case is what the
	// edge reserves); 0 when absent.
	MaxTokens int64
	// Choices is how many completions are generated, each up to MaxTokens:
	// n for chat and completions (or best_of when larger: those are billed
	// too), 1 otherwise.
	Choices int64
	Stream  bool
	// IncludeUsage is stream_options.include_usage (OpenAI kinds).
	IncludeUsage bool
	// Items counts the messages (Chat, Messages), prompts (Completions) or
	// inputs (Embeddings); a list of token ids counts as one.
	Items int
	// InputTokensEstimate is a cheap guess at the input tokens; see the
	// package documentation for the heuristic.
	InputTokensEstimate int64
}

// MaxOutputTokens is the most output the request can be billed for: MaxTokens
// for each choice, 0 when MaxTokens is absent (the edge then uses the model's
// own maximum).
func (r Request) MaxOutputTokens() int64 { return r.MaxTokens * r.Choices }

// Bounds on the numbers a request may ask for. Providers have lower limits of
// their own; these only keep the edge's arithmetic (tokens times price in
// nano-dollars) far from overflowing whatever a client sends.
const (
	MaxTokensLimit = 1_000_000_000
	MaxChoices     = 128 // OpenAI's own limit on n
	MaxModelBytes  = 256 // model ids end up in usage events and reports
)

// RequestError says what is wrong with a request body in words a client can
// act on. Param names the offending field ("" for the body as a whole), for
// the "param" of an OpenAI error.
type RequestError struct {
	Param   string
	Message string
}

func (e *RequestError) Error() string { return e.Message }

func fieldError(f field, format string) *RequestError {
	name := fieldNames[f]
	return &RequestError{Param: name, Message: fmt.Sprintf(format, `"`+name+`"`)}
}

// field is a top-level request field that the edge reads.
type field uint8

const (
	fNone field = iota
	fModel
	fMaxTokens
	fMaxCompletionTokens
	fStream
	fStreamOptions
	fN
	fBestOf
	fMessages
	fPrompt
	fInput
	fSystem
	fTools
	fFunctions
	fSuffix
)

var fieldNames = [...]string{"", "model", "max_tokens", "max_completion_tokens", "stream",
	"stream_options", "n", "best_of", "messages", "prompt", "input", "system", "tools",
	"functions", "suffix"}

// kindFields says which fields each kind has; the others are skipped unread,
// so that, say, a "max_tokens" sent to /v1/embeddings is the provider's
// business, not the edge's.
var kindFields = [...]uint32{
	Chat: 1<<fModel | 1<<fMaxTokens | 1<<fMaxCompletionTokens | 1<<fStream | 1<<fStreamOptions |
		1<<fN | 1<<fMessages | 1<<fTools | 1<<fFunctions,
	Completions: 1<<fModel | 1<<fMaxTokens | 1<<fStream | 1<<fStreamOptions | 1<<fN |
		1<<fBestOf | 1<<fPrompt | 1<<fSuffix,
	Embeddings: 1<<fModel | 1<<fInput,
	Messages:   1<<fModel | 1<<fMaxTokens | 1<<fStream | 1<<fMessages | 1<<fSystem | 1<<fTools,
}

func fieldOf(kind Kind, raw []byte, escaped bool) field {
	name := raw
	if escaped {
		name = []byte(unescape(raw))
	}
	var f field
	switch string(name) {
	case "model":
		f = fModel
	case "max_tokens":
		f = fMaxTokens
	case "max_completion_tokens":
		f = fMaxCompletionTokens
	case "stream":
		f = fStream
	case "stream_options":
		f = fStreamOptions
	case "n":
		f = fN
	case "best_of":
		f = fBestOf
	case "messages":
		f = fMessages
	case "prompt":
		f = fPrompt
	case "input":
		f = fInput
	case "system":
		f = fSystem
	case "tools":
		f = fTools
	case "functions":
		f = fFunctions
	case "suffix":
		f = fSuffix
	}
	if kindFields[kind]&(1<<f) == 0 {
		return fNone
	}
	return f
}

// ParseRequest reads the fields the edge needs from the body of a request of
// the given kind, checking that the whole body is valid JSON. Field names
// match exactly, as they do upstream (encoding/json would also take "Model").
// A field the edge reads may appear only once: parsers disagree on which of
// two "model"s wins, and the edge must filter the model upstream will use.
// Errors are *RequestError, meant for the client as they are.
func ParseRequest(kind Kind, body []byte) (Request, error) {
	if kind == Other || int(kind) >= len(kindFields) {
		return Request{}, fmt.Errorf("llm: no request format for kind %v", kind)
	}
	s := scanner{data: body}
	switch s.peek() {
	case '{':
	case 0:
		if s.pos == len(body) {
			return Request{}, &RequestError{Message: "the body is empty; send a JSON object"}
		}
		fallthrough
	default:
		s.skip()
		s.end()
		if s.failed() {
			return Request{}, invalidJSON(&s)
		}
		return Request{}, &RequestError{Message: "the body must be a JSON object"}
	}

	r := Request{Kind: kind, Choices: 1}
	var (
		seen                uint32
		text                textCount
		maxTokens, maxCompl int64
		n, bestOf           int64
	)
	s.begin('{')
	for first := true; s.more('}', first); first = false {
		raw, escaped := s.key()
		f := fieldOf(kind, raw, escaped)
		if f == fNone {
			s.skip()
			continue
		}
		if seen&(1<<f) != 0 {
			return Request{}, fieldError(f, "%s appears more than once")
		}
		seen |= 1 << f
		var err *RequestError
		switch f {
		case fModel:
			r.Model, err = s.model()
		case fMaxTokens:
			maxTokens, err = s.positive(f, MaxTokensLimit)
		case fMaxCompletionTokens:
			maxCompl, err = s.positive(f, MaxTokensLimit)
		case fN:
			n, err = s.positive(f, MaxChoices)
		case fBestOf:
			bestOf, err = s.positive(f, MaxChoices)
		case fStream:
			r.Stream, err = s.flag(f)
		case fStreamOptions:
			r.IncludeUsage, err = s.streamOptions()
		case fMessages, fPrompt, fInput:
			r.Items = s.countList(&text)
		default:
			s.countText(&text)
		}
		if s.failed() {
			return Request{}, invalidJSON(&s)
		}
		if err != nil {
			return Request{}, err
		}
	}
	s.end()
	if s.failed() {
		return Request{}, invalidJSON(&s)
	}

	if r.Model == "" {
		return Request{}, fieldError(fModel, "%s is required")
	}
	if kind == Messages && maxTokens == 0 {
		return Request{}, fieldError(fMaxTokens, "%s is required")
	}
	r.MaxTokens = max(maxTokens, maxCompl)
	r.Choices = max(1, n, bestOf)
	r.InputTokensEstimate = text.tokens()
	return r, nil
}

func invalidJSON(s *scanner) *RequestError {
	return &RequestError{Message: "the body is not valid JSON: " + s.err().Error()}
}

// model reads the model name. null and "" read as absent, which the caller
// reports as missing.
func (s *scanner) model() (string, *RequestError) {
	switch s.peek() {
	case '"':
		start, end, escaped := s.str()
		var m string
		if escaped {
			m = unescape(s.data[start:end])
		} else {
			m = string(s.data[start:end])
		}
		if len(m) > MaxModelBytes {
			return "", &RequestError{Param: "model",
				Message: fmt.Sprintf(`"model" must be at most %d bytes`, MaxModelBytes)}
		}
		return m, nil
	case 'n':
		s.literal()
		return "", nil
	}
	s.skip()
	return "", fieldError(fModel, "%s must be a string")
}

// positive reads a positive integer up to limit; null reads as absent (0),
// since clients that build bodies from optional settings send it that way.
func (s *scanner) positive(f field, limit int64) (int64, *RequestError) {
	v, isNull, ok := s.uint()
	switch {
	case isNull:
		return 0, nil
	case !ok || v == 0:
		return 0, fieldError(f, "%s must be a positive integer")
	case v > limit:
		return 0, &RequestError{Param: fieldNames[f],
			Message: fmt.Sprintf(`"%s" must be at most %d`, fieldNames[f], limit)}
	}
	return v, nil
}

func (s *scanner) flag(f field) (bool, *RequestError) {
	v, _, ok := s.boolean()
	if !ok {
		return false, fieldError(f, "%s must be true or false")
	}
	return v, nil
}

// streamOptions reads stream_options and returns its include_usage.
func (s *scanner) streamOptions() (includeUsage bool, err *RequestError) {
	switch s.peek() {
	case 'n':
		s.literal()
		return false, nil
	case '{':
	default:
		s.skip()
		return false, fieldError(fStreamOptions, "%s must be an object")
	}
	s.begin('{')
	for first := true; s.more('}', first); first = false {
		raw, escaped := s.key()
		if !keyIs(raw, escaped, "include_usage") {
			s.skip()
			continue
		}
		v, _, ok := s.boolean()
		if !ok {
			return false, &RequestError{Param: "stream_options",
				Message: `"stream_options.include_usage" must be true or false`}
		}
		includeUsage = v
	}
	return includeUsage, nil
}
