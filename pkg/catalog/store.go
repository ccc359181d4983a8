package catalog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

// Store reads and writes the catalog in its KV bucket.
type Store struct {
	js jetstream.JetStream
	kv jetstream.KeyValue
	// stream is the bucket's own stream: writes with headers, and the last
	// message of an entry with its revision.
	stream jetstream.Stream
	// audit is the audit stream once OpenAudit opened it: each write then
	// waits until the stream has copied it.
	audit jetstream.Stream
}

// Open creates the bucket if needed and returns a Store on it. The bucket
// keeps the last 64 revisions of each entry (the most NATS keeps), so that
// the CATALOG_AUDIT stream (OpenAudit), which keeps every change, has time to
// copy each before it goes.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "Tollgate services, models and prices",
		History: 64, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("open %s bucket: %w", Bucket, err)
	}
	st, err := js.Stream(ctx, "KV_"+Bucket)
	if err != nil {
		return nil, fmt.Errorf("open %s bucket's stream: %w", Bucket, err)
	}
	return &Store{js: js, kv: kv, stream: st}, nil
}

// AuditStream keeps every change of the catalog, oldest first: a mirror of
// the bucket's own stream, without its per-entry history limit. A write and
// its record are one message (the mirror copies it), so no change can be
// made without being recorded.
const AuditStream = "CATALOG_AUDIT"

// OpenAudit creates the audit stream if needed (the admin API does, since it
// reads it). From then on each write of this Store returns once the stream
// has it: the mirror copies asynchronously, and the bucket drops an entry's
// revisions beyond 64, so a burst of writes to one entry could otherwise
// outrun it.
func (s *Store) OpenAudit(ctx context.Context, replicas int) error {
	st, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: AuditStream, Description: "every change of the CATALOG bucket, with its actor (headers Tollgate-*)",
		Mirror: &jetstream.StreamSource{Name: "KV_" + Bucket}, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return fmt.Errorf("open %s stream: %w", AuditStream, err)
	}
	s.audit = st
	return nil
}

// awaitAudit waits until the audit stream holds the bucket's message seq (a
// mirror keeps its origin's sequence numbers), for at most 5 s: the write is
// made either way, and a slow mirror still copies it unless 64 more writes
// of the same entry come first.
func (s *Store) awaitAudit(ctx context.Context, seq uint64) {
	if s.audit == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		info, err := s.audit.Info(ctx)
		if err == nil && info.State.LastSeq >= seq {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Change says who makes a write and when. It travels with the write, as
// headers of the bucket's message, so the audit stream has it.
type Change struct {
	Actor string
	At    time.Time
}

// Headers of a catalog write (DESIGN.md section 2: every event has an id,
// the time it happened and its schema version; section 8: every mutation is
// audited).
const (
	headerEventID    = "Tollgate-Event-Id"
	headerOccurredAt = "Tollgate-Occurred-At"
	headerSchema     = "Tollgate-Schema-Version"
	headerActor      = "Tollgate-Actor"
	headerAccount    = "Tollgate-Account"
	headerKVOp       = "KV-Operation" // the KV protocol's: DEL or PURGE for deletions
	schemaVersion    = "1"
)

// Unconditional is the revision a write expects when it does not depend on
// what the entry is now.
const Unconditional = ^uint64(0)

// ErrChanged refuses a write whose entry changed since its revision was read:
// the caller decided on a state that is gone, and should read again.
var ErrChanged = errors.New("the catalog entry changed while this request ran; read it again and retry")

// PutService stores a validated service.
func (s *Store) PutService(ctx context.Context, svc *eventsv1.Service, ch Change) error {
	svc.UpdatedAt, svc.UpdatedBy = timestamppb.New(ch.At), ch.Actor
	data, err := proto.Marshal(svc)
	if err != nil {
		return fmt.Errorf("marshal service: %w", err)
	}
	acct, _, _ := SplitServiceID(svc.GetId())
	return s.write(ctx, ServiceKey(svc.GetId()), acct, data, ch, Unconditional)
}

// PutModel stores a validated model if its entry's revision is still expect
// (Revision; Unconditional for any).
func (s *Store) PutModel(ctx context.Context, m *eventsv1.Model, ch Change, expect uint64) error {
	m.UpdatedAt, m.UpdatedBy = timestamppb.New(ch.At), ch.Actor
	data, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal model: %w", err)
	}
	acct, _, _ := SplitServiceID(m.GetService())
	return s.write(ctx, ModelKey(m.GetName()), acct, data, ch, expect)
}

// ErrNotFound is returned for a catalog entry that does not exist.
var ErrNotFound = errors.New("catalog entry not found")

// InUseError refuses to delete an entry others still refer to (a service
// that models are served by).
type InUseError struct {
	What string
	By   []string
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("%s is still used by %s; delete or move those first", e.What, strings.Join(e.By, ", "))
}

// Revision is the revision of the entry under key: that of its last write,
// a deletion included, and 0 if it was never written. exists is false for
// an entry never written or deleted.
func (s *Store) Revision(ctx context.Context, key string) (rev uint64, exists bool, err error) {
	m, err := s.last(ctx, key)
	if m == nil || err != nil {
		return 0, false, err
	}
	return m.Sequence, m.Header.Get(headerKVOp) == "", nil
}

// last is the last message under key, nil if there is none.
func (s *Store) last(ctx context.Context, key string) (*jetstream.RawStreamMsg, error) {
	m, err := s.stream.GetLastMsgForSubject(ctx, kvSubject(key))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return m, nil
}

// Delete removes the entry under key if its revision is still expect
// (Unconditional for any). It is ErrNotFound if there is no such entry.
func (s *Store) Delete(ctx context.Context, key string, ch Change, expect uint64) error {
	m, err := s.last(ctx, key)
	if err != nil {
		return err
	}
	if m == nil || m.Header.Get(headerKVOp) != "" {
		return ErrNotFound
	}
	r, ok := decodeRecord(m)
	if !ok {
		return fmt.Errorf("delete %s: undecodable entry", key)
	}
	return s.write(ctx, key, r.Account, nil, ch, expect)
}

// By is a write made now by actor (tools and tests; the admin API records
// the caller).
func By(actor string) Change { return Change{Actor: actor, At: time.Now()} }

// write publishes one change to the bucket: a value, or a deletion when data
// is nil. The bucket's own Put and Delete cannot carry headers.
func (s *Store) write(ctx context.Context, key, account string, data []byte, ch Change, expect uint64) error {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return fmt.Errorf("read random: %w", err)
	}
	msg := nats.NewMsg(kvSubject(key))
	msg.Data = data
	eventID := hex.EncodeToString(id[:])
	msg.Header.Set(headerEventID, eventID)
	msg.Header.Set(headerOccurredAt, ch.At.UTC().Format(time.RFC3339Nano))
	msg.Header.Set(headerSchema, schemaVersion)
	msg.Header.Set(headerActor, ch.Actor)
	msg.Header.Set(headerAccount, account)
	if data == nil {
		msg.Header.Set(headerKVOp, "DEL")
	}
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(eventID)}
	if expect != Unconditional {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(expect))
	}
	ack, err := s.js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		if isWrongLastSequence(err) {
			return ErrChanged
		}
		return fmt.Errorf("write catalog entry %s: %w", key, err)
	}
	s.awaitAudit(ctx, ack.Sequence)
	return nil
}

func kvSubject(key string) string { return "$KV." + Bucket + "." + key }

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Snapshot is an immutable view of the whole catalog.
type Snapshot struct {
	Services map[string]*eventsv1.Service // by id
	Models   map[string]*eventsv1.Model   // by name
}

// Model returns a model and the service that serves it.
func (s *Snapshot) Model(name string) (*eventsv1.Model, *eventsv1.Service, bool) {
	m, ok := s.Models[name]
	if !ok {
		return nil, nil, false
	}
	svc, ok := s.Services[m.GetService()]
	return m, svc, ok
}

func emptySnapshot() *Snapshot {
	return &Snapshot{Services: map[string]*eventsv1.Service{}, Models: map[string]*eventsv1.Model{}}
}

// View is a live copy of the catalog in memory: readers get a consistent
// snapshot without locks; a watcher replaces it on every change.
type View struct {
	cur   atomic.Pointer[Snapshot]
	ready chan struct{}
}

// NewView returns an empty view; Watch fills it.
func NewView() *View {
	v := &View{ready: make(chan struct{})}
	v.cur.Store(emptySnapshot())
	return v
}

// Snapshot is the current catalog.
func (v *View) Snapshot() *Snapshot { return v.cur.Load() }

// Ready is closed once the initial values have been loaded.
func (v *View) Ready() <-chan struct{} { return v.ready }

// Watch keeps the view current until ctx ends. Changes apply without restarts.
// It may be called again after it returns (a lost watch is restarted): the
// view is then rebuilt from the bucket's current values, deletions included.
func (v *View) Watch(ctx context.Context, s *Store, log *slog.Logger) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", Bucket, err)
	}
	defer w.Stop()
	initial := true
	pending := emptySnapshot()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watch %s: closed", Bucket)
			}
			if e == nil { // the initial values are all in
				v.cur.Store(pending)
				if initial {
					v.markReady()
					initial = false
				}
				continue
			}
			next := pending
			if !initial {
				next = clone(v.cur.Load())
			}
			apply(next, e, log)
			if initial {
				pending = next
			} else {
				v.cur.Store(next)
			}
		}
	}
}

// markReady closes ready once: Watch runs again after a watch ends (the
// edge restarts it), and its second load must not close ready twice.
func (v *View) markReady() {
	select {
	case <-v.ready:
	default:
		close(v.ready)
	}
}

func clone(s *Snapshot) *Snapshot {
	n := &Snapshot{Services: make(map[string]*eventsv1.Service, len(s.Services)), Models: make(map[string]*eventsv1.Model, len(s.Models))}
	for k, x := range s.Services {
		n.Services[k] = x
	}
	for k, x := range s.Models {
		n.Models[k] = x
	}
	return n
}

func apply(s *Snapshot, e jetstream.KeyValueEntry, log *slog.Logger) {
	deleted := e.Operation() != jetstream.KeyValuePut
	switch {
	case strings.HasPrefix(e.Key(), "services."):
		id := strings.Replace(strings.TrimPrefix(e.Key(), "services."), ".", "/", 1)
		if deleted {
			delete(s.Services, id)
			return
		}
		svc := new(eventsv1.Service)
		if err := proto.Unmarshal(e.Value(), svc); err != nil {
			log.Error("catalog: undecodable service skipped", "key", e.Key(), "err", err)
			return
		}
		s.Services[svc.GetId()] = svc
	case strings.HasPrefix(e.Key(), "models."):
		if deleted {
			for name := range s.Models {
				if ModelKey(name) == e.Key() {
					delete(s.Models, name)
				}
			}
			return
		}
		m := new(eventsv1.Model)
		if err := proto.Unmarshal(e.Value(), m); err != nil {
			log.Error("catalog: undecodable model skipped", "key", e.Key(), "err", err)
			return
		}
		s.Models[m.GetName()] = m
	}
}

// Load reads the whole catalog once (for the admin API's lists).
func (s *Store) Load(ctx context.Context) (*Snapshot, error) {
	snap := emptySnapshot()
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", Bucket, err)
	}
	for key := range lister.Keys() {
		e, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", key, err)
		}
		apply(snap, e, slog.New(slog.DiscardHandler))
	}
	return snap, nil
}

// SortedModelNames lists the model names in order (for stable listings).
func (s *Snapshot) SortedModelNames() []string {
	names := make([]string, 0, len(s.Models))
	for n := range s.Models {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
