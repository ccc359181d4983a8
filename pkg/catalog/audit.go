package catalog

import (
	"context"
	"encoding/base64"
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
// wait. They are read in batches of scanBatch through one ordered consumer.
const maxScan = 20_000

var scanBatch = 500 // a var for tests

// Changes reads the audit stream from sequence from on (0 or anything older
// than the oldest kept: from the oldest), keeping at most limit records that
// match accepts. next is the sequence to go on from, now or later.
func (s *Store) Changes(ctx context.Context, from uint64, limit int, match func(*Record) bool) (recs []*Record, next uint64, err error) {
	st, err := s.js.Stream(ctx, AuditStream)
	if err != nil {
		return nil, from, fmt.Errorf("open %s stream: %w", AuditStream, err)
	}
	last := st.CachedInfo().State.LastSeq
	next = max(from, st.CachedInfo().State.FirstSeq, 1)
	if next > last {
		return nil, next, nil
	}
	// An ephemeral consumer: the server drops it soon after the last fetch.
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: next, InactiveThreshold: 10 * time.Second})
	if err != nil {
		return nil, from, fmt.Errorf("read %s stream: %w", AuditStream, err)
	}
	for scanned := 0; next <= last && len(recs) < limit && scanned < maxScan; {
		batch, err := c.Fetch(min(scanBatch, int(last-next+1)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return recs, next, fmt.Errorf("read %s stream: %w", AuditStream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			if len(recs) < limit { // the rest of a fetched batch is read again next time
				raw := &jetstream.RawStreamMsg{Subject: m.Subject(), Sequence: meta.Sequence.Stream, Header: m.Headers(), Data: m.Data(), Time: meta.Timestamp}
				if r, ok := decodeRecord(raw); ok && match(r) {
					recs = append(recs, r)
				}
				next = meta.Sequence.Stream + 1
			}
		}
		if err := batch.Error(); err != nil {
			return recs, next, fmt.Errorf("read %s stream: %w", AuditStream, err)
		}
		if n == 0 {
			break // nothing more within the wait
		}
		scanned += n
	}
	return recs, next, nil
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
