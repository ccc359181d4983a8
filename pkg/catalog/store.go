package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

// Store reads and writes the catalog in its KV bucket.
type Store struct {
	kv jetstream.KeyValue
}

// Open creates the bucket if needed and returns a Store on it. The bucket
// keeps a short history so an operator can see what a price was.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "Tollgate services, models and prices",
		History: 5, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("open %s bucket: %w", Bucket, err)
	}
	return &Store{kv: kv}, nil
}

// PutService stores a validated service.
func (s *Store) PutService(ctx context.Context, svc *eventsv1.Service) error {
	return s.put(ctx, ServiceKey(svc.GetId()), svc)
}

// PutModel stores a validated model.
func (s *Store) PutModel(ctx context.Context, m *eventsv1.Model) error {
	return s.put(ctx, ModelKey(m.GetName()), m)
}

func (s *Store) put(ctx context.Context, key string, m proto.Message) error {
	data, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal catalog entry: %w", err)
	}
	if _, err := s.kv.Put(ctx, key, data); err != nil {
		return fmt.Errorf("put catalog entry %s: %w", key, err)
	}
	return nil
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

// Delete removes an entry by its KV key.
func (s *Store) Delete(ctx context.Context, key string) error {
	if _, err := s.kv.Get(ctx, key); errors.Is(err, jetstream.ErrKeyNotFound) {
		return ErrNotFound
	}
	if err := s.kv.Delete(ctx, key); err != nil {
		return fmt.Errorf("delete catalog entry %s: %w", key, err)
	}
	return nil
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
