package readmodel

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/keys"
)

// queueUpsert queues the statements that make the read model hold r, unless
// it already holds a newer revision of the key.
func queueUpsert(b *pgx.Batch, r row) error {
	k := r.key
	state, err := proto.Marshal(k)
	if err != nil {
		return fmt.Errorf("marshal key %s: %w", k.GetId(), err)
	}
	status := string(keys.StatusActive)
	if k.GetStatus() == eventsv1.KeyStatus_KEY_STATUS_REVOKED {
		status = string(keys.StatusRevoked)
	}
	var expires *time.Time
	if k.GetExpiresAt() != nil {
		t := k.GetExpiresAt().AsTime()
		expires = &t
	}
	b.Queue(`INSERT INTO keys (account, id, name, status, permissions, expires_at, created_at, updated_at, revision, state)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		ON CONFLICT (account, id) DO UPDATE SET
			name = EXCLUDED.name, status = EXCLUDED.status, permissions = EXCLUDED.permissions,
			expires_at = EXCLUDED.expires_at, updated_at = EXCLUDED.updated_at,
			revision = EXCLUDED.revision, state = EXCLUDED.state
		WHERE keys.revision < EXCLUDED.revision`,
		k.GetAccount(), k.GetId(), k.GetName(), status, effectivePermissions(k), expires,
		k.GetCreatedAt().AsTime(), k.GetUpdatedAt().AsTime(), int64(r.seq), state)

	// Replace the key's secret hashes, but only if this revision won above.
	const current = `EXISTS (SELECT 1 FROM keys WHERE account = $1 AND id = $2 AND revision = $3)`
	b.Queue(`DELETE FROM key_secrets WHERE account = $1 AND id = $2 AND `+current, k.GetAccount(), k.GetId(), int64(r.seq))
	if status == string(keys.StatusRevoked) {
		return nil
	}
	secrets := append([]*eventsv1.Secret{k.GetSecret()}, k.GetPreviousSecrets()...)
	for _, s := range secrets {
		var exp *time.Time
		if s.GetExpiresAt() != nil {
			t := s.GetExpiresAt().AsTime()
			exp = &t
		}
		b.Queue(`INSERT INTO key_secrets (hash, account, id, expires_at) SELECT $4, $1, $2, $5 WHERE `+current+`
			ON CONFLICT (hash) DO UPDATE SET account = EXCLUDED.account, id = EXCLUDED.id, expires_at = EXCLUDED.expires_at`,
			k.GetAccount(), k.GetId(), int64(r.seq), s.GetHash(), exp)
	}
	return nil
}

func effectivePermissions(k *eventsv1.Key) []string {
	var out []string
	for _, p := range []eventsv1.Permission{eventsv1.Permission_PERMISSION_READ, eventsv1.Permission_PERMISSION_WRITE, eventsv1.Permission_PERMISSION_PREDICT} {
		if keys.HasPermission(k, p) {
			out = append(out, p.String())
		}
	}
	if out == nil {
		out = []string{}
	}
	return out
}
