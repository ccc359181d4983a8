package llm

// WithIncludeUsage returns body with stream_options.include_usage set to
// true, so that an OpenAI-style stream ends with a usage chunk the edge can
// bill from. It changes only that: any other stream_options keys and every
// other byte of the body are kept as they were (no re-encoding, no
// reordering), so upstream sees what the client sent. When include_usage is
// already true everywhere, body itself is returned.
//
// Call it only for streamed requests: OpenAI rejects stream_options when
// "stream" is not true.
func WithIncludeUsage(body []byte) ([]byte, error) {
	edits, err := includeUsageEdits(body, make([]edit, 0, 4))
	if err != nil || len(edits) == 0 {
		return body, err
	}
	return apply(make([]byte, 0, editedSize(body, edits)), body, edits), nil
}

// AppendIncludeUsage is WithIncludeUsage appending the result to dst, for a
// caller that keeps its buffers in a pool. It always copies.
func AppendIncludeUsage(dst, body []byte) ([]byte, error) {
	edits, err := includeUsageEdits(body, make([]edit, 0, 4))
	if err != nil {
		return dst, err
	}
	return apply(dst, body, edits), nil
}

// includeUsageEdits validates body and appends the edits that set
// include_usage to edits.
func includeUsageEdits(body []byte, edits []edit) ([]edit, error) {
	s := scanner{data: body}
	if s.peek() != '{' {
		s.skip()
		s.end()
		if s.failed() {
			return nil, invalidJSON(&s)
		}
		return nil, &RequestError{Message: "the body must be a JSON object"}
	}

	found := false
	s.begin('{')
	last := s.pos // where a new member goes: after the last one, or after '{'
	for first := true; s.more('}', first); first = false {
		raw, escaped := s.key()
		if !keyIs(raw, escaped, "stream_options") {
			s.skip()
			last = s.pos
			continue
		}
		found = true
		var err error
		edits, err = s.setIncludeUsage(edits)
		if s.failed() {
			return nil, invalidJSON(&s)
		}
		if err != nil {
			return nil, err
		}
		last = s.pos
	}
	s.end()
	if s.failed() {
		return nil, invalidJSON(&s)
	}
	if !found {
		text := `,"stream_options":{"include_usage":true}`
		if body[last-1] == '{' {
			text = text[1:]
		}
		edits = append(edits, edit{last, last, text})
	}
	return edits, nil
}

// edit replaces body[start:end] with text.
type edit struct {
	start, end int
	text       string
}

func editedSize(body []byte, edits []edit) int {
	size := len(body)
	for _, e := range edits {
		size += len(e.text) - (e.end - e.start)
	}
	return size
}

// apply appends body to dst with the edits made; they are in order and do
// not overlap.
func apply(dst, body []byte, edits []edit) []byte {
	at := 0
	for _, e := range edits {
		dst = append(dst, body[at:e.start]...)
		dst = append(dst, e.text...)
		at = e.end
	}
	return append(dst, body[at:]...)
}

var errStreamOptions = &RequestError{Param: "stream_options",
	Message: `"stream_options" must be an object`}

// setIncludeUsage reads a stream_options value and appends the edits that
// make its include_usage true: every include_usage that is not already true
// (a duplicate too, whichever one a parser believes), or a new member when
// there is none, or a whole new object in place of null.
func (s *scanner) setIncludeUsage(edits []edit) ([]edit, error) {
	switch s.peek() {
	case 'n':
		start := s.pos
		s.literal()
		return append(edits, edit{start, s.pos, `{"include_usage":true}`}), nil
	case '{':
	default:
		s.skip()
		return edits, errStreamOptions
	}
	s.begin('{')
	last, found := s.pos, false
	for first := true; s.more('}', first); first = false {
		raw, escaped := s.key()
		if keyIs(raw, escaped, "include_usage") {
			found = true
			start := s.peekPos()
			if v, isNull, ok := s.boolean(); !ok || isNull || !v {
				edits = append(edits, edit{start, s.pos, "true"})
			}
		} else {
			s.skip()
		}
		last = s.pos
	}
	if !found && !s.failed() {
		text := `,"include_usage":true`
		if s.data[last-1] == '{' {
			text = text[1:]
		}
		edits = append(edits, edit{last, last, text})
	}
	return edits, nil
}

// peekPos is the offset of the next value, after any whitespace.
func (s *scanner) peekPos() int {
	s.peek()
	return s.pos
}
