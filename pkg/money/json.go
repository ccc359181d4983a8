package money

import (
	"bytes"
	"encoding/json"
	"errors"
)

// ParseJSON converts a JSON token holding decimal dollars to Nanos exactly.
// APIs accept both "10.50" and 10.50: a string goes through Parse, and a
// number is read from its literal text, never through float64, so 10.50 is
// exactly 10_500_000_000 nanos. Unlike Parse, a number may use an exponent
// (1e-7): JSON encoders such as JavaScript's and Python's print small numbers
// that way on their own, while a string is written by a person, who gets a
// clear error instead. JSON null returns ErrNull, so a caller can tell a
// missing amount from a bad one; any other token (true, {}, ...) is ErrSyntax.
func ParseJSON(raw json.RawMessage) (Nanos, error) {
	token := bytes.Trim(raw, " \t\r\n")
	var (
		n   Nanos
		err error
	)
	switch {
	case len(token) == 0:
		err = ErrEmpty
	case string(token) == "null":
		err = ErrNull
	case token[0] == '"':
		var s string
		if json.Unmarshal(token, &s) != nil {
			err = ErrSyntax
			break
		}
		// Parse reports s unquoted, which reads better than the token.
		return Parse(s)
	default:
		n, err = parseJSONNumber(string(token))
	}
	if err != nil {
		return 0, parseError(string(token), err)
	}
	return n, nil
}

// parseJSONNumber follows the JSON number grammar (RFC 8259, section 6):
// no "+", no leading zeros, digits on both sides of a point.
func parseJSONNumber(s string) (Nanos, error) {
	negative := s[0] == '-'
	if negative {
		s = s[1:]
	}
	whole, frac, rest := scanMantissa(s)
	if whole == "" || (len(whole) > 1 && whole[0] == '0') {
		return 0, ErrSyntax
	}
	var exp int64
	if rest != "" {
		var ok bool
		if exp, ok = scanExponent(rest); !ok {
			return 0, ErrSyntax
		}
	}
	if negative {
		return 0, ErrNegative
	}
	return fromDigits(whole, frac, exp)
}

// MarshalJSON writes n as a JSON string of String(), e.g. "10.5": a string
// survives clients that would read a number into a float64.
func (n Nanos) MarshalJSON() ([]byte, error) {
	s := n.String()
	buf := make([]byte, 0, len(s)+2)
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"'), nil
}

// UnmarshalJSON reads n with ParseJSON, so negative amounts are refused.
// Following encoding/json's convention, null leaves n unchanged; use ParseJSON
// on a json.RawMessage to tell a missing amount from a present one.
func (n *Nanos) UnmarshalJSON(data []byte) error {
	v, err := ParseJSON(data)
	switch {
	case err == nil:
		*n = v
		return nil
	case errors.Is(err, ErrNull):
		return nil
	default:
		return err
	}
}
