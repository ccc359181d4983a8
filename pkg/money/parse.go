package money

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// Reasons an amount is rejected. Parse and ParseJSON return them inside a
// *ParseError, so test for them with errors.Is.
var (
	ErrEmpty      = errors.New("empty")
	ErrSyntax     = errors.New("not a decimal number (e.g. 10 or 10.50)")
	ErrExponent   = errors.New("exponent notation is not supported (write 0.0001, not 1e-4)")
	ErrNegative   = errors.New("must not be negative")
	ErrTooPrecise = errors.New("at most 9 decimal places")
	ErrTooLarge   = errors.New("too large (at most 9223372036.854775807)")
	ErrNull       = errors.New("is null")
)

// ParseError reports an amount that was rejected and why.
type ParseError struct {
	// Input is the rejected text, shortened when long so that an error
	// about a huge request body does not become huge itself.
	Input string
	// Err is one of the Err* reasons above.
	Err error
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("invalid amount %q: %v", e.Input, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

// maxInputInError bounds ParseError.Input.
const maxInputInError = 40

func parseError(input string, err error) *ParseError {
	if len(input) > maxInputInError {
		input = input[:maxInputInError] + "..."
	}
	return &ParseError{Input: input, Err: err}
}

// Parse converts decimal dollars ("10", "10.5", "0.000000001") to Nanos
// exactly. Surrounding whitespace is ignored and one leading "+" is allowed,
// since both are unambiguous. Rejected: an empty string, any "-" (even "-0",
// so the rule stays simple), a point without digits on both sides ("10.",
// ".5"), exponents, and values that nanos cannot hold. Digits past the ninth
// decimal place are accepted only when they are zeros ("1.5000000000"),
// because they do not change the value.
func Parse(s string) (Nanos, error) {
	n, err := parseDecimal(strings.TrimSpace(s))
	if err != nil {
		return 0, parseError(s, err)
	}
	return n, nil
}

func parseDecimal(s string) (Nanos, error) {
	if s == "" {
		return 0, ErrEmpty
	}
	negative := false
	switch s[0] {
	case '+':
		s = s[1:]
	case '-':
		negative = true
		s = s[1:]
	}
	whole, frac, rest := scanMantissa(s)
	if whole == "" {
		return 0, ErrSyntax
	}
	if rest != "" {
		// Name exponents specifically: JavaScript and Python print small
		// numbers that way, and a plain "not a number" would puzzle users.
		if _, ok := scanExponent(rest); ok {
			return 0, ErrExponent
		}
		return 0, ErrSyntax
	}
	if negative {
		return 0, ErrNegative
	}
	return fromDigits(whole, frac, 0)
}

// scanMantissa splits s into the digits before the point, the digits after
// it and the rest. A point not followed by a digit is left in rest.
func scanMantissa(s string) (whole, frac, rest string) {
	whole, rest = leadingDigits(s)
	if len(rest) > 1 && rest[0] == '.' && isDigit(rest[1]) {
		frac, rest = leadingDigits(rest[1:])
	}
	return whole, frac, rest
}

// maxExponent saturates exponents: far beyond it every nonzero mantissa is
// either too large or too precise, and saturating keeps the arithmetic on
// exponents from overflowing.
const maxExponent = 1 << 40

// scanExponent parses s, which must be entirely "e" or "E", an optional sign
// and at least one digit.
func scanExponent(s string) (int64, bool) {
	if len(s) < 2 || (s[0] != 'e' && s[0] != 'E') {
		return 0, false
	}
	s = s[1:]
	sign := int64(1)
	if s[0] == '+' || s[0] == '-' {
		if s[0] == '-' {
			sign = -1
		}
		s = s[1:]
	}
	digits, rest := leadingDigits(s)
	if digits == "" || rest != "" {
		return 0, false
	}
	var exp int64
	for i := 0; i < len(digits) && exp < maxExponent; i++ {
		exp = exp*10 + int64(digits[i]-'0')
	}
	return sign * min(exp, maxExponent), true
}

// fromDigits returns the value of the decimal whole.frac * 10^exp in nanos,
// computed on the digits so that no precision is lost.
func fromDigits(whole, frac string, exp int64) (Nanos, error) {
	digits := whole + frac
	// The decimal point sits after the first point digits of digits.
	point := int64(len(whole)) + exp

	significant := strings.TrimLeft(digits, "0")
	point -= int64(len(digits) - len(significant))
	significant = strings.TrimRight(significant, "0")
	if significant == "" {
		return 0, nil
	}
	// The largest value, 9223372036.854775807, has 10 digits before the point.
	if point > 10 {
		return 0, ErrTooLarge
	}
	places := int64(len(significant)) - point
	if places > decimals {
		return 0, ErrTooPrecise
	}
	// Now len(significant) <= 9+point <= 19 and so is the scaled value's
	// digit count, which always fits in a uint64.
	var v uint64
	for i := 0; i < len(significant); i++ {
		v = v*10 + uint64(significant[i]-'0')
	}
	for ; places < decimals; places++ {
		v *= 10
	}
	if v > math.MaxInt64 {
		return 0, ErrTooLarge
	}
	return Nanos(v), nil
}

func leadingDigits(s string) (digits, rest string) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
