package money

import (
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
)

// parseSeeds are the inputs both fuzz tests start from.
func parseSeeds() []string {
	return []string{
		"10", "10.5", "10.50", "0.000000001", "+1", " 7 ", "-1", "1e3", "", ".5", "10.",
		"9223372036.854775807", "9223372036.854775808", "1.0000000001", "1.5000000000000",
		"0000.000", "abc", "1e", "0x1p3", "１",
	}
}

// FuzzParse checks that Parse never panics, that every accepted input is read
// exactly (against math/big) and that String gives back the same amount.
func FuzzParse(f *testing.F) {
	for _, s := range parseSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) error %T is not a *ParseError", s, err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("Parse(%q) = %d, negative", s, n)
		}
		want, ok := new(big.Rat).SetString(strings.TrimSpace(s))
		if !ok {
			t.Fatalf("Parse(%q) accepted what math/big rejects", s)
		}
		if got := big.NewRat(int64(n), int64(Dollar)); got.Cmp(want) != 0 {
			t.Fatalf("Parse(%q) = %d nanos, want %s dollars", s, n, want.FloatString(12))
		}
		back, err := Parse(n.String())
		if err != nil || back != n {
			t.Fatalf("Parse(%q) = %d, but Parse(%q) = %d, %v", s, n, n.String(), back, err)
		}
		for d := 0; d <= decimals; d++ {
			if back, err := Parse(n.Format(d)); err != nil || back != n {
				t.Fatalf("Parse(%q) = %d, but Parse(%q) = %d, %v", s, n, n.Format(d), back, err)
			}
		}
	})
}

// FuzzParseJSON checks that ParseJSON never panics, agrees with math/big on
// plain numbers and round-trips through MarshalJSON.
func FuzzParseJSON(f *testing.F) {
	for _, s := range parseSeeds() {
		f.Add(s)
		f.Add(`"` + s + `"`)
	}
	for _, s := range []string{"null", "true", "{}", "1e-7", "1E+2", "01", "-0", `"\u0031"`, "1e-99999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		n, err := ParseJSON(json.RawMessage(raw))
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseJSON(%s) = %d, negative", raw, n)
		}
		token := strings.Trim(raw, " \t\r\n")
		if token[0] != '"' && !strings.ContainsAny(token, "eE") {
			// Without an exponent, math/big's parsing is cheap and exact.
			want, ok := new(big.Rat).SetString(token)
			if !ok || big.NewRat(int64(n), int64(Dollar)).Cmp(want) != 0 {
				t.Fatalf("ParseJSON(%s) = %d nanos, math/big says %v", raw, n, want)
			}
		}
		if token[0] != '"' && !json.Valid([]byte(token)) {
			t.Fatalf("ParseJSON(%s) accepted invalid JSON", raw)
		}
		out, err := n.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if back, err := ParseJSON(out); err != nil || back != n {
			t.Fatalf("ParseJSON(%s) = %d, but ParseJSON(%s) = %d, %v", raw, n, out, back, err)
		}
		if back, err := ParseJSON(json.RawMessage(n.String())); err != nil || back != n {
			t.Fatalf("ParseJSON(%s) = %d, but ParseJSON(%s) = %d, %v", raw, n, n.String(), back, err)
		}
	})
}
