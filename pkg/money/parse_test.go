package money

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Nanos
		wantErr error
	}{
		{in: "10", want: 10 * Dollar},
		{in: "10.5", want: 10*Dollar + 50*Cent},
		{in: "10.50", want: 10*Dollar + 50*Cent},
		{in: "0.000000001", want: 1},
		{in: "0.1", want: 100_000_000},
		{in: "0", want: 0},
		{in: "0.0", want: 0},
		{in: "000", want: 0},
		{in: "007.10", want: 7*Dollar + 10*Cent},
		{in: "+1", want: Dollar},
		{in: "  2.25\t\n", want: 2*Dollar + 25*Cent},
		{in: "1.5000000000000", want: Dollar + 50*Cent}, // zeros past nine places change nothing
		{in: "9223372036.854775807", want: 9223372036854775807},
		{in: "09223372036.854775807", want: 9223372036854775807},
		{in: "18446744073.709551615", wantErr: ErrTooLarge}, // fits a uint64, not an int64
		{in: "9223372036.854775808", wantErr: ErrTooLarge},
		{in: "10000000000", wantErr: ErrTooLarge},
		{in: "99999999999999999999999999", wantErr: ErrTooLarge},
		{in: "", wantErr: ErrEmpty},
		{in: "   ", wantErr: ErrEmpty},
		{in: "-1", wantErr: ErrNegative},
		{in: "-0.25", wantErr: ErrNegative},
		{in: "-0", wantErr: ErrNegative},
		{in: "0.0000000001", wantErr: ErrTooPrecise},
		{in: "1.0000000005", wantErr: ErrTooPrecise},
		{in: "1e3", wantErr: ErrExponent},
		{in: "1.5E-2", wantErr: ErrExponent},
		{in: "1e+3", wantErr: ErrExponent},
		{in: "1e", wantErr: ErrSyntax},
		{in: "1ea", wantErr: ErrSyntax},
		{in: "abc", wantErr: ErrSyntax},
		{in: "10.", wantErr: ErrSyntax},
		{in: ".5", wantErr: ErrSyntax},
		{in: "+", wantErr: ErrSyntax},
		{in: "-", wantErr: ErrSyntax},
		{in: "++1", wantErr: ErrSyntax},
		{in: "+-1", wantErr: ErrSyntax},
		{in: "-abc", wantErr: ErrSyntax},
		{in: "1.2.3", wantErr: ErrSyntax},
		{in: "1,000", wantErr: ErrSyntax},
		{in: "1_000", wantErr: ErrSyntax},
		{in: "$10", wantErr: ErrSyntax},
		{in: "0x10", wantErr: ErrSyntax},
		{in: "NaN", wantErr: ErrSyntax},
		{in: "Inf", wantErr: ErrSyntax},
		{in: "1 000", wantErr: ErrSyntax},
		{in: "１", wantErr: ErrSyntax}, // fullwidth digit
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Parse(%q) error = %v, want %v", tt.in, err, tt.wantErr)
			}
			if err != nil {
				var pe *ParseError
				if !errors.As(err, &pe) {
					t.Fatalf("Parse(%q) error %T is not a *ParseError", tt.in, err)
				}
				return
			}
			if got != tt.want {
				t.Errorf("Parse(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseErrorMessage(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"-1", `invalid amount "-1": must not be negative`},
		{"1.0000000001", `invalid amount "1.0000000001": at most 9 decimal places`},
		{"", `invalid amount "": empty`},
		{strings.Repeat("9", 100), `invalid amount "` + strings.Repeat("9", 40) + `...": too large`},
	}
	for _, tt := range tests {
		_, err := Parse(tt.in)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("Parse(%q) error = %v, want prefix %s", tt.in, err, tt.want)
		}
	}
}

func TestParseJSON(t *testing.T) {
	tests := []struct {
		raw     string
		want    Nanos
		wantErr error
	}{
		{raw: `10.50`, want: 10*Dollar + 50*Cent},
		{raw: `"10.50"`, want: 10*Dollar + 50*Cent},
		{raw: `10`, want: 10 * Dollar},
		{raw: `0`, want: 0},
		{raw: `0.1`, want: 100_000_000},
		{raw: `0.000000001`, want: 1},
		{raw: ` 3 `, want: 3 * Dollar},
		{raw: "\n\"3\"\t", want: 3 * Dollar},
		{raw: `" 3 "`, want: 3 * Dollar},
		{raw: `"\u0031"`, want: Dollar},
		{raw: `"+1"`, want: Dollar},
		{raw: `1e-7`, want: 100},
		{raw: `1E2`, want: 100 * Dollar},
		{raw: `1.5e+1`, want: 15 * Dollar},
		{raw: `25e-2`, want: 25 * Cent},
		{raw: `0e999999999999999999999`, want: 0},
		{raw: `9223372036854775807e-9`, want: 9223372036854775807},
		{raw: `9.223372036854775807e9`, want: 9223372036854775807},
		{raw: `1e-9`, want: 1},
		{raw: `1e-10`, wantErr: ErrTooPrecise},
		{raw: `1e-99999999999999999999`, wantErr: ErrTooPrecise},
		{raw: `1e10`, wantErr: ErrTooLarge},
		{raw: `1e99999999999999999999`, wantErr: ErrTooLarge},
		{raw: `9223372036854775808e-9`, wantErr: ErrTooLarge},
		{raw: `10.0000000001`, wantErr: ErrTooPrecise},
		{raw: `null`, wantErr: ErrNull},
		{raw: ` null `, wantErr: ErrNull},
		{raw: `"null"`, wantErr: ErrSyntax},
		{raw: ``, wantErr: ErrEmpty},
		{raw: `""`, wantErr: ErrEmpty},
		{raw: `-1`, wantErr: ErrNegative},
		{raw: `-0`, wantErr: ErrNegative},
		{raw: `"-1"`, wantErr: ErrNegative},
		{raw: `"1e5"`, wantErr: ErrExponent}, // strings follow Parse
		{raw: `+1`, wantErr: ErrSyntax},
		{raw: `01`, wantErr: ErrSyntax},
		{raw: `.5`, wantErr: ErrSyntax},
		{raw: `1.`, wantErr: ErrSyntax},
		{raw: `1e`, wantErr: ErrSyntax},
		{raw: `1 2`, wantErr: ErrSyntax},
		{raw: `true`, wantErr: ErrSyntax},
		{raw: `{}`, wantErr: ErrSyntax},
		{raw: `[1]`, wantErr: ErrSyntax},
		{raw: `"10.50`, wantErr: ErrSyntax},
		{raw: `"1" "2"`, wantErr: ErrSyntax},
		{raw: `NaN`, wantErr: ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := ParseJSON(json.RawMessage(tt.raw))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ParseJSON(%s) error = %v, want %v", tt.raw, err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("ParseJSON(%s) = %d, want %d", tt.raw, got, tt.want)
			}
		})
	}
}

// An API request struct is the common use: an amount field accepts a string or
// a number, and a missing or null field keeps its zero value.
func TestNanosUnmarshalJSON(t *testing.T) {
	type request struct {
		Limit Nanos `json:"limit"`
	}
	tests := []struct {
		body    string
		want    Nanos
		wantErr error
	}{
		{body: `{"limit": 10.50}`, want: 10*Dollar + 50*Cent},
		{body: `{"limit": "10.50"}`, want: 10*Dollar + 50*Cent},
		{body: `{"limit": null}`, want: 0},
		{body: `{}`, want: 0},
		{body: `{"limit": -1}`, wantErr: ErrNegative},
		{body: `{"limit": 0.0000000001}`, wantErr: ErrTooPrecise},
	}
	for _, tt := range tests {
		var req request
		err := json.Unmarshal([]byte(tt.body), &req)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("Unmarshal(%s) error = %v, want %v", tt.body, err, tt.wantErr)
			continue
		}
		if err == nil && req.Limit != tt.want {
			t.Errorf("Unmarshal(%s) = %d, want %d", tt.body, req.Limit, tt.want)
		}
	}
}

func TestNanosMarshalJSON(t *testing.T) {
	got, err := json.Marshal(map[string]Nanos{"a": 10*Dollar + 50*Cent, "b": -25 * Cent, "c": 0})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":"10.5","b":"-0.25","c":"0"}`; string(got) != want {
		t.Errorf("Marshal = %s, want %s", got, want)
	}
}
