// Package keyhistory follows the whole KEYS stream and keeps every version of
// every key's limits, so that metering folds each usage event with the
// configuration that was in force when it happened (live and in a rebuild
// alike).
package keyhistory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/services/metering/internal/fold"
)

// Keys is the history of every key.
type Keys struct {
	mu      sync.RWMutex
	byID    map[string]fold.History
	account map[string]string
	pos     uint64
	moved   chan struct{}
	log     *slog.Logger
}

// New returns an empty history; Run fills it.
func New(log *slog.Logger) *Keys {
	return &Keys{byID: map[string]fold.History{}, account: map[string]string{}, moved: make(chan struct{}), log: log}
}

// History returns a key's versions and its account.
func (k *Keys) History(keyID string) (fold.History, string) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.byID[keyID], k.account[keyID]
}

// Apply adds a key event at stream sequence seq.
func (k *Keys) Apply(seq uint64, ev *eventsv1.KeyEvent) {
	key := ev.GetKey()
	loc := time.UTC
	if tz := key.GetTimeZone(); tz != "" {
		if l, err := time.LoadLocation(tz); err == nil {
			loc = l
		}
	}
	v := fold.Version{Rev: seq, At: ev.GetOccurredAt().AsTime(), Created: key.GetCreatedAt().AsTime(),
		Limits: key.GetLimits(), Loc: loc, Thresholds: key.GetAlertThresholdsPpm(), Account: key.GetAccount()}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.byID[key.GetId()] = append(k.byID[key.GetId()], v)
	k.account[key.GetId()] = key.GetAccount()
	k.advance(seq)
}

// advance records that every event up to seq was handled; k.mu is held.
func (k *Keys) advance(seq uint64) {
	if seq > k.pos {
		k.pos = seq
		close(k.moved)
		k.moved = make(chan struct{})
	}
}

// WaitFor blocks until every key event up to seq is applied.
func (k *Keys) WaitFor(ctx context.Context, seq uint64) error {
	for {
		k.mu.RLock()
		pos, ch := k.pos, k.moved
		k.mu.RUnlock()
		if pos >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("key history at %d, waiting for %d: %w", pos, seq, ctx.Err())
		}
	}
}

// Run follows KEYS from the start until ctx ends.
func (k *Keys) Run(ctx context.Context, js jetstream.JetStream) error {
	cons, err := js.OrderedConsumer(ctx, bus.KeysStream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return fmt.Errorf("key history: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("key history: %w", err)
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
			continue
		}
		md, err := msg.Metadata()
		if err != nil {
			continue
		}
		ev := new(eventsv1.KeyEvent)
		if err := proto.Unmarshal(msg.Data(), ev); err != nil {
			k.log.Error("key history: undecodable key event skipped", "seq", md.Sequence.Stream, "err", err)
			k.mu.Lock()
			k.advance(md.Sequence.Stream)
			k.mu.Unlock()
			continue
		}
		k.Apply(md.Sequence.Stream, ev)
	}
}

// CatchUp waits until the history holds every key event the stream has now,
// so that no usage event is folded with a configuration older than one
// already appended.
func (k *Keys) CatchUp(ctx context.Context, stream jetstream.Stream) error {
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("key history: %w", err)
	}
	return k.WaitFor(ctx, info.State.LastSeq)
}
