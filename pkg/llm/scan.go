package llm

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// scanner is a validating JSON reader over a byte slice that allocates
// nothing. The edge reads a handful of fields from bodies of up to megabytes
// on its hot path; encoding/json would build every value (or at least run its
// reflective decoder) only for us to throw most of it away, while this reads
// strings eight bytes at a time and keeps nothing but offsets.
//
// It accepts exactly what encoding/json's Valid accepts (FuzzScanner checks
// this), including its nesting limit and its leniency about invalid UTF-8
// inside strings, so "valid JSON" means the same thing here as in the rest of
// the code base.
//
// Errors are sticky: after the first one every method returns at once and
// loops over containers end, so callers check failed() once at the end.
type scanner struct {
	data  []byte
	pos   int
	depth int
	// msg says what was expected where the first error happened, at off.
	// It is always a constant, so that a malformed stream line costs no
	// allocation; err builds the error value only when someone wants it.
	msg string
	off int
}

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

const (
	expValue    = "looking for beginning of value"
	expKey      = "looking for beginning of object key string"
	expColon    = "after object key"
	expObjNext  = "after object key:value pair"
	expArrNext  = "after array element"
	expString   = "in string literal"
	expEscape   = "in string escape code"
	expNumber   = "in numeric literal"
	expLiteral  = "in literal"
	expEnd      = "after top-level value"
	expTooDeep  = "exceeded max depth"
	expEOFValue = "unexpected end of JSON input"
)

// syntaxError is what a failed scan reports.
type syntaxError struct {
	msg    string
	offset int
}

func (e *syntaxError) Error() string { return e.msg }

func (s *scanner) failed() bool { return s.msg != "" }

// fail records the first error, at the current position.
func (s *scanner) fail(msg string) {
	if s.msg == "" {
		s.msg, s.off = msg, s.pos
	}
}

// err describes the first error in the words encoding/json uses, plus the
// byte offset, which is what a client needs to find the mistake.
func (s *scanner) err() error {
	switch {
	case s.msg == "":
		return nil
	case s.msg == expTooDeep:
		return &syntaxError{fmt.Sprintf("exceeded max depth at offset %d", s.off), s.off}
	case s.off >= len(s.data):
		return &syntaxError{expEOFValue, s.off}
	default:
		return &syntaxError{fmt.Sprintf("invalid character %s %s at offset %d",
			quoteChar(s.data[s.off]), s.msg, s.off), s.off}
	}
}

func quoteChar(c byte) string {
	switch {
	case c == '\'':
		return `'\''`
	case c == '"':
		return `'"'`
	case c >= utf8.RuneSelf:
		return fmt.Sprintf(`'\x%02x'`, c)
	}
	q := strconv.Quote(string(rune(c)))
	return "'" + q[1:len(q)-1] + "'"
}

// peek skips whitespace and returns the next byte without consuming it, or 0
// at the end of the input or after an error.
func (s *scanner) peek() byte {
	if s.msg != "" {
		return 0
	}
	for s.pos < len(s.data) {
		switch c := s.data[s.pos]; c {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return c
		}
	}
	return 0
}

// end checks that nothing but whitespace follows the top-level value.
func (s *scanner) end() {
	s.peek()
	if !s.failed() && s.pos < len(s.data) {
		s.fail(expEnd)
	}
}

// begin consumes the opening bracket of an object or array.
func (s *scanner) begin(open byte) bool {
	if s.peek() != open {
		s.fail(expValue)
		return false
	}
	s.pos++
	s.depth++
	if s.depth > maxDepth {
		s.fail(expTooDeep)
		return false
	}
	return true
}

// more reports whether the container opened by begin has another element,
// consuming the comma before it, or the closing bracket after the last one.
// The usual loop is
//
//	for first := true; s.more('}', first); first = false { ... }
func (s *scanner) more(bracket byte, first bool) bool {
	c := s.peek()
	switch {
	case c == 0:
		s.fail(expValue) // the input ended inside the container (or failed)
		return false
	case c == bracket:
		s.pos++
		s.depth--
		return false
	case first:
		return true
	case c != ',':
		if bracket == '}' {
			s.fail(expObjNext)
		} else {
			s.fail(expArrNext)
		}
		return false
	}
	s.pos++
	// After a comma another element is required: "[1,]" is not JSON.
	if s.peek() == bracket {
		if bracket == '}' {
			s.fail(expKey)
		} else {
			s.fail(expValue)
		}
		return false
	}
	return true
}

// key reads an object key and the colon after it. It returns the raw bytes
// between the quotes and whether they contain escapes.
func (s *scanner) key() (raw []byte, escaped bool) {
	if s.peek() != '"' {
		s.fail(expKey)
		return nil, false
	}
	start, end, esc := s.str()
	if s.peek() != ':' {
		s.fail(expColon)
		return nil, false
	}
	s.pos++
	return s.data[start:end], esc
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// special reports whether any of the eight bytes in x ends or interrupts a
// plain run of string content: a quote, a backslash or a control character.
// (The bit tricks are the classic "has zero byte" and "has byte less than n"
// from Bit Twiddling Hacks; both are exact as an any-byte test.)
func special(x uint64) bool {
	ctl := (x - lsb*0x20) &^ x
	quote := x ^ (lsb * '"')
	quote = (quote - lsb) &^ quote
	bslash := x ^ (lsb * '\\')
	bslash = (bslash - lsb) &^ bslash
	return (ctl|quote|bslash)&msb != 0
}

// str reads a string starting at the opening quote under s.pos and returns
// the offsets of its raw content and whether that contains escapes.
func (s *scanner) str() (start, end int, escaped bool) {
	d := s.data
	i := s.pos + 1
	start = i
	for {
		for i+8 <= len(d) && !special(binary.LittleEndian.Uint64(d[i:])) {
			i += 8
		}
		if i >= len(d) {
			s.pos = i
			s.fail(expString)
			return start, start, false
		}
		switch c := d[i]; {
		case c == '"':
			s.pos = i + 1
			return start, i, escaped
		case c == '\\':
			escaped = true
			if i+1 >= len(d) {
				s.pos = len(d)
				s.fail(expEscape)
				return start, start, false
			}
			switch d[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for k := i + 2; k < i+6; k++ {
					if k >= len(d) || !isHex(d[k]) {
						s.pos = min(k, len(d))
						s.fail(expEscape)
						return start, start, false
					}
				}
				i += 6
			default:
				s.pos = i + 1
				s.fail(expEscape)
				return start, start, false
			}
		case c < 0x20:
			s.pos = i
			s.fail(expString)
			return start, start, false
		default:
			i++
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// number reads a number under s.pos and returns its offsets.
func (s *scanner) number() (start, end int) {
	d := s.data
	i := s.pos
	start = i
	digits := func() bool {
		if i >= len(d) || !isDigit(d[i]) {
			s.pos = i
			s.fail(expNumber)
			return false
		}
		for i < len(d) && isDigit(d[i]) {
			i++
		}
		return true
	}
	if d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case !digits():
		return start, start
	}
	if i < len(d) && d[i] == '.' {
		i++
		if !digits() {
			return start, start
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if !digits() {
			return start, start
		}
	}
	s.pos = i
	return start, i
}

// literal reads true, false or null; the caller has seen its first byte.
func (s *scanner) literal() {
	var word string
	switch s.data[s.pos] {
	case 't':
		word = "true"
	case 'f':
		word = "false"
	default:
		word = "null"
	}
	for k := 1; k < len(word); k++ {
		if s.pos+k >= len(s.data) || s.data[s.pos+k] != word[k] {
			s.pos += k
			s.fail(expLiteral)
			return
		}
	}
	s.pos += len(word)
}

// skip reads one value of any kind.
func (s *scanner) skip() {
	switch c := s.peek(); c {
	case '"':
		s.str()
	case '{':
		s.begin('{')
		for first := true; s.more('}', first); first = false {
			s.key()
			s.skip()
		}
	case '[':
		s.begin('[')
		for first := true; s.more(']', first); first = false {
			s.skip()
		}
	case 't', 'f', 'n':
		s.literal()
	default:
		if c == '-' || isDigit(c) {
			s.number()
			return
		}
		s.fail(expValue)
	}
}

// boolean reads true, false or null. null reports ok with isNull set, any
// other value reports !ok and is skipped.
func (s *scanner) boolean() (v, isNull, ok bool) {
	switch s.peek() {
	case 't':
		s.literal()
		return true, false, true
	case 'f':
		s.literal()
		return false, false, true
	case 'n':
		s.literal()
		return false, true, true
	}
	s.skip()
	return false, false, false
}

// uint reads a non-negative integer written without fraction or exponent.
// null reports isNull; anything else (a string, 1.5, 1e3, -1, a number that
// int64 cannot hold) reports !ok and is skipped.
func (s *scanner) uint() (v int64, isNull, ok bool) {
	c := s.peek()
	if c == 'n' {
		s.literal()
		return 0, true, true
	}
	if !isDigit(c) {
		s.skip()
		return 0, false, false
	}
	start, end := s.number()
	if s.failed() {
		return 0, false, false
	}
	for _, d := range s.data[start:end] {
		if !isDigit(d) {
			return 0, false, false
		}
		if v > (1<<63-1-int64(d-'0'))/10 {
			return 0, false, false
		}
		v = v*10 + int64(d-'0')
	}
	return v, false, true
}

// keyIs reports whether a raw key read by key equals name. Keys with
// escapes ("mod\u0065l" is "model" to every JSON parser upstream) are decoded
// first; that allocates, but no real client escapes plain ASCII names.
func keyIs(raw []byte, escaped bool, name string) bool {
	if !escaped {
		return string(raw) == name
	}
	return unescape(raw) == name
}

// unescape decodes the raw content of a string that str validated.
func unescape(raw []byte) string {
	quoted := make([]byte, 0, len(raw)+2)
	quoted = append(append(append(quoted, '"'), raw...), '"')
	var out string
	if err := json.Unmarshal(quoted, &out); err != nil {
		return "" // cannot happen for content str accepted
	}
	return out
}
