package money

import (
	"math"
	"math/bits"
)

// MulDiv returns a*b/c rounded down (toward negative infinity), for pricing
// such as price per million tokens * tokens / 1_000_000 and for refill rates.
// The product is kept in 128 bits, so a*b may exceed int64 as long as the
// quotient fits. ok is false when c is 0 or the quotient does not fit in an
// int64. Rounding down never charges a customer for a fraction of a nano;
// use MulDivCeil where undercounting is the worse error, e.g. reservations.
func MulDiv(a, b, c int64) (q int64, ok bool) {
	return mulDiv(a, b, c, false)
}

// MulDivCeil is MulDiv rounded up (toward positive infinity).
func MulDivCeil(a, b, c int64) (q int64, ok bool) {
	return mulDiv(a, b, c, true)
}

func mulDiv(a, b, c int64, roundUp bool) (int64, bool) {
	if c == 0 {
		return 0, false
	}
	negative := (a < 0) != (b < 0) != (c < 0)
	hi, lo := bits.Mul64(magnitude(a), magnitude(b))
	divisor := magnitude(c)
	if hi >= divisor {
		// The quotient needs more than 64 bits (and Div64 would panic).
		return 0, false
	}
	quo, rem := bits.Div64(hi, lo, divisor)
	// Div64 truncates the magnitude, which rounds toward zero: that is down
	// for a positive result and up for a negative one.
	if rem != 0 && negative != roundUp {
		if quo == math.MaxUint64 {
			return 0, false
		}
		quo++
	}
	if negative {
		if quo > 1<<63 {
			return 0, false
		}
		return int64(-quo), true // -quo wraps to the two's complement
	}
	if quo > math.MaxInt64 {
		return 0, false
	}
	return int64(quo), true
}

// magnitude returns |x|; as a uint64 it exists for math.MinInt64 too.
func magnitude(x int64) uint64 {
	if x < 0 {
		return -uint64(x)
	}
	return uint64(x)
}
