package llm

// The token estimates here are deliberately crude: they only size a
// reservation before the provider reports real usage, or stand in for usage
// that never came. A real tokenizer per model would cost more than the whole
// edge budget and still be wrong for half the providers.
const (
	// bytesPerToken is the usual rule of thumb for English text in BPE
	// tokenizers. Counted over JSON-escaped bytes, which makes non-Latin
	// text (3 bytes of UTF-8 or a 6-byte \u escape per character) come out
	// close to or above its real cost, the safe side for a reservation.
	bytesPerToken = 4
	// mediaTokens stands in for an image, audio clip or file sent inline or
	// by URL: between OpenAI's 765 tokens for a 1024x1024 image at high
	// detail and Anthropic's ~1,600 for its largest unscaled image.
	mediaTokens = 1000
)

// textCount accumulates what an input is made of.
type textCount struct {
	bytes   int64 // of string values, as they appear in the JSON
	numbers int64 // numbers, i.e. token ids in pre-tokenised prompts
	media   int64 // strings under a media key (url, data, file_data, image_url)
}

func (t textCount) tokens() int64 {
	return ceilDiv(t.bytes, bytesPerToken) + t.numbers + t.media*mediaTokens
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// countText reads one value, counting every string value in it (keys are
// not counted: roles, part types and the like add about what providers add
// per message for their chat template).
func (s *scanner) countText(t *textCount) {
	switch c := s.peek(); c {
	case '"':
		start, end, _ := s.str()
		t.bytes += int64(end - start)
	case '{':
		s.begin('{')
		for first := true; s.more('}', first); first = false {
			raw, escaped := s.key()
			if s.peek() == '"' && isMediaKey(raw, escaped) {
				s.str()
				t.media++
				continue
			}
			s.countText(t)
		}
	case '[':
		s.begin('[')
		for first := true; s.more(']', first); first = false {
			s.countText(t)
		}
	case 't', 'f', 'n':
		s.literal()
	default:
		if c == '-' || isDigit(c) {
			s.number()
			t.numbers++
			return
		}
		s.fail(expValue)
	}
}

// isMediaKey reports whether a string under this key is binary or a link to
// it (an image_url's url, a base64 source's data, a file part's file_data),
// which would be absurd to count at four bytes a token.
func isMediaKey(raw []byte, escaped bool) bool {
	if escaped {
		raw = []byte(unescape(raw))
	}
	switch string(raw) {
	case "url", "data", "file_data", "image_url":
		return true
	}
	return false
}

// countList counts the text of messages, prompt or input and returns how
// many items it holds: the length of an array, except that an array of
// numbers is one pre-tokenised text; 0 for null and 1 for anything else.
func (s *scanner) countList(t *textCount) int {
	switch s.peek() {
	case '[':
	case 'n':
		s.literal()
		return 0
	default:
		s.countText(t)
		return 1
	}
	items, numbers := 0, 0
	s.begin('[')
	for first := true; s.more(']', first); first = false {
		if c := s.peek(); c == '-' || isDigit(c) {
			numbers++
		}
		items++
		s.countText(t)
	}
	if items > 0 && numbers == items {
		return 1
	}
	return items
}
