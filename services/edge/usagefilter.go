package edge

import "bytes"

// usageFilter removes OpenAI's usage-only chunk (`"choices":[]` with a
// usage object) from a stream whose client did not ask for it: the edge asks
// every OpenAI-style upstream for usage (to meter), but a client that did not
// set stream_options.include_usage may index choices[0] of every chunk.
//
// It works on whole SSE events (ended by a blank line). A chunk that ends
// mid-event is passed up to its last complete event and the tail is held
// until the next chunk; in the common case (upstreams flush whole events)
// nothing is held and nothing is copied.
type usageFilter struct {
	held []byte
	out  []byte
}

var (
	eventEnd     = []byte("\n\n")
	emptyList    = []byte(`[]`)
	choicesColon = []byte(`"choices":`) // before emptyList: "choices":[]
	usageField   = []byte(`"usage":{`)
)

// pass returns what of chunk may go to the client now. The result is valid
// until the next call.
func (f *usageFilter) pass(chunk []byte) []byte {
	if len(f.held) == 0 && endsEvents(chunk) && !hasEmptyChoices(chunk) {
		return chunk // the common case: whole events, nothing to remove
	}
	data := chunk
	if len(f.held) > 0 {
		f.held = append(f.held, chunk...)
		data = f.held
	}
	end := lastEventEnd(data)
	if end < 0 {
		if len(f.held) == 0 {
			f.held = append(f.held, chunk...)
		}
		return nil
	}
	complete, tail := data[:end], data[end:]
	usage := usageOnly(complete)
	if !usage && len(f.held) == 0 && len(tail) == 0 {
		return chunk // whole events with "choices":[] but no usage: nothing to remove
	}
	if cap(f.out) < len(complete) {
		f.out = make([]byte, 0, len(complete)) // once, not grown by appends
	}
	if usage {
		f.out = appendKept(f.out[:0], complete)
	} else {
		f.out = append(f.out[:0], complete...)
	}
	f.held = append(f.held[:0], tail...) // copy handles the overlap with f.held
	return f.out
}

// lastEventEnd is where the last whole event of data ends (-1: none), found
// as an SSE reader finds events, from the start: searching backwards for the
// last blank line would cut a run of extra newlines elsewhere than a reader
// does when a chunk ends inside the run, and the events would differ from
// one chunking to another.
func lastEventEnd(data []byte) int {
	end := -1
	for off := 0; ; {
		i := bytes.Index(data[off:], eventEnd)
		if i < 0 {
			return end
		}
		off += i + len(eventEnd)
		end = off
	}
}

// endsEvents reports whether data ends where its last whole event ends,
// lastEventEnd(data) == len(data), from its end alone: lastEventEnd pairs
// the newlines of a run from the run's start, so a run of newlines at the
// end closes an event at the end exactly when it is of even length.
func endsEvents(data []byte) bool {
	k := 0
	for k < len(data) && data[len(data)-1-k] == '\n' {
		k++
	}
	return k >= 2 && k%2 == 0
}

// usageOnly reports whether events may hold a usage-only event: one with
// `"choices":[]` and a usage object.
func usageOnly(events []byte) bool {
	return hasEmptyChoices(events) && bytes.Contains(events, usageField)
}

// hasEmptyChoices is bytes.Contains(b, []byte(`"choices":[]`)), found from
// the "[]": bytes.Index steps from one occurrence of the needle's first byte
// to the next, and '"' is everywhere in JSON, where '[' comes about once per
// chunk. Every event of every stream passes here.
func hasEmptyChoices(b []byte) bool {
	for off := 0; ; {
		i := bytes.Index(b[off:], emptyList)
		if i < 0 {
			return false
		}
		at := off + i
		if at >= len(choicesColon) && bytes.Equal(b[at-len(choicesColon):at], choicesColon) {
			return true
		}
		off = at + 1
	}
}

// appendKept appends to dst the events of complete but the usage-only ones:
// into the filter's own buffer, which is reused from chunk to chunk.
func appendKept(dst, complete []byte) []byte {
	for len(complete) > 0 {
		i := bytes.Index(complete, eventEnd)
		ev := complete[:i+2]
		complete = complete[i+2:]
		if !usageOnly(ev) {
			dst = append(dst, ev...)
		}
	}
	return dst
}

// flush returns what is held when the stream ends (an unterminated event),
// unless it is the usage-only chunk itself.
func (f *usageFilter) flush() []byte {
	rest := f.held
	f.held = nil
	if usageOnly(rest) {
		return nil
	}
	return rest
}
