package catalog

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

// Record is one change of the catalog, read back from the audit stream.
type Record struct {
	Sequence uint64 // in the audit stream
	EventID  string
	At       time.Time
	Actor    string // empty for writes made before writes carried their actor
	Account  string
	Previous string // a model moved from another account's service: that account
	Kind     string // "service" or "model"
	ID       string // the service's id or the model's name
	Deleted  bool
	Service  *eventsv1.Service // after a put of a service
	Model    *eventsv1.Model   // after a put of a model
}

// maxScan bounds the messages one Changes call reads, whatever match keeps:
// a caller who may read one account of many gets short pages, not a long
// wait.
const maxScan = 2_000

// Changes reads the audit stream from sequence from on (0 or anything older
// than the oldest kept: from the oldest), keeping at most limit records that
// match accepts. next is the sequence to go on from, now or later.
func (s *Store) Changes(ctx context.Context, from uint64, limit int, match func(*Record) bool) (recs []*Record, next uint64, err error) {
	st, err := s.js.Stream(ctx, AuditStream)
	if err != nil {
		return nil, from, fmt.Errorf("open %s stream: %w", AuditStream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, from, fmt.Errorf("read %s stream: %w", AuditStream, err)
	}
	seq := max(from, info.State.FirstSeq, 1)
	for scanned := 0; seq <= info.State.LastSeq && len(recs) < limit && scanned < maxScan; seq, scanned = seq+1, scanned+1 {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return recs, seq, fmt.Errorf("read %s message %d: %w", AuditStream, seq, err)
		}
		if r, ok := decodeRecord(m); ok && match(r) {
			recs = append(recs, r)
		}
	}
	return recs, seq, nil
}

// decodeRecord reads a message of the bucket's stream; ok is false for one
// that is not a service or a model.
func decodeRecord(m *jetstream.RawStreamMsg) (*Record, bool) {
	key := strings.TrimPrefix(m.Subject, "$KV."+Bucket+".")
	r := &Record{Sequence: m.Sequence, EventID: m.Header.Get(headerEventID), Actor: m.Header.Get(headerActor),
		Account: m.Header.Get(headerAccount), Previous: m.Header.Get(headerPrevious), Deleted: m.Header.Get(headerKVOp) != "", At: m.Time}
	if at, err := time.Parse(time.RFC3339Nano, m.Header.Get(headerOccurredAt)); err == nil {
		r.At = at
	}
	switch {
	case strings.HasPrefix(key, "services."):
		r.Kind, r.ID = "service", strings.Replace(strings.TrimPrefix(key, "services."), ".", "/", 1)
		if !r.Deleted {
			r.Service = new(eventsv1.Service)
			if proto.Unmarshal(m.Data, r.Service) != nil {
				return nil, false
			}
		}
		if r.Account == "" { // written before writes named their account
			r.Account, _, _ = SplitServiceID(r.ID)
		}
	case strings.HasPrefix(key, "models."):
		name, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(key, "models."))
		if err != nil {
			return nil, false
		}
		r.Kind, r.ID = "model", string(name)
		if !r.Deleted {
			r.Model = new(eventsv1.Model)
			if proto.Unmarshal(m.Data, r.Model) != nil {
				return nil, false
			}
		}
		if r.Account == "" && r.Model != nil {
			r.Account, _, _ = SplitServiceID(r.Model.GetService())
		}
	default:
		return nil, false
	}
	return r, true
}
