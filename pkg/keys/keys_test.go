package keys

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func testHasher(t *testing.T) *Hasher {
	h, err := NewHasher(bytes.Repeat([]byte{7}, 32), "p1")
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestGenerateSecret(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		s, err := GenerateSecret("en_")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s, "en_") || len(s) != 3+secretChars {
			t.Fatalf("bad secret shape %q", s)
		}
		for _, c := range s[3:] {
			if !strings.ContainsRune(secretAlphabet, c) {
				t.Fatalf("character %q outside the alphabet", c)
			}
		}
		if seen[s] {
			t.Fatal("duplicate secret")
		}
		seen[s] = true
	}
	if _, err := GenerateSecret("bad prefix"); err == nil {
		t.Fatal("want an error for a prefix with a space")
	}
}

func TestHasher(t *testing.T) {
	h := testHasher(t)
	a, b := h.Hash("en_abc"), h.Hash("en_abd")
	if len(a) != 32 || Equal(a, b) || !Equal(a, h.Hash("en_abc")) {
		t.Fatal("hash is not a deterministic 32-byte HMAC")
	}
	other, _ := NewHasher(bytes.Repeat([]byte{8}, 32), "p2")
	if Equal(a, other.Hash("en_abc")) {
		t.Fatal("hash does not depend on the pepper")
	}
	if _, err := NewHasher([]byte("short"), "x"); err == nil {
		t.Fatal("want an error for a short pepper")
	}
}

func TestHint(t *testing.T) {
	if got := Hint("en_", "en_0123456789wxyz"); got != "en_...wxyz" {
		t.Fatalf("hint = %q", got)
	}
}

func TestNewID(t *testing.T) {
	a, err := NewID(t0)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewID(t0.Add(time.Millisecond))
	if !ValidID(a) || !ValidID(b) {
		t.Fatalf("ids %q %q do not match their own pattern", a, b)
	}
	if a >= b {
		t.Fatalf("ids do not sort by time: %q >= %q", a, b)
	}
}

func TestParseTTL(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		err  string
	}{
		{in: "90m", want: t0.Add(90 * time.Minute)},
		{in: "12h", want: t0.Add(12 * time.Hour)},
		{in: "30d", want: t0.Add(30 * 24 * time.Hour)},
		{in: "3mo", want: time.Date(2027, 2, 24, 12, 0, 0, 0, time.UTC)},
		{in: "5y", err: `unknown unit "y"`},
		{in: "5", err: "no unit"},
		{in: "d", err: "whole number"},
		{in: "0d", err: "positive"},
		{in: "-3d", err: "whole number"},
		{in: "99999d", err: "100 years"},
	}
	for _, tt := range tests {
		ttl, err := ParseTTL(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseTTL(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTTL(%q): %v", tt.in, err)
			continue
		}
		if got := ttl.ExpiresAt(t0); !got.Equal(tt.want) {
			t.Errorf("ParseTTL(%q).ExpiresAt = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestRules(t *testing.T) {
	k := &eventsv1.Key{Permissions: []eventsv1.Permission{eventsv1.Permission_PERMISSION_WRITE}}
	if !HasPermission(k, eventsv1.Permission_PERMISSION_READ) || HasPermission(k, eventsv1.Permission_PERMISSION_PREDICT) {
		t.Fatal("WRITE must include READ and nothing else")
	}
	sel := &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED, Names: []string{"gpt-4"}}
	if !Allows(sel, "gpt-4") || Allows(sel, "GPT-4") || Allows(sel, "gpt-4o") {
		t.Fatal("SELECTED must compare exactly")
	}
	if !Allows(nil, "x") || Allows(&eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_NONE}, "x") {
		t.Fatal("nil filter means ALL; NONE allows nothing")
	}
}

func TestLifecycle(t *testing.T) {
	h := testHasher(t)
	created, secret, err := Create(t0, "bootstrap", h, validKey(), "en_")
	if err != nil {
		t.Fatal(err)
	}
	k := created.GetKey()
	if StatusAt(k, t0) != StatusActive || !Equal(k.GetSecret().GetHash(), h.Hash(secret)) {
		t.Fatal("created key is not active with the secret's hash")
	}
	if bytes.Contains([]byte(created.String()), []byte(secret)) {
		t.Fatal("the event contains the secret")
	}

	if _, _, err := Create(t0, "x", h, &eventsv1.Key{Account: "acme"}, "en_"); err == nil {
		t.Fatal("want a validation error for a key without a name")
	}

	rotated, secret2, err := Rotate(t0.Add(time.Hour), "x", h, k, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	rk := rotated.GetKey()
	if secret2 == secret || !Equal(rk.GetSecret().GetHash(), h.Hash(secret2)) {
		t.Fatal("rotation did not replace the secret")
	}
	if len(rk.GetPreviousSecrets()) != 1 || !rk.GetPreviousSecrets()[0].GetExpiresAt().AsTime().Equal(t0.Add(70*time.Minute)) {
		t.Fatalf("old secret grace not recorded: %v", rk.GetPreviousSecrets())
	}
	again, _, _ := Rotate(t0.Add(2*time.Hour), "x", h, rk, 0)
	if len(again.GetKey().GetPreviousSecrets()) != 0 {
		t.Fatal("an expired grace secret was kept")
	}

	revoked, err := Revoke(t0.Add(3*time.Hour), "x", rk)
	if err != nil || StatusAt(revoked.GetKey(), t0.Add(3*time.Hour)) != StatusRevoked {
		t.Fatalf("revoke: %v", err)
	}
	if ev, err := Revoke(t0, "x", revoked.GetKey()); ev != nil || err != nil {
		t.Fatal("revoking twice must be a no-op")
	}
	var se *StateError
	if _, err := Update(t0, "x", revoked.GetKey(), revoked.GetKey(), nil); !errors.As(err, &se) {
		t.Fatalf("updating a revoked key: want StateError, got %v", err)
	}
	if _, _, err := Rotate(t0, "x", h, revoked.GetKey(), 0); !errors.As(err, &se) {
		t.Fatalf("rotating a revoked key: want StateError, got %v", err)
	}
}

func TestUpdateKeepsIdentity(t *testing.T) {
	h := testHasher(t)
	created, _, _ := Create(t0, "a", h, validKey(), "en_")
	next := validKey()
	next.Name = "renamed"
	next.Id = "key_forged"
	next.Secret = &eventsv1.Secret{Hash: []byte("forged")}
	ev, err := Update(t0.Add(time.Minute), "b", created.GetKey(), next, []string{"name"})
	if err != nil {
		t.Fatal(err)
	}
	k := ev.GetKey()
	if k.GetName() != "renamed" || k.GetId() != created.GetKey().GetId() || !Equal(k.GetSecret().GetHash(), created.GetKey().GetSecret().GetHash()) {
		t.Fatal("update changed identity fields or missed the setting")
	}
}

func TestStatusExpired(t *testing.T) {
	ttl, _ := ParseTTL("1h")
	k := validKey()
	k.ExpiresAt = timestamppb.New(ttl.ExpiresAt(t0))
	if StatusAt(k, t0) != StatusActive || StatusAt(k, t0.Add(time.Hour)) != StatusExpired {
		t.Fatal("expiry is not derived from the clock")
	}
}
