// Package keyring is an edge's in-memory copy of every key, fed by the KEYS
// stream (the last event of each key at start, then live), so that checking
// a request needs no network call. A revoked key stops working as soon as its
// event arrives, which is milliseconds after the admin appended it.
package keyring

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/limits"
)

// Verdict is what a lookup found.
type Verdict int

const (
	Found Verdict = iota
	Unknown
	Revoked
	Expired
)

// Entry is one key as the edge needs it. Key is immutable; the per-key state
// that changes with traffic (limits) lives in State, guarded by its mutex.
type Entry struct {
	Key       *eventsv1.Key
	ExpiresAt time.Time // zero: never
	Location  *time.Location
	predict   bool
	read      bool
	State     *KeyState
}

// KeyState is the mutable part of a key at this edge: its limit buckets and
// the reservations of its requests in flight. It survives updates of the key
// (a new Entry shares its predecessor's KeyState, reconfigured).
type KeyState struct {
	Mu     sync.Mutex
	Limits *limits.Set

	pending    []pendingUsage // this edge's usage metering has not folded yet
	folded     progress       // what metering has folded of this edge's events
	balanceRev uint64         // BALANCES revision of the last applied balance
	// limitsRev is the KEYS sequence of the last change to the key's
	// limits this edge applied while running (0: none since it started).
	// A balance folded under an older configuration (its ConfigRev) does
	// not describe these limits (a rolling state read as a calendar one
	// shows the day's amount unspent): its states are not taken.
	limitsRev uint64
	// keyRev is the KEYS sequence of the key event this edge applied last
	// (0: unknown, as in tests). A balance folded under a later one
	// (ahead) waits for it: its states are for limits this edge does not
	// have yet.
	keyRev uint64
	ahead  *earlyBalance
}

// CanPredict and CanRead report the key's permissions (WRITE includes READ).
func (e *Entry) CanPredict() bool { return e.predict }
func (e *Entry) CanRead() bool    { return e.read }

type graceSecret struct {
	entry *Entry
	hash  []byte // the previous secret's stored hash, which keys this entry
	until time.Time
}

// Ring holds the keys.
type Ring struct {
	pepper []byte
	pool   sync.Pool // of *hasher: HMAC-SHA-256 under the pepper, reused per lookup
	log    *slog.Logger

	mu     sync.RWMutex
	byHash map[[32]byte]*Entry
	grace  map[[32]byte]graceSecret
	byID   map[string]*Entry
	// early holds the latest balance of each key not loaded yet (KEYS and
	// BALANCES are read side by side at start); Apply applies it.
	early map[string]earlyBalance

	pos           atomic.Uint64
	ready         chan struct{}
	balancesReady chan struct{}
}

// New returns an empty Ring for secrets hashed under pepper.
func New(pepper []byte, log *slog.Logger) *Ring {
	r := &Ring{pepper: append([]byte(nil), pepper...), log: log, byHash: map[[32]byte]*Entry{},
		grace: map[[32]byte]graceSecret{}, byID: map[string]*Entry{}, early: map[string]earlyBalance{},
		ready: make(chan struct{}), balancesReady: make(chan struct{})}
	r.pool.New = func() any { return &hasher{h: hmac.New(sha256.New, r.pepper)} }
	return r
}

// hasher is a pooled HMAC state with room for its input and output: passed
// to the hash.Hash interface, a []byte(secret) conversion or a local array
// would each be allocated on every lookup.
type hasher struct {
	h   hash.Hash
	in  []byte
	sum [sha256.Size]byte
}

// hash computes the keyed hash of a secret without allocating.
func (r *Ring) hash(secret string) [32]byte {
	st := r.pool.Get().(*hasher)
	st.in = append(st.in[:0], secret...)
	st.h.Write(st.in)
	st.h.Sum(st.sum[:0])
	out := st.sum
	// Nothing of the secret stays in the pool: not its bytes, not the
	// state hashed from them.
	clear(st.in)
	st.h.Reset()
	r.pool.Put(st)
	return out
}

// Lookup finds the key a secret opens, and says why not when it opens none.
// The map lookup is by keyed hash; the stored hash is then compared in
// constant time as well, so that what decides is the key's own record of
// its secret, not only the map's index of it.
func (r *Ring) Lookup(secret string, now time.Time) (*Entry, Verdict) {
	if secret == "" {
		return nil, Unknown
	}
	sum := r.hash(secret)
	var stored []byte
	r.mu.RLock()
	e, ok := r.byHash[sum]
	if ok {
		stored = e.Key.GetSecret().GetHash()
	} else if g, inGrace := r.grace[sum]; inGrace && now.Before(g.until) {
		e, ok, stored = g.entry, true, g.hash
	}
	r.mu.RUnlock()
	if !ok || subtle.ConstantTimeCompare(sum[:], stored) != 1 {
		return nil, Unknown
	}
	if e.Key.GetStatus() == eventsv1.KeyStatus_KEY_STATUS_REVOKED {
		return e, Revoked
	}
	if !e.ExpiresAt.IsZero() && !now.Before(e.ExpiresAt) {
		return e, Expired
	}
	return e, Found
}

// Get returns a key by id.
func (r *Ring) Get(id string) (*Entry, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.byID[id]
	return e, ok
}

// Len is the number of keys held.
func (r *Ring) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byID)
}

// Ready is closed once every key that existed at start is loaded.
func (r *Ring) Ready() <-chan struct{} { return r.ready }

// BalancesReady is closed once the balances that existed at start are
// applied: before that, a key's limits would look full to this edge.
func (r *Ring) BalancesReady() <-chan struct{} { return r.balancesReady }

// Apply puts a key's latest state into the ring.
func (r *Ring) Apply(k *eventsv1.Key) { r.ApplyAt(k, 0) }

// ApplyAt is Apply for the key event at KEYS stream sequence seq.
func (r *Ring) ApplyAt(k *eventsv1.Key, seq uint64) {
	e := &Entry{Key: k, Location: time.UTC,
		predict: keys.HasPermission(k, eventsv1.Permission_PERMISSION_PREDICT),
		read:    keys.HasPermission(k, eventsv1.Permission_PERMISSION_READ)}
	if k.GetExpiresAt() != nil {
		e.ExpiresAt = k.GetExpiresAt().AsTime()
	}
	if tz := k.GetTimeZone(); tz != "" {
		if loc, err := time.LoadLocation(tz); err == nil {
			e.Location = loc
		}
	}
	r.mu.Lock()
	old := r.byID[k.GetId()]
	if old != nil {
		e.State = old.State
		r.forget(old)
	} else {
		e.State = &KeyState{Limits: limits.NewKeySet(k.GetLimits(), e.Location, k.GetCreatedAt().AsTime())}
	}
	st := e.State
	st.Mu.Lock()
	if old != nil {
		st.Limits.Reconfigure(k.GetLimits(), e.Location, k.GetUpdatedAt().AsTime())
		if !limitsEqual(old, e) {
			st.limitsRev = max(st.limitsRev, seq)
		}
	}
	st.keyRev = max(st.keyRev, seq)
	var ahead *earlyBalance // a balance that waited for this key event
	if st.ahead != nil && st.ahead.kb.GetConfigRev() <= st.keyRev {
		ahead, st.ahead = st.ahead, nil
	}
	st.Mu.Unlock()
	early, hasEarly := r.early[k.GetId()]
	delete(r.early, k.GetId())
	r.byID[k.GetId()] = e
	if s := k.GetSecret(); len(s.GetHash()) == 32 {
		r.byHash[[32]byte(s.GetHash())] = e
	}
	for _, s := range k.GetPreviousSecrets() {
		if len(s.GetHash()) == 32 && s.GetExpiresAt() != nil {
			r.grace[[32]byte(s.GetHash())] = graceSecret{entry: e, hash: s.GetHash(), until: s.GetExpiresAt().AsTime()}
		}
	}
	r.mu.Unlock()
	if hasEarly {
		applyBalance(st, early.kb, early.instance, early.rev)
	}
	if ahead != nil {
		applyBalance(st, ahead.kb, ahead.instance, ahead.rev)
	}
}

// forget drops an entry's secrets; r.mu is held.
func (r *Ring) forget(e *Entry) {
	if s := e.Key.GetSecret(); len(s.GetHash()) == 32 {
		if cur := r.byHash[[32]byte(s.GetHash())]; cur == e {
			delete(r.byHash, [32]byte(s.GetHash()))
		}
	}
	for _, s := range e.Key.GetPreviousSecrets() {
		if len(s.GetHash()) == 32 {
			if g := r.grace[[32]byte(s.GetHash())]; g.entry == e {
				delete(r.grace, [32]byte(s.GetHash()))
			}
		}
	}
}

// Run follows the KEYS stream until ctx ends: first the last event of every
// key, then each new event as it is appended.
func (r *Ring) Run(ctx context.Context, js jetstream.JetStream) error {
	stream, err := bus.EnsureKeysStream(ctx, js, bus.StreamOptions{})
	if err != nil {
		return err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	target := info.State.LastSeq
	if target == 0 {
		closeOnce(r.ready)
	}
	cons, err := js.OrderedConsumer(ctx, bus.KeysStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.KeysSubjectPrefix + ">"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("keyring: consume %s: %w", bus.KeysStream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			r.log.Warn("keyring: next", "err", err)
			continue
		}
		var seq uint64
		md, mdErr := msg.Metadata()
		if mdErr == nil {
			seq = md.Sequence.Stream
		}
		ev := new(eventsv1.KeyEvent)
		if err := proto.Unmarshal(msg.Data(), ev); err != nil {
			r.log.Error("keyring: undecodable key event skipped", "subject", msg.Subject(), "err", err)
		} else {
			r.ApplyAt(ev.GetKey(), seq)
		}
		if mdErr == nil {
			r.pos.Store(md.Sequence.Stream)
			if md.Sequence.Stream >= target {
				closeOnce(r.ready)
			}
		}
	}
}

// limitsEqual reports whether two versions of a key have the same limits
// in the same time zone (what metering's balance states depend on).
func limitsEqual(a, b *Entry) bool {
	return a.Location.String() == b.Location.String() &&
		slices.EqualFunc(a.Key.GetLimits(), b.Key.GetLimits(), func(x, y *eventsv1.Limit) bool { return proto.Equal(x, y) })
}

// closeOnce closes ch unless it is closed already (a restarted follower
// reaches its "loaded" point again).
func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// Position is the stream sequence of the last key event applied.
func (r *Ring) Position() uint64 { return r.pos.Load() }
