package readmodel

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/keys"
)

// Store answers queries on the read model.
type Store struct {
	pool *pgxpool.Pool
	now  func() time.Time
}

// NewStore returns a Store; now is the clock that decides "expired".
func NewStore(pool *pgxpool.Pool, now func() time.Time) *Store {
	return &Store{pool: pool, now: now}
}

// Filter selects keys in List.
type Filter struct {
	Account    string
	Status     keys.Status // empty: all
	Name       string      // substring, case-insensitive
	Permission eventsv1.Permission
	PageSize   int
	PageToken  string
}

// Page is one page of a listing; NextPageToken is empty on the last one.
type Page struct {
	Keys          []*eventsv1.Key
	Revisions     []uint64
	NextPageToken string
}

// ErrBadPageToken is returned for a page token this service did not make.
var ErrBadPageToken = errors.New("page_token is not one returned by a previous ListKeys call")

// List returns one page of an account's keys, oldest first. Pages are keyset
// pages on the key id (ids sort by creation time), so a page stays stable
// when keys are created meanwhile.
func (s *Store) List(ctx context.Context, f Filter) (Page, error) {
	var where []string
	args := []any{f.Account}
	where = append(where, "account = $1")
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	now := s.now()
	switch f.Status {
	case keys.StatusActive:
		where = append(where, "status = 'active' AND (expires_at IS NULL OR expires_at > "+arg(now)+")")
	case keys.StatusExpired:
		where = append(where, "status = 'active' AND expires_at <= "+arg(now))
	case keys.StatusRevoked:
		where = append(where, "status = 'revoked'")
	}
	if f.Name != "" {
		where = append(where, "strpos(lower(name), lower("+arg(f.Name)+")) > 0")
	}
	if f.Permission != eventsv1.Permission_PERMISSION_UNSPECIFIED {
		where = append(where, arg(f.Permission.String())+" = ANY(permissions)")
	}
	if f.PageToken != "" {
		after, err := base64.RawURLEncoding.DecodeString(f.PageToken)
		if err != nil || !keys.ValidID(string(after)) {
			return Page{}, ErrBadPageToken
		}
		where = append(where, "id > "+arg(string(after)))
	}
	size := f.PageSize
	q := "SELECT state, revision FROM keys WHERE " + strings.Join(where, " AND ") +
		" ORDER BY id LIMIT " + arg(size+1)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return Page{}, fmt.Errorf("list keys: %w", err)
	}
	var page Page
	for rows.Next() {
		var state []byte
		var rev int64
		if err := rows.Scan(&state, &rev); err != nil {
			return Page{}, fmt.Errorf("list keys: %w", err)
		}
		k := new(eventsv1.Key)
		if err := proto.Unmarshal(state, k); err != nil {
			return Page{}, fmt.Errorf("list keys: decode: %w", err)
		}
		page.Keys = append(page.Keys, k)
		page.Revisions = append(page.Revisions, uint64(rev))
	}
	if err := rows.Err(); err != nil {
		return Page{}, fmt.Errorf("list keys: %w", err)
	}
	if len(page.Keys) > size {
		page.Keys, page.Revisions = page.Keys[:size], page.Revisions[:size]
		page.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(page.Keys[size-1].GetId()))
	}
	return page, nil
}

// ResolveKey finds the key one of whose open secrets has this hash.
func (s *Store) ResolveKey(ctx context.Context, hash []byte) (*eventsv1.Key, error) {
	var state []byte
	err := s.pool.QueryRow(ctx, `SELECT k.state FROM key_secrets s JOIN keys k ON k.account = s.account AND k.id = s.id
		WHERE s.hash = $1 AND (s.expires_at IS NULL OR s.expires_at > $2)`, hash, s.now()).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, keys.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("resolve key: %w", err)
	}
	k := new(eventsv1.Key)
	if err := proto.Unmarshal(state, k); err != nil {
		return nil, fmt.Errorf("resolve key: decode: %w", err)
	}
	return k, nil
}
