package keys

import (
	"slices"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

// Status is a key's status as callers see it: "expired" is derived from the
// clock, never stored.
type Status string

const (
	StatusActive  Status = "active"
	StatusRevoked Status = "revoked"
	StatusExpired Status = "expired"
)

// StatusAt derives the status of k at now.
func StatusAt(k *eventsv1.Key, now time.Time) Status {
	if k.GetStatus() == eventsv1.KeyStatus_KEY_STATUS_REVOKED {
		return StatusRevoked
	}
	if exp := k.GetExpiresAt(); exp != nil && !now.Before(exp.AsTime()) {
		return StatusExpired
	}
	return StatusActive
}

// HasPermission reports whether k grants p. WRITE includes READ.
func HasPermission(k *eventsv1.Key, p eventsv1.Permission) bool {
	for _, have := range k.GetPermissions() {
		if have == p || (p == eventsv1.Permission_PERMISSION_READ && have == eventsv1.Permission_PERMISSION_WRITE) {
			return true
		}
	}
	return false
}

// Allows reports whether a filter lets name through. Names compare exactly
// (case-sensitive). A missing filter means ALL.
func Allows(f *eventsv1.Filter, name string) bool {
	switch f.GetMode() {
	case eventsv1.FilterMode_FILTER_MODE_UNSPECIFIED, eventsv1.FilterMode_FILTER_MODE_ALL:
		return true
	case eventsv1.FilterMode_FILTER_MODE_SELECTED:
		return slices.Contains(f.GetNames(), name)
	default:
		return false
	}
}
