package money

import (
	"math"
	"math/big"
	"testing"
)

func TestMulDiv(t *testing.T) {
	const maxI, minI = math.MaxInt64, math.MinInt64
	tests := []struct {
		name     string
		a, b, c  int64
		floor    int64
		ceil     int64
		overflow bool
	}{
		// $3 per million tokens * 1234 tokens = 0.003702 dollars.
		{name: "price per million tokens", a: 3 * int64(Dollar), b: 1234, c: 1_000_000, floor: 3_702_000, ceil: 3_702_000},
		{name: "exact", a: 6, b: 4, c: 3, floor: 8, ceil: 8},
		{name: "rounds", a: 7, b: 1, c: 2, floor: 3, ceil: 4},
		{name: "negative rounds down", a: -7, b: 1, c: 2, floor: -4, ceil: -3},
		{name: "negative divisor", a: 7, b: 1, c: -2, floor: -4, ceil: -3},
		{name: "two negatives", a: -7, b: -1, c: 2, floor: 3, ceil: 4},
		{name: "zero", a: 0, b: -5, c: 3, floor: 0, ceil: 0},
		// The product needs 128 bits but the quotient fits.
		{name: "wide product", a: maxI, b: maxI, c: maxI, floor: maxI, ceil: maxI},
		{name: "wide product rounds", a: maxI, b: 3, c: 4, floor: 6917529027641081855, ceil: 6917529027641081856},
		{name: "min int", a: minI, b: 1, c: 1, floor: minI, ceil: minI},
		{name: "min int squared over itself", a: minI, b: minI, c: minI, floor: minI, ceil: minI},
		{name: "min int negated", a: minI, b: -1, c: 1, overflow: true},
		{name: "quotient too large", a: maxI, b: 2, c: 1, overflow: true},
		{name: "quotient beyond 64 bits", a: maxI, b: maxI, c: 1, overflow: true},
		{name: "division by zero", a: 1, b: 1, c: 0, overflow: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			floor, ok := MulDiv(tt.a, tt.b, tt.c)
			if ok == tt.overflow || (ok && floor != tt.floor) {
				t.Errorf("MulDiv(%d, %d, %d) = %d, %v; want %d, %v", tt.a, tt.b, tt.c, floor, ok, tt.floor, !tt.overflow)
			}
			ceil, ok := MulDivCeil(tt.a, tt.b, tt.c)
			if ok == tt.overflow || (ok && ceil != tt.ceil) {
				t.Errorf("MulDivCeil(%d, %d, %d) = %d, %v; want %d, %v", tt.a, tt.b, tt.c, ceil, ok, tt.ceil, !tt.overflow)
			}
		})
	}
}

// FuzzMulDiv checks both roundings against math/big.
func FuzzMulDiv(f *testing.F) {
	f.Add(int64(7), int64(3), int64(2))
	f.Add(int64(-7), int64(3), int64(2))
	f.Add(int64(math.MinInt64), int64(-1), int64(1))
	f.Add(int64(math.MaxInt64), int64(math.MaxInt64), int64(math.MaxInt64))
	f.Add(int64(1), int64(1), int64(0))
	f.Fuzz(func(t *testing.T, a, b, c int64) {
		check := func(name string, got int64, ok bool, want *big.Int) {
			fits := want != nil && want.IsInt64()
			if ok != fits || (ok && got != want.Int64()) {
				t.Errorf("%s(%d, %d, %d) = %d, %v; want %v", name, a, b, c, got, ok, want)
			}
		}
		if c == 0 {
			check("MulDiv", 0, false, nil)
			return
		}
		num := new(big.Int).Mul(big.NewInt(a), big.NewInt(b))
		den := big.NewInt(c)
		if den.Sign() < 0 {
			num.Neg(num)
			den.Neg(den)
		}
		// With a positive divisor, Euclidean division rounds down.
		floor := new(big.Int).Div(num, den)
		ceil := new(big.Int).Neg(new(big.Int).Div(new(big.Int).Neg(num), den))
		got, ok := MulDiv(a, b, c)
		check("MulDiv", got, ok, floor)
		got, ok = MulDivCeil(a, b, c)
		check("MulDivCeil", got, ok, ceil)
	})
}
