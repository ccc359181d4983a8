package keys

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// TTL is a time to live as an operator writes it: "90m", "12h", "30d", "3mo".
type TTL struct {
	N    int
	Unit string // "m", "h", "d" or "mo"
}

// maxTTL bounds a TTL so that an expiry stays within time.Time's useful range
// and a typo like "30000000d" is caught.
const maxTTLDays = 100 * 366

// ParseTTL parses a TTL. Months are calendar months (AddDate), the others are
// fixed durations.
func ParseTTL(s string) (TTL, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return TTL{}, fmt.Errorf("%q must start with a whole number, e.g. 90m, 12h, 30d or 3mo", s)
	}
	n, err := strconv.Atoi(s[:i])
	if err != nil || n <= 0 {
		return TTL{}, fmt.Errorf("%q must be a positive whole number and a unit, e.g. 90m, 12h, 30d or 3mo", s)
	}
	t := TTL{N: n, Unit: s[i:]}
	var days int
	switch t.Unit {
	case "m":
		days = n / (24 * 60)
	case "h":
		days = n / 24
	case "d":
		days = n
	case "mo":
		days = n * 31
	case "":
		return TTL{}, fmt.Errorf("%q has no unit; use m (minutes), h (hours), d (days) or mo (months)", s)
	default:
		return TTL{}, fmt.Errorf("unknown unit %q in %q; use m (minutes), h (hours), d (days) or mo (months)", t.Unit, s)
	}
	if days > maxTTLDays {
		return TTL{}, fmt.Errorf("%q is longer than 100 years", s)
	}
	return t, nil
}

// ExpiresAt is the moment a key created or updated at now expires.
func (t TTL) ExpiresAt(now time.Time) time.Time {
	switch t.Unit {
	case "m":
		return now.Add(time.Duration(t.N) * time.Minute)
	case "h":
		return now.Add(time.Duration(t.N) * time.Hour)
	case "d":
		return now.Add(time.Duration(t.N) * 24 * time.Hour)
	default: // "mo"
		return now.AddDate(0, t.N, 0)
	}
}

func (t TTL) String() string { return strconv.Itoa(t.N) + t.Unit }
