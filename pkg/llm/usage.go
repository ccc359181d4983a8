package llm

import "math"

// Usage is what one request consumed, in the terms the edge prices.
type Usage struct {
	// InputTokens counts every input token the provider processed, cached
	// or not: OpenAI's prompt_tokens; Anthropic's input_tokens plus
	// cache_creation_input_tokens plus cache_read_input_tokens (Anthropic
	// reports the three apart, OpenAI reports cached tokens as a subset).
	InputTokens int64
	// OutputTokens counts generated tokens, reasoning included.
	OutputTokens int64
	// CacheReadTokens and CacheWriteTokens are the parts of InputTokens read
	// from or written to a prompt cache, for prices that treat them apart.
	CacheReadTokens  int64
	CacheWriteTokens int64
	// Estimated is set when some of these numbers are the edge's guess
	// rather than the provider's report.
	Estimated bool
}

// TotalTokens is input plus output, what a TOKENS limit counts.
func (u Usage) TotalTokens() int64 { return addSat(u.InputTokens, u.OutputTokens) }

// addSat is a+b, held at the int64 bounds instead of wrapping: an upstream
// that reports absurd counts must not turn them into negative ones (a
// negative usage would be priced as a credit).
func addSat(a, b int64) int64 {
	s := a + b
	if (s < a) != (b < 0) {
		if b < 0 {
			return math.MinInt64
		}
		return math.MaxInt64
	}
	return s
}

// The counters a usage object may carry, under either dialect's names.
const (
	cPrompt     = iota // prompt_tokens (OpenAI)
	cCompletion        // completion_tokens
	cTotal             // total_tokens
	cCached            // prompt_tokens_details.cached_tokens
	cInput             // input_tokens (Anthropic)
	cOutput            // output_tokens
	cCacheWrite        // cache_creation_input_tokens
	cCacheRead         // cache_read_input_tokens
	nCounters
)

// report collects the counters found in one or more usage objects; a counter
// seen again replaces the earlier value, since streams report running totals.
type report struct {
	v   [nCounters]int64
	has uint16
}

func (r *report) set(c int, v int64) {
	r.v[c] = v
	r.has |= 1 << c
}

func (r *report) seen(c int) bool { return r.has&(1<<c) != 0 }

func counterOf(raw []byte, escaped bool) int {
	name := raw
	if escaped {
		name = []byte(unescape(raw))
	}
	switch string(name) {
	case "prompt_tokens":
		return cPrompt
	case "completion_tokens":
		return cCompletion
	case "total_tokens":
		return cTotal
	case "input_tokens":
		return cInput
	case "output_tokens":
		return cOutput
	case "cache_creation_input_tokens":
		return cCacheWrite
	case "cache_read_input_tokens":
		return cCacheRead
	}
	return -1
}

// usageObject reads a usage object into r. Counters that are not
// non-negative integers are ignored rather than failing the whole answer.
func (s *scanner) usageObject(r *report) {
	if !s.begin('{') {
		return
	}
	for first := true; s.more('}', first); first = false {
		raw, escaped := s.key()
		c := counterOf(raw, escaped)
		switch {
		case c >= 0:
			if v, _, ok := s.uint(); ok {
				r.set(c, v)
			}
		case keyIs(raw, escaped, "prompt_tokens_details") && s.peek() == '{':
			s.begin('{')
			for first := true; s.more('}', first); first = false {
				raw, escaped := s.key()
				if !keyIs(raw, escaped, "cached_tokens") {
					s.skip()
				} else if v, _, ok := s.uint(); ok {
					r.set(cCached, v)
				}
			}
		default:
			s.skip()
		}
	}
}

// usage turns the counters into a Usage; ok is false when the input or the
// output count is missing.
func (r *report) usage(kind Kind) (Usage, bool) {
	u, ok := r.input(kind)
	if !ok {
		return Usage{}, false
	}
	if u.OutputTokens, ok = r.output(kind, u.InputTokens); !ok {
		return Usage{}, false
	}
	return u, true
}

// input fills the input side of a Usage from whichever dialect's names were
// reported (some OpenAI-compatible servers use Anthropic's).
func (r *report) input(kind Kind) (u Usage, ok bool) {
	switch {
	case r.seen(cPrompt):
		u.InputTokens = r.v[cPrompt]
		u.CacheReadTokens = r.v[cCached]
	case r.seen(cInput):
		u.InputTokens = addSat(addSat(r.v[cInput], r.v[cCacheWrite]), r.v[cCacheRead])
		u.CacheReadTokens = r.v[cCacheRead]
		u.CacheWriteTokens = r.v[cCacheWrite]
	case kind == Embeddings && r.seen(cTotal):
		u.InputTokens = r.v[cTotal]
	default:
		return Usage{}, false
	}
	return u, true
}

// output returns the output count; embeddings have none.
func (r *report) output(kind Kind, input int64) (int64, bool) {
	switch {
	case r.seen(cCompletion):
		return r.v[cCompletion], true
	case r.seen(cOutput):
		return r.v[cOutput], true
	case kind == Embeddings:
		return 0, true
	case r.seen(cTotal) && r.v[cTotal] >= input:
		return r.v[cTotal] - input, true
	}
	return 0, false
}

// ParseUsage reads the usage of a non-streamed answer: the top-level "usage"
// object of OpenAI's chat, completions and embeddings answers
// (prompt_tokens, completion_tokens, and for embeddings total_tokens) and of
// Anthropic's messages (input_tokens, output_tokens and the cache counters).
// ok is false when the body is not valid JSON or reports no usage.
func ParseUsage(kind Kind, body []byte) (u Usage, ok bool) {
	s := scanner{data: body}
	if !s.begin('{') {
		return Usage{}, false
	}
	var r report
	found := false
	for first := true; s.more('}', first); first = false {
		raw, escaped := s.key()
		if keyIs(raw, escaped, "usage") && s.peek() == '{' {
			s.usageObject(&r)
			found = true
			continue
		}
		s.skip()
	}
	s.end()
	if s.failed() || !found {
		return Usage{}, false
	}
	return r.usage(kind)
}

// EstimateOutput stands in for the output count of a non-streamed answer
// that reports none (or was cut off): its generated text, found as in a
// stream (content, text, tool arguments, refusals, reasoning), at four bytes
// a token. A cut-off or malformed body counts what it holds up to the break.
// Embeddings have no output.
func EstimateOutput(kind Kind, body []byte) int64 {
	if kind == Embeddings {
		return 0
	}
	s := scanner{data: body}
	return ceilDiv(s.generated(false), bytesPerToken)
}
