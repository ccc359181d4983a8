package keys

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"regexp"
)

// secretAlphabet is base62: URL-, header- and shell-safe.
const secretAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// secretChars random base62 characters carry 32*log2(62) ≈ 190 bits, well
// above the 128 bits DESIGN.md asks for.
const secretChars = 32

var prefixPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,15}$`)

// ValidPrefix reports whether p may start a secret (e.g. "en_", "sk-live-").
func ValidPrefix(p string) error {
	if !prefixPattern.MatchString(p) {
		return fmt.Errorf("%q is not a valid prefix: use 1 to 16 letters, digits, '_' or '-', starting with a letter", p)
	}
	return nil
}

// GenerateSecret returns prefix followed by secretChars random base62
// characters from crypto/rand. Rejection sampling keeps every character
// uniform.
func GenerateSecret(prefix string) (string, error) {
	if err := ValidPrefix(prefix); err != nil {
		return "", err
	}
	out := make([]byte, 0, len(prefix)+secretChars)
	out = append(out, prefix...)
	var buf [64]byte
	for len(out) < len(prefix)+secretChars {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("read random: %w", err)
		}
		for _, b := range buf {
			// 248 = 4*62: bytes at or above it would bias the first characters.
			if b < 248 && len(out) < len(prefix)+secretChars {
				out = append(out, secretAlphabet[b%62])
			}
		}
	}
	return string(out), nil
}

// Hint is what may be shown of a secret: its prefix and last four characters.
func Hint(prefix, secret string) string {
	if len(secret) < len(prefix)+4 {
		return prefix + "..."
	}
	return prefix + "..." + secret[len(secret)-4:]
}

// Hasher turns secrets into the keyed hashes that are stored instead of them.
// The pepper lives only in the configuration of the services that need it.
type Hasher struct {
	pepper []byte
	id     string
}

// NewHasher returns a Hasher for a pepper of at least 32 bytes. id names the
// pepper so that a later rotation of the pepper can tell hashes apart.
func NewHasher(pepper []byte, id string) (*Hasher, error) {
	if len(pepper) < 32 {
		return nil, errors.New("the pepper must be at least 32 bytes")
	}
	return &Hasher{pepper: append([]byte(nil), pepper...), id: id}, nil
}

// PepperID names the pepper this Hasher uses.
func (h *Hasher) PepperID() string { return h.id }

// Hash returns HMAC-SHA-256(pepper, secret).
func (h *Hasher) Hash(secret string) []byte {
	m := hmac.New(sha256.New, h.pepper)
	m.Write([]byte(secret))
	return m.Sum(nil)
}

// Equal compares two hashes in constant time.
func Equal(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }
