package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/keys"
)

var now = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// resolver is an in-memory KeyResolver (a unit-test fake; the admin tests use the real read model).
type resolver map[string]*eventsv1.Key

func (r resolver) ResolveKey(_ context.Context, hash []byte) (*eventsv1.Key, error) {
	if k, ok := r[string(hash)]; ok {
		return k, nil
	}
	return nil, keys.ErrNotFound
}

func header(tok string) http.Header {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	return h
}

func TestAuthenticate(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	hasher, _ := keys.NewHasher(bytes.Repeat([]byte{1}, 32), "p1")
	key := func(id string, perm eventsv1.Permission, status eventsv1.KeyStatus) *eventsv1.Key {
		return &eventsv1.Key{Id: id, Account: "acme", Permissions: []eventsv1.Permission{perm}, Status: status,
			Secret: &eventsv1.Secret{Hash: hasher.Hash("en_" + id)}}
	}
	expired := key("k4", eventsv1.Permission_PERMISSION_WRITE, eventsv1.KeyStatus_KEY_STATUS_ACTIVE)
	expired.ExpiresAt = timestamppb.New(now.Add(-time.Second))
	res := resolver{}
	for _, k := range []*eventsv1.Key{
		key("k1", eventsv1.Permission_PERMISSION_WRITE, eventsv1.KeyStatus_KEY_STATUS_ACTIVE),
		key("k2", eventsv1.Permission_PERMISSION_PREDICT, eventsv1.KeyStatus_KEY_STATUS_ACTIVE),
		key("k3", eventsv1.Permission_PERMISSION_READ, eventsv1.KeyStatus_KEY_STATUS_REVOKED),
		expired,
	} {
		res[string(k.GetSecret().GetHash())] = k
	}
	a := New(Config{BootstrapToken: "boot-token-0123456789", JWTSecret: []byte("hs-secret"), JWTPublicKey: &rsaKey.PublicKey,
		Hasher: hasher, Keys: res, Now: func() time.Time { return now }})

	sign := func(method jwt.SigningMethod, k any, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(method, claims).SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	valid := jwt.MapClaims{"sub": "alice", "account": "acme", "accounts": []string{"beta"}, "exp": now.Add(time.Hour).Unix()}
	tests := []struct {
		name    string
		token   string
		want    Kind
		write   bool
		account string
		err     error
	}{
		{"bootstrap", "boot-token-0123456789", Bootstrap, true, "default", nil},
		{"hs256 operator", sign(jwt.SigningMethodHS256, []byte("hs-secret"), valid), Operator, true, "acme", nil},
		{"rs256 operator", sign(jwt.SigningMethodRS256, rsaKey, valid), Operator, true, "acme", nil},
		{"hs256 with the wrong secret", sign(jwt.SigningMethodHS256, []byte("other"), valid), 0, false, "", ErrUnauthenticated},
		{"expired jwt", sign(jwt.SigningMethodHS256, []byte("hs-secret"), jwt.MapClaims{"sub": "a", "account": "acme", "exp": now.Add(-time.Minute).Unix()}), 0, false, "", ErrUnauthenticated},
		{"jwt without exp", sign(jwt.SigningMethodHS256, []byte("hs-secret"), jwt.MapClaims{"sub": "a", "account": "acme"}), 0, false, "", ErrUnauthenticated},
		{"jwt without account", sign(jwt.SigningMethodHS256, []byte("hs-secret"), jwt.MapClaims{"sub": "a", "exp": now.Add(time.Hour).Unix()}), 0, false, "", ErrUnauthenticated},
		{"alg none", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIiwiYWNjb3VudCI6ImFjbWUifQ.", 0, false, "", ErrUnauthenticated},
		{"write key", "en_k1", APIKey, true, "acme", nil},
		{"predict key", "en_k2", 0, false, "", ErrForbidden},
		{"revoked key", "en_k3", 0, false, "", ErrUnauthenticated},
		{"expired key", "en_k4", 0, false, "", ErrUnauthenticated},
		{"unknown key", "en_nope", 0, false, "", ErrUnauthenticated},
		{"empty", "", 0, false, "", ErrUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := a.Authenticate(context.Background(), header(tt.token))
			if tt.err != nil {
				if err == nil || !errors.Is(err, tt.err) {
					t.Fatalf("want %v, got %v (%+v)", tt.err, err, p)
				}
				return
			}
			if err != nil || p.Kind != tt.want || p.CanWrite != tt.write || p.Account != tt.account {
				t.Fatalf("got %+v, %v", p, err)
			}
		})
	}
	op, _ := a.Authenticate(context.Background(), header(sign(jwt.SigningMethodHS256, []byte("hs-secret"), valid)))
	if !op.MayWrite("acme") || !op.MayWrite("beta") || op.MayRead("gamma") {
		t.Fatalf("operator accounts wrong: %+v", op)
	}
	h := http.Header{}
	h.Set("x-api-key", "en_k1")
	if p, err := a.Authenticate(context.Background(), h); err != nil || p.Subject != "k1" {
		t.Fatalf("x-api-key: %v %v", p, err)
	}
}
