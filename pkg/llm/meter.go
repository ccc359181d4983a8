package llm

import "bytes"

// StreamMeter reads usage from a server-sent event stream as it passes
// through the edge to the client, in whatever chunks the network delivers.
//
// It looks at "data:" lines only. A line is parsed as JSON only when it can
// hold usage, that is when it has a "usage" key whose value is an object:
// OpenAI's final chunk (asked for with WithIncludeUsage), Anthropic's
// message_start (message.usage: input and cache tokens) and message_delta
// (usage.output_tokens, the final count). In every other line it only
// measures the generated text, the string values under "delta" (or "text"
// for legacy completions), so that output tokens can be estimated when the
// stream ends without usage. Lines are processed when their newline arrives;
// the meter keeps only the unfinished line, never the stream.
//
// A StreamMeter is not safe for concurrent use. Reset lets one be reused
// (from a sync.Pool, say) without allocating.
type StreamMeter struct {
	kind          Kind
	inputEstimate int64

	// line holds the start of a line whose newline has not come yet.
	line []byte
	// long is set when that line outgrew maxLineBytes; its bytes are then
	// only counted, in longLen.
	long    bool
	longLen int64

	textBytes int64
	report    report
	final     bool // the provider's final output count was seen
	done      bool
}

// maxLineBytes bounds the line the meter keeps. Usage lines are a few hundred
// bytes; a longer data line can only be a huge delta, and is counted as text
// by its length.
const maxLineBytes = 64 << 10

// NewStreamMeter returns a meter for a stream of the given kind.
// inputEstimate (Request.InputTokensEstimate) stands in for input tokens if
// the stream never reports them.
func NewStreamMeter(kind Kind, inputEstimate int64) *StreamMeter {
	m := &StreamMeter{}
	m.Reset(kind, inputEstimate)
	return m
}

// Reset makes m ready for a new stream, keeping its buffer.
func (m *StreamMeter) Reset(kind Kind, inputEstimate int64) {
	*m = StreamMeter{kind: kind, inputEstimate: inputEstimate, line: m.line[:0]}
}

// Observe reads the next chunk of the stream. It does not keep chunk.
func (m *StreamMeter) Observe(chunk []byte) {
	for len(chunk) > 0 {
		i := bytes.IndexByte(chunk, '\n')
		if i < 0 {
			m.keep(chunk)
			return
		}
		switch {
		case m.long:
			m.longLen += int64(i)
			m.longLine(m.line)
		case len(m.line) > 0:
			m.keep(chunk[:i])
			if m.long {
				m.longLine(m.line)
			} else {
				m.lineDone(m.line)
			}
		default:
			// The usual case: the whole line is in this chunk.
			m.lineDone(chunk[:i])
		}
		m.line, m.long, m.longLen = m.line[:0], false, 0
		chunk = chunk[i+1:]
	}
}

// keep adds part of an unfinished line to m.line, up to maxLineBytes.
func (m *StreamMeter) keep(part []byte) {
	if m.long {
		m.longLen += int64(len(part))
		return
	}
	if room := maxLineBytes - len(m.line); len(part) > room {
		m.long = true
		m.longLen = int64(len(m.line) + len(part))
		part = part[:room]
	}
	m.line = append(m.line, part...)
}

var dataField = []byte("data:")

// longLine accounts for a line longer than maxLineBytes, whose start is in
// m.line and whose length is m.longLen (lineDone does the same for one that
// arrived whole, so that chunking makes no difference).
func (m *StreamMeter) longLine(start []byte) {
	if bytes.HasPrefix(start, dataField) {
		m.textBytes += m.longLen
	}
}

func (m *StreamMeter) lineDone(line []byte) {
	if len(line) > maxLineBytes {
		m.longLen = int64(len(line))
		m.longLine(line)
		return
	}
	if !bytes.HasPrefix(line, dataField) {
		return // event:, id:, retry:, comments and blank lines
	}
	p := line[len(dataField):]
	if len(p) > 0 && p[0] == ' ' {
		p = p[1:]
	}
	if len(p) > 0 && p[len(p)-1] == '\r' {
		p = p[:len(p)-1]
	}
	if string(p) == "[DONE]" {
		m.done = true
		return
	}
	if objectAfter(p, usageKey) {
		m.readUsage(p)
	}
	m.countGenerated(p)
	if m.kind == Messages && isMessageStop(p) {
		m.done = true
	}
}

// isMessageStop reports whether p is Anthropic's last event,
// {"type":"message_stop"}. Its "type" is the first key, so the first "type"
// found is the event's (a nested one is never "message_stop").
func isMessageStop(p []byte) bool {
	j := valueAfter(p, typeKey, 0)
	return j >= 0 && bytes.HasPrefix(p[j:], messageStop)
}

// Keys the meter looks for, each without its opening quote: searching for a
// letter is much faster than for '"', which is every few bytes in JSON.
var (
	usageKey    = []byte(`usage"`)
	deltaKey    = []byte(`delta"`)
	textKey     = []byte(`text"`)
	typeKey     = []byte(`type"`)
	messageStop = []byte(`"message_stop"`)
)

// valueAfter finds the next occurrence of a key in p, from offset from, and
// returns the offset of its value, or -1. A quoted name followed by a colon
// is always a real key: inside a string every quote is escaped, so the
// closing quote of "usage" cannot follow a letter there.
func valueAfter(p []byte, key []byte, from int) int {
	for from < len(p) {
		i := bytes.Index(p[from:], key)
		if i < 0 {
			return -1
		}
		i += from
		if i > 0 && p[i-1] == '"' {
			j := skipSpace(p, i+len(key))
			if j < len(p) && p[j] == ':' {
				return skipSpace(p, j+1)
			}
		}
		from = i + 1
	}
	return -1
}

func skipSpace(p []byte, j int) int {
	for j < len(p) && (p[j] == ' ' || p[j] == '\t' || p[j] == '\n' || p[j] == '\r') {
		j++
	}
	return j
}

// objectAfter reports whether key has an object value somewhere in p, which
// leaves out OpenAI's "usage":null in every chunk but the last.
func objectAfter(p []byte, key []byte) bool {
	for from := 0; ; {
		j := valueAfter(p, key, from)
		if j < 0 {
			return false
		}
		if j < len(p) && p[j] == '{' {
			return true
		}
		from = j
	}
}

// readUsage merges the usage objects of one event: top-level "usage" (OpenAI's
// last chunk, Anthropic's message_delta) and "message.usage" (Anthropic's
// message_start). A line that is not valid JSON is ignored whole.
func (m *StreamMeter) readUsage(p []byte) {
	s := scanner{data: p}
	var top, nested report
	if !s.begin('{') {
		return
	}
	for first := true; s.more('}', first); first = false {
		raw, escaped := s.key()
		switch {
		case s.peek() != '{':
			s.skip()
		case keyIs(raw, escaped, "usage"):
			s.usageObject(&top)
		case keyIs(raw, escaped, "message"):
			s.begin('{')
			for first := true; s.more('}', first); first = false {
				raw, escaped := s.key()
				if keyIs(raw, escaped, "usage") && s.peek() == '{' {
					s.usageObject(&nested)
				} else {
					s.skip()
				}
			}
		default:
			s.skip()
		}
	}
	s.end()
	if s.failed() {
		return
	}
	m.report.merge(&nested)
	m.report.merge(&top)
	// Only a top-level count is final: message_start's output_tokens is 1.
	if top.seen(cCompletion) || top.seen(cOutput) {
		m.final = true
	}
}

func (r *report) merge(o *report) {
	for c := range nCounters {
		if o.seen(c) {
			r.set(c, o.v[c])
		}
	}
}

// countGenerated adds the generated text in one event to m.textBytes.
func (m *StreamMeter) countGenerated(p []byte) {
	key := deltaKey
	if m.kind == Completions {
		key = textKey
	}
	for from := 0; ; {
		j := valueAfter(p, key, from)
		if j < 0 {
			return
		}
		s := scanner{data: p, pos: j}
		m.textBytes += s.generated(m.kind == Completions)
		if s.pos <= j {
			s.pos = j + 1
		}
		from = s.pos
	}
}

// generated reads one value and returns the length of the strings in it that
// hold generated text: under content (chat), text (Anthropic, completions),
// arguments (tool calls), partial_json (Anthropic tool input), refusal,
// thinking and reasoning_content or reasoning (reasoning models).
func (s *scanner) generated(text bool) int64 {
	switch s.peek() {
	case '"':
		start, end, _ := s.str()
		if text {
			return int64(end - start)
		}
	case '{':
		var n int64
		s.begin('{')
		for first := true; s.more('}', first); first = false {
			raw, escaped := s.key()
			n += s.generated(isTextKey(raw, escaped))
		}
		return n
	case '[':
		var n int64
		s.begin('[')
		for first := true; s.more(']', first); first = false {
			n += s.generated(text)
		}
		return n
	default:
		s.skip()
	}
	return 0
}

func isTextKey(raw []byte, escaped bool) bool {
	if escaped {
		raw = []byte(unescape(raw))
	}
	switch string(raw) {
	case "content", "text", "arguments", "partial_json", "refusal", "thinking",
		"reasoning_content", "reasoning":
		return true
	}
	return false
}

// Done reports whether the stream ended the way a complete one does:
// OpenAI's "data: [DONE]" or Anthropic's message_stop.
func (m *StreamMeter) Done() bool { return m.done }

// Usage returns the usage seen so far. complete is true when the provider
// reported both input and final output counts; otherwise the missing parts
// are estimated and u.Estimated is set: input from the estimate given to
// NewStreamMeter, output as the larger of any count reported so far and the
// generated text at four bytes a token.
func (m *StreamMeter) Usage() (u Usage, complete bool) {
	if u, ok := m.report.usage(m.kind); ok && m.final {
		return u, true
	}
	u.Estimated = true
	if in, ok := m.report.input(m.kind); ok {
		u.InputTokens, u.CacheReadTokens, u.CacheWriteTokens =
			in.InputTokens, in.CacheReadTokens, in.CacheWriteTokens
	} else {
		u.InputTokens = m.inputEstimate
	}
	u.OutputTokens = ceilDiv(m.textBytes, bytesPerToken)
	if out, ok := m.report.output(m.kind, u.InputTokens); ok && out > u.OutputTokens {
		u.OutputTokens = out
	}
	return u, false
}
