// Package money represents amounts of money exactly, as an integer count of
// nano-dollars. Floats never touch an amount: balances are compared with limits
// and summed across millions of events, and binary fractions cannot represent
// 0.10 exactly, so rounding errors would add up to money we cannot account for.
package money

import "strconv"

// Nanos is an amount in nano-dollars ($1 = 1_000_000_000). It is signed
// because balances may go below zero by what one request cost beyond its
// reservation; amounts taken from users (Parse, ParseJSON) are never negative.
type Nanos int64

const (
	// Nano is the smallest amount Tollgate can represent.
	Nano Nanos = 1
	// Cent is a hundredth of a dollar.
	Cent Nanos = 10_000_000
	// Dollar is one US dollar.
	Dollar Nanos = 1_000_000_000
)

// decimals is the number of decimal places a Nanos carries.
const decimals = 9

// String returns n as decimal dollars with no trailing zeros: "10.5", "10",
// "0.000000001", "-0.25". Parse accepts it back for every n >= 0.
func (n Nanos) String() string {
	return n.Format(0)
}

// Format returns n as decimal dollars with at least minDecimals digits after
// the point ("10.50" for Format(2)), more when n needs them so the result is
// still exact. minDecimals is clamped to [0, 9].
func (n Nanos) Format(minDecimals int) string {
	return string(n.AppendFormat(make([]byte, 0, 32), minDecimals))
}

// AppendFormat appends n, formatted as Format does, to buf.
func (n Nanos) AppendFormat(buf []byte, minDecimals int) []byte {
	minDecimals = min(max(minDecimals, 0), decimals)

	// Work on the magnitude as uint64 so math.MinInt64 has one too.
	mag := uint64(n)
	if n < 0 {
		mag = -mag
	}
	whole, frac := mag/uint64(Dollar), mag%uint64(Dollar)

	if n < 0 {
		buf = append(buf, '-')
	}
	buf = strconv.AppendUint(buf, whole, 10)

	var digits [decimals]byte
	for i := decimals - 1; i >= 0; i-- {
		digits[i] = byte('0' + frac%10)
		frac /= 10
	}
	keep := decimals
	for keep > minDecimals && digits[keep-1] == '0' {
		keep--
	}
	if keep > 0 {
		buf = append(buf, '.')
		buf = append(buf, digits[:keep]...)
	}
	return buf
}
