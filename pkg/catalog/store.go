package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/keys"
)

// Store reads and writes the catalog in its KV bucket.
type Store struct {
	js jetstream.JetStream
	kv jetstream.KeyValue
	// stream is the bucket's own stream: writes with headers, the last
	// message of an entry, and the catalog's version.
	stream jetstream.Stream
	// audit is the audit stream once OpenAudit opened it: each write then
	// waits until the stream has copied it, and logs to log if it does not.
	audit jetstream.Stream
	log   *slog.Logger
}

// bucketConfig is the bucket's configuration. It keeps the last 64 revisions
// of each entry (the most NATS keeps), so that the CATALOG_AUDIT stream
// (OpenAudit), which keeps every change, has time to copy each before it goes.
func bucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "Tollgate services, models and prices",
		History: 64, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	}
}

// Open creates the bucket, or brings an existing one's configuration up to
// date, and returns a Store on it: for the admin API and tools that write.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, bucketConfig(replicas))
	if err != nil {
		return nil, fmt.Errorf("open %s bucket: %w", Bucket, err)
	}
	return newStore(ctx, js, kv)
}

// Bind returns a Store on the bucket for readers (edges): it creates the
// bucket if there is none yet, but never changes an existing one's
// configuration (a reader of an older version could otherwise undo the
// admin API's).
func Bind(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, bucketConfig(replicas))
		if errors.Is(err, jetstream.ErrBucketExists) { // made meanwhile
			kv, err = js.KeyValue(ctx, Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open %s bucket: %w", Bucket, err)
	}
	return newStore(ctx, js, kv)
}

func newStore(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue) (*Store, error) {
	st, err := js.Stream(ctx, "KV_"+Bucket)
	if err != nil {
		return nil, fmt.Errorf("open %s bucket's stream: %w", Bucket, err)
	}
	return &Store{js: js, kv: kv, stream: st}, nil
}

// AuditStream keeps every change of the catalog, oldest first: it sources
// the bucket's own stream, without its per-entry history limit. A write and
// its record are one message (the stream copies it), so no change can be
// made without being recorded. It is not a mirror: a mirror of a bucket
// answers the bucket's direct gets (the server makes it so), and reads of
// the catalog would then come from a copy that may lag.
const AuditStream = "CATALOG_AUDIT"

// OpenAudit creates the audit stream if needed (the admin API does, since it
// reads it). From then on each write of this Store returns once the stream
// has it, or logs an error to log after 5 s: the stream copies
// asynchronously, and the bucket drops an entry's revisions beyond 64, so a
// burst of writes to one entry could otherwise outrun it.
//
// It is an error if the stream's copy of the bucket's last write is not that
// write (the bucket was deleted and made again, and its sequence numbers
// started over: the stream would skip every write up to the last it copied).
func (s *Store) OpenAudit(ctx context.Context, replicas int, log *slog.Logger) error {
	st, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: AuditStream, Description: "every change of the CATALOG bucket, with its actor (headers Tollgate-*)",
		Sources: []*jetstream.StreamSource{{Name: "KV_" + Bucket}}, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return fmt.Errorf("open %s stream: %w", AuditStream, err)
	}
	info, err := s.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("read %s bucket's stream: %w", Bucket, err)
	}
	if last := info.State.LastSeq; last > 0 {
		m, err := s.stream.GetMsg(ctx, last)
		if err != nil {
			return fmt.Errorf("read %s bucket's message %d: %w", Bucket, last, err)
		}
		if !copied(ctx, st, m, 5*time.Second) {
			return fmt.Errorf("%s does not hold the %s bucket's message %d as it is: was the bucket deleted and made again? "+
				"Keep the audit stream under another name (or delete it to start a new record), then start again", AuditStream, Bucket, last)
		}
	}
	s.audit, s.log = st, log
	return nil
}

// copied waits, for at most wait, until the audit stream st holds the
// bucket's message m: its copy of m's subject comes from m's sequence or a
// later one (the stream copies in order), and a copy from m's sequence is m.
func copied(ctx context.Context, st jetstream.Stream, m *jetstream.RawStreamMsg, wait time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for pause := time.Millisecond; ; pause = min(2*pause, 50*time.Millisecond) {
		got, err := st.GetLastMsgForSubject(ctx, m.Subject)
		if err == nil {
			switch seq := sourceSequence(got); {
			case seq > m.Sequence:
				return true
			case seq == m.Sequence:
				return bytes.Equal(got.Data, m.Data) && got.Header.Get(headerEventID) == m.Header.Get(headerEventID)
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(pause):
		}
	}
}

// sourceSequence is the bucket's sequence of a message the audit stream
// copied (its Nats-Stream-Source header: "<stream> <sequence> ..."); 0 if
// it does not say.
func sourceSequence(m *jetstream.RawStreamMsg) uint64 {
	fields := strings.Fields(m.Header.Get("Nats-Stream-Source"))
	if len(fields) < 2 {
		return 0
	}
	seq, _ := strconv.ParseUint(fields[1], 10, 64)
	return seq
}

// awaitAudit waits until the audit stream holds the write m; a write the
// stream does not have within 5 s is logged as an error (it is made either
// way: the bucket has it).
func (s *Store) awaitAudit(ctx context.Context, m *jetstream.RawStreamMsg) {
	if s.audit == nil {
		return
	}
	if !copied(ctx, s.audit, m, 5*time.Second) {
		s.log.Error("catalog: a change is not in the audit stream", "stream", AuditStream, "sequence", m.Sequence,
			"subject", m.Subject, "event_id", m.Header.Get(headerEventID))
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
	headerPrevious   = "Tollgate-Previous-Account" // a model moved from another account's service
	headerKVOp       = "KV-Operation"              // the KV protocol's: DEL or PURGE for deletions
	schemaVersion    = "1"
)

// Unconditional is the version a write expects when it does not depend on
// what the catalog is now.
const Unconditional = ^uint64(0)

// ErrChanged refuses a write when the catalog changed since the version it
// expects was read: the caller decided on a state that is gone, and should
// read again.
var ErrChanged = errors.New("the catalog changed while this request ran; read it again and retry")

// LoadVersion is Load with the catalog's version, read before it: the
// sequence of the bucket's last write. A write that expects the version is
// made only if no other write came since, so a decision made on the
// snapshot holds when the write lands, whichever entries it looked at (the
// model a PutModel takes, the models a DeleteService looks for).
func (s *Store) LoadVersion(ctx context.Context) (*Snapshot, uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("read %s bucket's stream: %w", Bucket, err)
	}
	snap, err := s.Load(ctx)
	return snap, info.State.LastSeq, err
}

// PutService stores a validated service.
func (s *Store) PutService(ctx context.Context, svc *eventsv1.Service, ch Change) error {
	svc.UpdatedAt, svc.UpdatedBy = timestamppb.New(ch.At), ch.Actor
	data, err := proto.Marshal(svc)
	if err != nil {
		return fmt.Errorf("marshal service: %w", err)
	}
	acct, _, _ := SplitServiceID(svc.GetId())
	return s.write(ctx, ServiceKey(svc.GetId()), acct, "", data, ch, Unconditional)
}

// PutModel stores a validated model if the catalog is still at version
// expect (LoadVersion; Unconditional for any). previous is the account whose
// service served the model until now, if another one's (the audit shows the
// move to both).
func (s *Store) PutModel(ctx context.Context, m *eventsv1.Model, previous string, ch Change, expect uint64) error {
	m.UpdatedAt, m.UpdatedBy = timestamppb.New(ch.At), ch.Actor
	data, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal model: %w", err)
	}
	acct, _, _ := SplitServiceID(m.GetService())
	if previous == acct {
		previous = ""
	}
	return s.write(ctx, ModelKey(m.GetName()), acct, previous, data, ch, expect)
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

// Delete removes the entry under key if the catalog is still at version
// expect (Unconditional for any). It is ErrNotFound if there is no such entry.
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
	return s.write(ctx, key, r.Account, "", nil, ch, expect)
}

// By is a write made now by actor (tools and tests; the admin API records
// the caller).
func By(actor string) Change { return Change{Actor: actor, At: time.Now()} }

// write publishes one change to the bucket, of account's catalog (and of
// previous's, a model moved from it): a value, or a deletion when data is
// nil. The bucket's own Put and Delete cannot carry headers.
func (s *Store) write(ctx context.Context, key, account, previous string, data []byte, ch Change, expect uint64) error {
	eventID, err := keys.NewEventID()
	if err != nil {
		return err
	}
	msg := nats.NewMsg(kvSubject(key))
	msg.Data = data
	msg.Header.Set(headerEventID, eventID)
	msg.Header.Set(headerOccurredAt, ch.At.UTC().Format(time.RFC3339Nano))
	msg.Header.Set(headerSchema, schemaVersion)
	msg.Header.Set(headerActor, ch.Actor)
	msg.Header.Set(headerAccount, account)
	if previous != "" {
		msg.Header.Set(headerPrevious, previous)
	}
	if data == nil {
		msg.Header.Set(headerKVOp, "DEL")
	}
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(eventID)}
	if expect != Unconditional {
		opts = append(opts, jetstream.WithExpectLastSequence(expect))
	}
	ack, err := s.js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		if isWrongLastSequence(err) {
			return ErrChanged
		}
		return fmt.Errorf("write catalog entry %s: %w", key, err)
	}
	s.awaitAudit(ctx, &jetstream.RawStreamMsg{Subject: msg.Subject, Sequence: ack.Sequence, Header: msg.Header, Data: data})
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
