package keys

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"regexp"
	"time"
)

// Key ids are "key_" and 26 characters of lower-case Crockford base32: 48 bits
// of milliseconds (so ids sort by creation time) and 80 random bits. They are
// safe as NATS subject tokens and in URLs.
const crockford = "0123456789abcdefghjkmnpqrstvwxyz"

var (
	idPattern      = regexp.MustCompile(`^key_[0-9a-hjkmnp-tv-z]{26}$`)
	accountPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
)

// NewID returns a new key id made at now.
func NewID(now time.Time) (string, error) {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	if _, err := rand.Read(b[6:]); err != nil {
		return "", fmt.Errorf("read random: %w", err)
	}
	// 128 bits as 26 base32 digits: the top digit holds 3 bits.
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	out := make([]byte, 26)
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return "key_" + string(out), nil
}

// ValidID reports whether id has the form of a key id.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// ValidateAccount checks an account name. Accounts are NATS subject tokens, so
// they must not contain dots, spaces or wildcards.
func ValidateAccount(a string) error {
	if !accountPattern.MatchString(a) {
		return fmt.Errorf("%q is not a valid account: use 1 to 63 lower-case letters, digits, '_' or '-', starting with a letter or digit", a)
	}
	return nil
}
