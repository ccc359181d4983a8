package money

import (
	"math"
	"testing"
)

func TestString(t *testing.T) {
	tests := []struct {
		n    Nanos
		want string
	}{
		{0, "0"},
		{1, "0.000000001"},
		{Cent, "0.01"},
		{10*Dollar + 50*Cent, "10.5"},
		{10 * Dollar, "10"},
		{123_456_789, "0.123456789"},
		{-25 * Cent, "-0.25"},
		{-1, "-0.000000001"},
		{-3 * Dollar, "-3"},
		{math.MaxInt64, "9223372036.854775807"},
		{math.MinInt64, "-9223372036.854775808"},
	}
	for _, tt := range tests {
		if got := tt.n.String(); got != tt.want {
			t.Errorf("Nanos(%d).String() = %q, want %q", int64(tt.n), got, tt.want)
		}
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		n           Nanos
		minDecimals int
		want        string
	}{
		{10*Dollar + 50*Cent, 2, "10.50"},
		{10 * Dollar, 2, "10.00"},
		{10 * Dollar, 0, "10"},
		{1, 2, "0.000000001"},
		{Dollar + 123*Cent/10, 2, "1.123"},
		{-25 * Cent, 4, "-0.2500"},
		{Dollar, 9, "1.000000000"},
		{Dollar, 12, "1.000000000"}, // clamped to 9
		{Dollar, -1, "1"},           // clamped to 0
	}
	for _, tt := range tests {
		if got := tt.n.Format(tt.minDecimals); got != tt.want {
			t.Errorf("Nanos(%d).Format(%d) = %q, want %q", int64(tt.n), tt.minDecimals, got, tt.want)
		}
	}
}

func TestConstants(t *testing.T) {
	if Dollar != 1e9 || Cent*100 != Dollar || Nano != 1 {
		t.Errorf("Dollar = %d, Cent = %d, Nano = %d", Dollar, Cent, Nano)
	}
}
