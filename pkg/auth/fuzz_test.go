package auth

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzToken checks Token with arbitrary values of its three headers. It never
// panics, and what it returns is cut from one header: Authorization when that
// is present at all (a malformed one is refused rather than passed over for
// x-api-key), then x-api-key, then api-key. From Authorization it takes only
// what follows a Bearer scheme (any case), with the padding trimmed; the other
// two headers are taken as they are.
func FuzzToken(f *testing.F) {
	for _, s := range [][3]string{
		{"Bearer en_0123456789abcdef", "", ""},
		{"bearer   en_0123456789abcdef ", "", ""},
		{"BEARER en_k1", "en_k2", "en_k3"},
		{"", "en_k2", ""},
		{"", "", "en_k3"},
		{"", "", ""},
		{"Bearer", "en_k2", ""},
		{"Bearer ", "", ""},
		{"Bearer \t ", "", ""},
		{"Basic dTplbl9rMQ==", "", ""},
		{"Token en_k1", "en_k1", "en_k1"},
		{" Bearer en_k1", "", ""},
		{"Bearer\ten_k1", "", ""},
		{"Bearer en_k1 en_k2", "", ""},
		{"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", "", ""},
		{"Bearer \u00a0en_k1\u2003", " en_k2 ", "\xff"},
		{"Be\u0430rer en_k1", "", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, authorization, xAPIKey, apiKey string) {
		h := http.Header{}
		for name, v := range map[string]string{"Authorization": authorization, "X-Api-Key": xAPIKey, "Api-Key": apiKey} {
			if v != "" {
				h.Set(name, v)
			}
		}
		got := Token(h)
		switch {
		case authorization != "":
			if !strings.Contains(authorization, got) {
				t.Fatalf("Token = %q, not part of Authorization %q", got, authorization)
			}
			if strings.TrimSpace(got) != got {
				t.Fatalf("Token = %q from Authorization %q keeps its padding", got, authorization)
			}
			scheme, rest, ok := strings.Cut(authorization, " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") {
				if got != "" {
					t.Fatalf("Token = %q from Authorization %q, which is not Bearer", got, authorization)
				}
			} else if got != strings.TrimSpace(rest) {
				t.Fatalf("Token = %q from Authorization %q, want %q", got, authorization, strings.TrimSpace(rest))
			}
		case xAPIKey != "":
			if got != xAPIKey {
				t.Fatalf("Token = %q, want x-api-key %q", got, xAPIKey)
			}
		default:
			if got != apiKey {
				t.Fatalf("Token = %q, want api-key %q", got, apiKey)
			}
		}

		// Whatever the other headers say, "Bearer <token>" yields the token.
		tok := xAPIKey
		h.Set("Authorization", "Bearer "+tok)
		if got := Token(h); got != strings.TrimSpace(tok) {
			t.Fatalf("Token = %q from Authorization %q", got, "Bearer "+tok)
		}
		if got := Token(http.Header{"Authorization": {"bEaReR " + tok}}); got != strings.TrimSpace(tok) {
			t.Fatalf("Token = %q from Authorization %q", got, "bEaReR "+tok)
		}
	})
}
