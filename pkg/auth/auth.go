// Package auth decides who a caller of the admin API is: the bootstrap
// operator, an operator with a JWT, or an API key with READ or WRITE.
package auth

import (
	"context"
	"crypto/rsa"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/keys"
)

// ErrUnauthenticated means no usable credential was presented. Its message
// never says which part of a credential was wrong.
var ErrUnauthenticated = errors.New("missing or invalid credentials: send Authorization: Bearer <operator token or API key>")

// ErrForbidden means the caller is known but may not do what it asked.
var ErrForbidden = errors.New("permission denied")

// Kind is the kind of caller.
type Kind int

const (
	Bootstrap Kind = iota + 1
	Operator
	APIKey
)

// Principal is an authenticated caller.
type Principal struct {
	Kind Kind
	// Subject is the operator's sub or the key's id.
	Subject string
	// Account is the caller's home account: the default for requests that do
	// not name one.
	Account string
	// Accounts an operator may manage besides Account; ["*"] means all.
	Accounts []string
	// CanWrite is false for keys with READ only.
	CanWrite bool
}

// Actor is how events record who caused them.
func (p Principal) Actor() string {
	switch p.Kind {
	case Bootstrap:
		return "bootstrap"
	case Operator:
		return "operator:" + p.Subject
	default:
		return "key:" + p.Subject
	}
}

// MayRead reports whether p may read account's keys.
func (p Principal) MayRead(account string) bool {
	return p.Kind == Bootstrap || account == p.Account || slices.Contains(p.Accounts, "*") || slices.Contains(p.Accounts, account)
}

// MayWrite reports whether p may change account's keys.
func (p Principal) MayWrite(account string) bool { return p.CanWrite && p.MayRead(account) }

// KeyResolver finds the key whose current (or still valid previous) secret has
// the given hash; it returns keys.ErrNotFound when there is none.
type KeyResolver interface {
	ResolveKey(ctx context.Context, hash []byte) (*eventsv1.Key, error)
}

// Config configures an Authenticator. Every credential kind is optional.
type Config struct {
	// BootstrapToken is the static operator token; it may manage every account.
	BootstrapToken string
	// DefaultAccount is the home account of the bootstrap operator.
	DefaultAccount string
	// JWTSecret verifies HS256 operator tokens.
	JWTSecret []byte
	// JWTPublicKey verifies RS256 operator tokens.
	JWTPublicKey *rsa.PublicKey
	Hasher       *keys.Hasher
	Keys         KeyResolver
	Now          func() time.Time
}

// Authenticator turns request headers into a Principal.
type Authenticator struct {
	cfg Config
}

// New returns an Authenticator.
func New(cfg Config) *Authenticator {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DefaultAccount == "" {
		cfg.DefaultAccount = "default"
	}
	return &Authenticator{cfg: cfg}
}

// Token extracts the credential from Authorization: Bearer, x-api-key or
// api-key.
func Token(h http.Header) string {
	if v := h.Get("Authorization"); v != "" {
		if scheme, tok, ok := strings.Cut(v, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	if v := h.Get("x-api-key"); v != "" {
		return v
	}
	return h.Get("api-key")
}

// Authenticate identifies the caller of a request.
func (a *Authenticator) Authenticate(ctx context.Context, h http.Header) (Principal, error) {
	tok := Token(h)
	if tok == "" {
		return Principal{}, ErrUnauthenticated
	}
	if a.cfg.BootstrapToken != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(a.cfg.BootstrapToken)) == 1 {
		return Principal{Kind: Bootstrap, Subject: "bootstrap", Account: a.cfg.DefaultAccount, Accounts: []string{"*"}, CanWrite: true}, nil
	}
	if strings.Count(tok, ".") == 2 && (len(a.cfg.JWTSecret) > 0 || a.cfg.JWTPublicKey != nil) {
		return a.operator(tok)
	}
	return a.apiKey(ctx, tok)
}

// claims are the operator JWT's claims: sub, account (home), accounts (more).
type claims struct {
	jwt.RegisteredClaims
	Account  string   `json:"account"`
	Accounts []string `json:"accounts,omitempty"`
}

func (a *Authenticator) operator(tok string) (Principal, error) {
	var c claims
	_, err := jwt.ParseWithClaims(tok, &c, func(t *jwt.Token) (any, error) {
		switch t.Method.Alg() {
		case "HS256":
			if len(a.cfg.JWTSecret) > 0 {
				return a.cfg.JWTSecret, nil
			}
		case "RS256":
			if a.cfg.JWTPublicKey != nil {
				return a.cfg.JWTPublicKey, nil
			}
		}
		return nil, fmt.Errorf("unexpected signing method %s", t.Method.Alg())
	}, jwt.WithValidMethods([]string{"HS256", "RS256"}), jwt.WithTimeFunc(a.cfg.Now), jwt.WithExpirationRequired())
	if err != nil || c.Subject == "" || c.Account == "" {
		return Principal{}, ErrUnauthenticated
	}
	return Principal{Kind: Operator, Subject: c.Subject, Account: c.Account, Accounts: c.Accounts, CanWrite: true}, nil
}

func (a *Authenticator) apiKey(ctx context.Context, secret string) (Principal, error) {
	if a.cfg.Hasher == nil || a.cfg.Keys == nil {
		return Principal{}, ErrUnauthenticated
	}
	hash := a.cfg.Hasher.Hash(secret)
	k, err := a.cfg.Keys.ResolveKey(ctx, hash)
	if errors.Is(err, keys.ErrNotFound) {
		return Principal{}, ErrUnauthenticated
	}
	if err != nil {
		return Principal{}, fmt.Errorf("resolve api key: %w", err)
	}
	if !secretMatches(k, hash, a.cfg.Now()) || keys.StatusAt(k, a.cfg.Now()) != keys.StatusActive {
		return Principal{}, ErrUnauthenticated
	}
	p := Principal{Kind: APIKey, Subject: k.GetId(), Account: k.GetAccount(),
		CanWrite: keys.HasPermission(k, eventsv1.Permission_PERMISSION_WRITE)}
	if !keys.HasPermission(k, eventsv1.Permission_PERMISSION_READ) {
		return Principal{}, fmt.Errorf("%w: this key has neither READ nor WRITE", ErrForbidden)
	}
	return p, nil
}

// secretMatches checks, in constant time, that hash is k's current secret or
// a previous one still in its grace period.
func secretMatches(k *eventsv1.Key, hash []byte, now time.Time) bool {
	ok := keys.Equal(k.GetSecret().GetHash(), hash)
	for _, s := range k.GetPreviousSecrets() {
		if keys.Equal(s.GetHash(), hash) && now.Before(s.GetExpiresAt().AsTime()) {
			ok = true
		}
	}
	return ok
}
