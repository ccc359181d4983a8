package edge

import (
	"math"
	"testing"
)

func TestWorstOutputSaturates(t *testing.T) {
	for _, tc := range []struct{ max, n, want int64 }{
		{4096, 1, 4096},
		{4096, 0, 4096}, // no n: one choice
		{4096, 128, 524288},
		{1 << 62, 128, math.MaxInt64}, // wrapped negative before: nothing reserved
		{math.MaxInt64, 2, math.MaxInt64},
		{math.MaxInt64 / 2, 2, math.MaxInt64 - 1},
	} {
		if got := worstOutput(tc.max, tc.n); got != tc.want {
			t.Errorf("worstOutput(%d, %d) = %d, want %d", tc.max, tc.n, got, tc.want)
		}
	}
}
