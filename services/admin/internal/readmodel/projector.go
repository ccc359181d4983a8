// Package readmodel keeps the admin service's PostgreSQL view of keys,
// projected from the KEYS stream, and answers the queries the stream cannot
// (lists with filters, lookups by secret hash).
package readmodel

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/pgdb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate brings the read model's schema up to date.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pgdb.Migrate(ctx, pool, "admin-readmodel", migrations, "migrations")
}

const projectorName = "admin-keys"

// maxBatch bounds the events folded in one transaction.
const maxBatch = 500

// Projector folds the KEYS stream into the read model. It stores its stream
// position in the same transaction as the rows, so a restart resumes exactly
// where it stopped, and the revision guard makes replays harmless.
type Projector struct {
	pool *pgxpool.Pool
	js   jetstream.JetStream
	log  *slog.Logger

	mu      sync.Mutex
	pos     uint64
	changed chan struct{} // closed and replaced whenever pos moves
}

// NewProjector returns a Projector; Run starts it.
func NewProjector(pool *pgxpool.Pool, js jetstream.JetStream, log *slog.Logger) *Projector {
	return &Projector{pool: pool, js: js, log: log, changed: make(chan struct{})}
}

// Reset empties the read model so that the next Run rebuilds it from the
// start of the stream.
func Reset(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := pool.Exec(ctx, `TRUNCATE keys, key_secrets; DELETE FROM projector_positions WHERE name = '`+projectorName+`'`)
	if err != nil {
		return fmt.Errorf("reset read model: %w", err)
	}
	return nil
}

// Position is the last stream sequence folded.
func (p *Projector) Position() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pos
}

// WaitFor blocks until the projection includes stream sequence seq, so that a
// caller who just appended an event can read its own write.
func (p *Projector) WaitFor(ctx context.Context, seq uint64) error {
	for {
		p.mu.Lock()
		pos, ch := p.pos, p.changed
		p.mu.Unlock()
		if pos >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for read model to reach %d (at %d): %w", seq, pos, ctx.Err())
		}
	}
}

func (p *Projector) advance(pos uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pos > p.pos {
		p.pos = pos
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

// Run projects until ctx ends. A failure (PostgreSQL restarting, say) is
// logged and the projector starts again from its stored position.
func (p *Projector) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		err := p.runOnce(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.log.Error("key projector failed; restarting", "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (p *Projector) runOnce(ctx context.Context) error {
	var start uint64
	err := p.pool.QueryRow(ctx, `SELECT stream_seq FROM projector_positions WHERE name = $1`, projectorName).Scan(&start)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("read projector position: %w", err)
	}
	p.advance(start)
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if start > 0 {
		cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start + 1}
	}
	cons, err := p.js.OrderedConsumer(ctx, bus.KeysStream, cfg)
	if err != nil {
		return fmt.Errorf("consume %s: %w", bus.KeysStream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("consume %s: %w", bus.KeysStream, err)
	}
	defer it.Stop()
	// Next waits up to a second; stop it as soon as ctx ends instead.
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	p.log.Info("key projector started", "from_seq", start+1)

	var batch []jetstream.Msg
	for ctx.Err() == nil {
		// Wait for one message, then take whatever else is already there.
		msg, err := it.Next(jetstream.NextMaxWait(time.Second))
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			continue // timeouts and transient errors: the ordered consumer recovers by itself
		}
		batch = append(batch[:0], msg)
		for len(batch) < maxBatch {
			m, err := it.Next(jetstream.NextMaxWait(time.Millisecond))
			if err != nil {
				break
			}
			batch = append(batch, m)
		}
		if err := p.apply(ctx, batch); err != nil {
			// The position did not move: a restart re-reads this batch.
			return err
		}
	}
	return ctx.Err()
}

type row struct {
	seq uint64
	key *eventsv1.Key
}

func (p *Projector) apply(ctx context.Context, batch []jetstream.Msg) error {
	// Events carry the key's full state: only the last one per key matters.
	latest := map[string]row{}
	var last uint64
	for _, m := range batch {
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("key projector: %w", err)
		}
		last = md.Sequence.Stream
		ev := new(eventsv1.KeyEvent)
		if err := proto.Unmarshal(m.Data(), ev); err != nil {
			// A message we cannot read must not stop every later key: log it
			// (without its payload) and move on.
			p.log.Error("key projector: undecodable event skipped", "seq", last, "subject", m.Subject(), "err", err)
			continue
		}
		k := ev.GetKey()
		latest[k.GetAccount()+"/"+k.GetId()] = row{seq: last, key: k}
	}
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, r := range latest {
			if err := queueUpsert(b, r); err != nil {
				return err
			}
		}
		b.Queue(`INSERT INTO projector_positions (name, stream_seq) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET stream_seq = EXCLUDED.stream_seq`, projectorName, last)
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("key projector: fold up to %d: %w", last, err)
	}
	p.advance(last)
	return nil
}
