package keys

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

// SchemaVersion is the version of eventsv1.KeyEvent this code writes.
const SchemaVersion = 1

// The commands below are pure: they take the current state and the clock and
// return the event to append (the resulting state included). Appending it, with
// optimistic concurrency, is the caller's job.

// Create completes a new key from the settings in k (id, status, secret and
// timestamps are set here), validates it and returns the CREATED event and the
// secret, which exists nowhere else afterwards.
func Create(now time.Time, actor string, h *Hasher, k *eventsv1.Key, prefix string) (*eventsv1.KeyEvent, string, error) {
	k = proto.CloneOf(k)
	id, err := NewID(now)
	if err != nil {
		return nil, "", err
	}
	var v ValidationError
	if err := ValidPrefix(prefix); err != nil {
		v.Add("prefix", "%s", err)
	}
	if exp := k.GetExpiresAt(); exp != nil && !exp.AsTime().After(now) {
		v.Add("expires_at", "is not in the future")
	}
	v.Merge(Validate(k))
	if err := v.Err(); err != nil {
		return nil, "", err
	}
	secret, err := GenerateSecret(prefix)
	if err != nil {
		return nil, "", err
	}
	k.Id = id
	k.Prefix = prefix
	k.Status = eventsv1.KeyStatus_KEY_STATUS_ACTIVE
	k.Secret = &eventsv1.Secret{Hash: h.Hash(secret), Hint: Hint(prefix, secret), PepperId: h.PepperID()}
	k.PreviousSecrets = nil
	k.CreatedAt = timestamppb.New(now)
	k.UpdatedAt = k.CreatedAt
	k.CreatedBy = actor
	ev, err := newEvent(now, eventsv1.KeyEventType_KEY_EVENT_TYPE_CREATED, actor, k, nil)
	return ev, secret, err
}

// Update returns the UPDATED event that takes cur to next. changed names the
// settings the caller changed; fields that are not settings (id, secret,
// status, timestamps) are kept from cur whatever next says.
func Update(now time.Time, actor string, cur, next *eventsv1.Key, changed []string) (*eventsv1.KeyEvent, error) {
	if cur.GetStatus() == eventsv1.KeyStatus_KEY_STATUS_REVOKED {
		return nil, &StateError{KeyID: cur.GetId(), Reason: "is revoked; a revoked key cannot be changed"}
	}
	k := proto.CloneOf(next)
	k.Id, k.Account, k.Prefix = cur.GetId(), cur.GetAccount(), cur.GetPrefix()
	k.Status, k.Secret, k.PreviousSecrets = cur.GetStatus(), cur.GetSecret(), cur.GetPreviousSecrets()
	k.CreatedAt, k.CreatedBy, k.RevokedAt = cur.GetCreatedAt(), cur.GetCreatedBy(), cur.GetRevokedAt()
	k.UpdatedAt = timestamppb.New(now)
	var v ValidationError
	if exp := k.GetExpiresAt(); exp != nil && !proto.Equal(exp, cur.GetExpiresAt()) && !exp.AsTime().After(now) {
		v.Add("expires_at", "is not in the future")
	}
	v.Merge(Validate(k))
	if err := v.Err(); err != nil {
		return nil, err
	}
	return newEvent(now, eventsv1.KeyEventType_KEY_EVENT_TYPE_UPDATED, actor, k, changed)
}

// Revoke returns the REVOKED event, or nil when cur is already revoked:
// revoking twice is not an error and appends nothing.
func Revoke(now time.Time, actor string, cur *eventsv1.Key) (*eventsv1.KeyEvent, error) {
	if cur.GetStatus() == eventsv1.KeyStatus_KEY_STATUS_REVOKED {
		return nil, nil
	}
	k := proto.CloneOf(cur)
	k.Status = eventsv1.KeyStatus_KEY_STATUS_REVOKED
	k.RevokedAt = timestamppb.New(now)
	k.UpdatedAt = k.RevokedAt
	k.PreviousSecrets = nil
	return newEvent(now, eventsv1.KeyEventType_KEY_EVENT_TYPE_REVOKED, actor, k, []string{"status"})
}

// MaxGracePeriod bounds how long a rotated-out secret keeps working.
const MaxGracePeriod = 30 * 24 * time.Hour

// Rotate returns the ROTATED event and the new secret. With a grace period the
// old secret keeps working until now+grace; without one it stops at once.
// Secrets whose grace has already ended are dropped.
func Rotate(now time.Time, actor string, h *Hasher, cur *eventsv1.Key, grace time.Duration) (*eventsv1.KeyEvent, string, error) {
	if cur.GetStatus() == eventsv1.KeyStatus_KEY_STATUS_REVOKED {
		return nil, "", &StateError{KeyID: cur.GetId(), Reason: "is revoked; a revoked key cannot be rotated"}
	}
	if grace < 0 || grace > MaxGracePeriod {
		var v ValidationError
		v.Add("grace_period", "must be between 0 and %s", MaxGracePeriod)
		return nil, "", &v
	}
	secret, err := GenerateSecret(cur.GetPrefix())
	if err != nil {
		return nil, "", err
	}
	k := proto.CloneOf(cur)
	var keep []*eventsv1.Secret
	for _, s := range k.GetPreviousSecrets() {
		if s.GetExpiresAt().AsTime().After(now) {
			keep = append(keep, s)
		}
	}
	if grace > 0 {
		old := proto.CloneOf(k.GetSecret())
		old.ExpiresAt = timestamppb.New(now.Add(grace))
		keep = append(keep, old)
	}
	k.PreviousSecrets = keep
	k.Secret = &eventsv1.Secret{Hash: h.Hash(secret), Hint: Hint(k.GetPrefix(), secret), PepperId: h.PepperID()}
	k.UpdatedAt = timestamppb.New(now)
	ev, err := newEvent(now, eventsv1.KeyEventType_KEY_EVENT_TYPE_ROTATED, actor, k, []string{"secret"})
	return ev, secret, err
}

// NewEventID returns a fresh event id: 128 random bits in hex.
func NewEventID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read random: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

func newEvent(now time.Time, typ eventsv1.KeyEventType, actor string, k *eventsv1.Key, changed []string) (*eventsv1.KeyEvent, error) {
	id, err := NewEventID()
	if err != nil {
		return nil, err
	}
	return &eventsv1.KeyEvent{
		EventId:       id,
		OccurredAt:    timestamppb.New(now),
		SchemaVersion: SchemaVersion,
		Type:          typ,
		Actor:         actor,
		Key:           k,
		ChangedFields: changed,
	}, nil
}
