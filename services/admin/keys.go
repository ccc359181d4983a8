package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/auth"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/services/admin/internal/readmodel"
)

// keyService does the work behind KeyService and the REST routes: it checks
// what the caller may do, turns commands into events, appends them with
// optimistic concurrency and reads keys back. Transports only authenticate
// and map errors.
type keyService struct {
	keyLog        *bus.KeyLog
	store         *readmodel.Store
	projector     *readmodel.Projector
	hasher        *keys.Hasher
	now           func() time.Time
	defaultPrefix string
	logger        *slog.Logger
	pool          *pgxpool.Pool // metering's balances live in the same database
}

// readYourWritesWait bounds how long a mutation waits for the read model to
// include it, so that a List right after a Create shows the new key.
const readYourWritesWait = 2 * time.Second

// account picks the account a request is about and checks the caller may
// touch it. A caller that may not read an account is told the same as for a
// missing key, so account names do not leak.
func account(p auth.Principal, requested string, write bool) (string, error) {
	acct := requested
	if acct == "" {
		acct = p.Account
	}
	if err := keys.ValidateAccount(acct); err != nil {
		var v keys.ValidationError
		v.Add("account", "%s", err)
		return "", &v
	}
	if !p.MayRead(acct) {
		return "", fmt.Errorf("%w: account %q is not yours", auth.ErrForbidden, acct)
	}
	if write && !p.MayWrite(acct) {
		return "", fmt.Errorf("%w: this credential may read account %q but not change it (it needs WRITE)", auth.ErrForbidden, acct)
	}
	return acct, nil
}

func (s *keyService) create(ctx context.Context, p auth.Principal, req *adminv1.CreateKeyRequest) (*adminv1.CreateKeyResponse, error) {
	acct, err := account(p, req.GetAccount(), true)
	if err != nil {
		return nil, err
	}
	now := s.now()
	k := &eventsv1.Key{Account: acct}
	var v keys.ValidationError
	settings := req.GetKey()
	if settings == nil {
		settings = &adminv1.KeySettings{}
	}
	applySettings(k, settings, settingsPaths, now, &v)
	if len(k.Permissions) == 0 {
		k.Permissions = []eventsv1.Permission{eventsv1.Permission_PERMISSION_PREDICT}
	}
	prefix := req.GetPrefix()
	if prefix == "" {
		prefix = s.defaultPrefix
	}
	if err := v.Err(); err != nil {
		v.Merge(keys.Validate(k)) // report every field at once
		return nil, &v
	}
	ev, secret, err := keys.Create(now, p.Actor(), s.hasher, k, prefix)
	if err != nil {
		return nil, err
	}
	rev, err := s.append(ctx, ev, 0)
	if err != nil {
		return nil, err
	}
	return &adminv1.CreateKeyResponse{Key: apiKey(ev.GetKey(), rev, now), Secret: secret}, nil
}

func (s *keyService) get(ctx context.Context, p auth.Principal, req *adminv1.GetKeyRequest) (*adminv1.GetKeyResponse, error) {
	acct, err := account(p, req.GetAccount(), false)
	if err != nil {
		return nil, err
	}
	k, rev, err := s.load(ctx, acct, req.GetId())
	if err != nil {
		return nil, err
	}
	return &adminv1.GetKeyResponse{Key: apiKey(k, rev, s.now())}, nil
}

// load reads a key's current state from the stream: always up to date, unlike
// the read model.
func (s *keyService) load(ctx context.Context, acct, id string) (*eventsv1.Key, uint64, error) {
	if !keys.ValidID(id) {
		return nil, 0, keys.ErrNotFound
	}
	ev, rev, err := s.keyLog.Last(ctx, acct, id)
	if err != nil {
		return nil, 0, err
	}
	return ev.GetKey(), rev, nil
}

func (s *keyService) list(ctx context.Context, p auth.Principal, req *adminv1.ListKeysRequest) (*adminv1.ListKeysResponse, error) {
	acct, err := account(p, req.GetAccount(), false)
	if err != nil {
		return nil, err
	}
	var v keys.ValidationError
	f := readmodel.Filter{Account: acct, Name: req.GetName(), Permission: req.GetPermission(), PageToken: req.GetPageToken()}
	switch st := keys.Status(strings.ToLower(req.GetStatus())); st {
	case "", keys.StatusActive, keys.StatusRevoked, keys.StatusExpired:
		f.Status = st
	default:
		v.Add("status", "%q is not a status; use active, revoked or expired", req.GetStatus())
	}
	f.PageSize = int(pageSize(req.GetPageSize(), &v))
	if err := v.Err(); err != nil {
		return nil, err
	}
	page, err := s.store.List(ctx, f)
	if errors.Is(err, readmodel.ErrBadPageToken) {
		v.Add("page_token", "%s", err)
		return nil, &v
	}
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := &adminv1.ListKeysResponse{NextPageToken: page.NextPageToken}
	for i, k := range page.Keys {
		out.Keys = append(out.Keys, apiKey(k, page.Revisions[i], now))
	}
	return out, nil
}

func (s *keyService) update(ctx context.Context, p auth.Principal, req *adminv1.UpdateKeyRequest) (*adminv1.UpdateKeyResponse, error) {
	acct, err := account(p, req.GetAccount(), true)
	if err != nil {
		return nil, err
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		var v keys.ValidationError
		v.Add("update_mask", "name the fields to change, e.g. [\"name\", \"limits\"]; one of %s", strings.Join(settingsPaths, ", "))
		return nil, &v
	}
	cur, rev, err := s.loadExpecting(ctx, acct, req.GetId(), req.GetExpectedRevision())
	if err != nil {
		return nil, err
	}
	now := s.now()
	next := proto.CloneOf(cur)
	var v keys.ValidationError
	applySettings(next, req.GetKey(), paths, now, &v)
	if err := v.Err(); err != nil {
		return nil, err
	}
	ev, err := keys.Update(now, p.Actor(), cur, next, paths)
	if err != nil {
		return nil, err
	}
	newRev, err := s.append(ctx, ev, rev)
	if err != nil {
		return nil, err
	}
	return &adminv1.UpdateKeyResponse{Key: apiKey(ev.GetKey(), newRev, now)}, nil
}

func (s *keyService) revoke(ctx context.Context, p auth.Principal, req *adminv1.RevokeKeyRequest) (*adminv1.RevokeKeyResponse, error) {
	acct, err := account(p, req.GetAccount(), true)
	if err != nil {
		return nil, err
	}
	cur, rev, err := s.loadExpecting(ctx, acct, req.GetId(), req.GetExpectedRevision())
	if err != nil {
		return nil, err
	}
	now := s.now()
	ev, err := keys.Revoke(now, p.Actor(), cur)
	if err != nil {
		return nil, err
	}
	if ev == nil { // already revoked
		return &adminv1.RevokeKeyResponse{Key: apiKey(cur, rev, now)}, nil
	}
	newRev, err := s.append(ctx, ev, rev)
	if err != nil {
		return nil, err
	}
	return &adminv1.RevokeKeyResponse{Key: apiKey(ev.GetKey(), newRev, now)}, nil
}

func (s *keyService) rotate(ctx context.Context, p auth.Principal, req *adminv1.RotateKeyRequest) (*adminv1.RotateKeyResponse, error) {
	acct, err := account(p, req.GetAccount(), true)
	if err != nil {
		return nil, err
	}
	var grace time.Duration
	if g := req.GetGracePeriod(); g != "" {
		if grace, err = time.ParseDuration(g); err != nil {
			var v keys.ValidationError
			v.Add("grace_period", "%q is not a duration; write e.g. 10m or 24h", g)
			return nil, &v
		}
	}
	cur, rev, err := s.loadExpecting(ctx, acct, req.GetId(), req.GetExpectedRevision())
	if err != nil {
		return nil, err
	}
	now := s.now()
	ev, secret, err := keys.Rotate(now, p.Actor(), s.hasher, cur, grace)
	if err != nil {
		return nil, err
	}
	newRev, err := s.append(ctx, ev, rev)
	if err != nil {
		return nil, err
	}
	return &adminv1.RotateKeyResponse{Key: apiKey(ev.GetKey(), newRev, now), Secret: secret}, nil
}

// loadExpecting loads a key and, when the caller named a revision, fails
// early if the key has moved on.
func (s *keyService) loadExpecting(ctx context.Context, acct, id string, expected uint64) (*eventsv1.Key, uint64, error) {
	k, rev, err := s.load(ctx, acct, id)
	if err != nil {
		return nil, 0, err
	}
	if expected != 0 {
		if expected != rev {
			return nil, 0, &keys.ConflictError{KeyID: id, Expected: expected}
		}
	}
	return k, rev, nil
}

// append writes ev and waits, briefly, for the read model to include it.
func (s *keyService) append(ctx context.Context, ev *eventsv1.KeyEvent, expected uint64) (uint64, error) {
	rev, err := s.keyLog.Append(ctx, ev, expected)
	if err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, readYourWritesWait)
	defer cancel()
	if err := s.projector.WaitFor(wctx, rev); err != nil {
		// The event is stored; only the list view lags. Say so, do not fail.
		s.logger.Warn("read model lags behind a write", "key_id", ev.GetKey().GetId(), "revision", rev, "err", err)
	}
	return rev, nil
}

// pageSize is a list's page_size: 100 for 0, and between 1 and 1000.
func pageSize(n int32, v *keys.ValidationError) int32 {
	if n == 0 {
		return 100
	}
	if n < 0 || n > 1000 {
		v.Add("page_size", "must be between 1 and 1000 (0 for 100)")
	}
	return n
}
