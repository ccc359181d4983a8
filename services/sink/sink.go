package sink

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/usagestore"
)

// How the sink writes each event exactly once into a store without
// transactions.
//
// ClickHouse cannot commit rows together with a JetStream ack, so the sink
// does not use acks at all: its position in the USAGE stream is recorded in
// ClickHouse (sink_batches), next to the rows, and it reads the stream in
// order and without gaps from just after the last recorded batch (see
// reader). A durable consumer with AckAll would cost one ack per batch, but
// an AckAll after a delivery lost in flight (a reconnect, or a restart
// within AckWait while the old deliveries are still pending) acknowledges
// messages the sink never saw: a silent loss. One ack per message avoids
// that but costs about as much CPU as the delivery itself.
//
// Per batch (a contiguous range of stream sequences):
//  1. look up which events are stored already (usage_ids, by the event's
//     forever identity, edge instance and sequence): a re-published event,
//     e.g. an edge's spool replayed after the bus's 2-minute
//     de-duplication window, is dropped here;
//  2. record the batch (its stream range) in sink_batches;
//  3. insert the new events into usage_events, as one block: materialized
//     views sum them into usage_hourly and copy their identities into
//     usage_ids;
//  4. if 3 failed, its outcome is unknown (the rows, the rollup, the
//     identities may each be written or not): Writer.Repair compares each
//     with the truth and writes only the difference, retried until it
//     succeeds.
//
// The next batch is recorded only once this one is complete, so after a
// crash only the last recorded batch can be incomplete: at start the sink
// reads its range from the stream again and repairs it, then reads on from
// the end of that range. A crash anywhere thus neither loses an event nor
// counts one twice, and ClickHouse being away only makes the sink wait (the
// events wait in the stream, which keeps them for 30 days).

// Stats are counters for logs and tests.
type Stats struct {
	Events     atomic.Uint64 // inserted into usage_events
	Duplicates atomic.Uint64 // dropped because already stored
	Invalid    atomic.Uint64 // messages that are not usage events
	Batches    atomic.Uint64
	Repairs    atomic.Uint64
}

// Sink moves usage events from the USAGE stream into ClickHouse.
type Sink struct {
	cfg    Config
	log    *slog.Logger
	stream jetstream.Stream
	w      *usagestore.Writer
	nextID uint64
	stats  Stats
	hist   histograms
	// fault, in tests, is called after each step of a batch; an error
	// stops the sink there, as a crash would (errInjectedWriteError after
	// "inserted" makes the insert look failed instead).
	fault func(step string) error
	// inactive, in tests, is how soon the server drops the reading
	// consumer when the sink stops pulling (0: the library's 5 minutes).
	inactive time.Duration
}

// errInjectedWriteError is a fault that tests inject.
var errInjectedWriteError = errors.New("injected write error")

// newSink returns a sink on the USAGE stream; its Writer is set once
// ClickHouse is reached.
func newSink(ctx context.Context, cfg Config, js jetstream.JetStream, log *slog.Logger) (*Sink, error) {
	stream, err := bus.EnsureUsageStream(ctx, js, bus.UsageOptions{StreamOptions: bus.StreamOptions{Replicas: cfg.StreamReplicas}})
	if err != nil {
		return nil, err
	}
	return &Sink{cfg: cfg, log: log, stream: stream, hist: newHistograms(), fault: func(string) error { return nil }}, nil
}

// Stats are the sink's counters since it started.
func (s *Sink) Stats() *Stats { return &s.stats }

// run consumes until ctx ends. The batch in hand then has ShutdownTimeout to
// be written; if it is cut short, the next start repairs it.
//
// Reading and decoding the next batch overlaps with writing this one (two
// goroutines, one batch between them), which nearly doubles throughput on
// two cores; batches are still written one after the other, in order.
func (s *Sink) run(ctx context.Context) error {
	work, stop := s.workContext(ctx)
	defer stop()
	var start uint64
	err := s.retry(work, "recover the last batch", func(ctx context.Context) (err error) {
		start, err = s.recoverLast(ctx)
		return err
	})
	if err != nil {
		return ignoreCancel(err)
	}
	r := s.newReader(start)
	s.log.Info("sink reading usage events", "from_seq", max(start, 1), "consumer", s.cfg.Consumer)

	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	batches := make(chan decoded, 1)
	readErr := make(chan error, 1)
	go func() {
		defer close(batches)
		readErr <- s.read(readCtx, r, batches)
	}()
	for b := range batches {
		if ctx.Err() != nil {
			break // not recorded, not written: the next start reads it again
		}
		if err := s.process(work, b); err != nil {
			stopReading()
			return ignoreCancel(err)
		}
	}
	stopReading()
	if err := <-readErr; err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// workContext is ctx, but ending ShutdownTimeout after ctx does, so the
// batch in hand can still be written on SIGTERM.
func (s *Sink) workContext(ctx context.Context) (context.Context, context.CancelFunc) {
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		if s.cfg.ShutdownTimeout <= 0 {
			cancel()
			return
		}
		time.AfterFunc(s.cfg.ShutdownTimeout, cancel)
	})
	return work, func() { stop(); cancel() }
}

// process writes one batch (see the comment at the top).
func (s *Sink) process(ctx context.Context, batch decoded) error {
	began := time.Now()
	evs, from, to := batch.events, batch.from, batch.to
	ids := make([]usagestore.ID, len(evs))
	for i := range evs {
		ids[i] = evs[i].ID()
	}
	var stored map[usagestore.ID]bool
	err := s.retry(ctx, "look up stored events", func(ctx context.Context) (err error) {
		stored, err = s.w.Stored(ctx, ids)
		return err
	})
	if err != nil {
		return err
	}
	fresh := evs[:0]
	for _, e := range evs {
		if !stored[e.ID()] {
			fresh = append(fresh, e)
		}
	}
	s.stats.Duplicates.Add(uint64(len(evs) - len(fresh)))
	looked := time.Now()

	b := usagestore.Batch{ID: s.nextID, SeqFrom: from, SeqTo: to, Events: len(fresh)}
	if err := s.retry(ctx, "record batch", func(ctx context.Context) error { return s.w.BeginBatch(ctx, b) }); err != nil {
		return err
	}
	s.nextID++
	if err := s.fault("recorded"); err != nil {
		return err
	}
	if len(fresh) > 0 {
		err = s.w.Insert(ctx, fresh)
		if ferr := s.fault("inserted"); ferr != nil {
			if !errors.Is(ferr, errInjectedWriteError) {
				return ferr
			}
			err = ferr // as if the insert had landed but its answer was lost
		}
		if err != nil {
			// The outcome of the insert is unknown: make it exact.
			s.log.Warn("writing a batch failed; repairing it", "batch", b.ID, "events", len(fresh), "err", err)
			if err := s.repair(ctx, b, fresh); err != nil {
				return err
			}
		}
	}
	s.stats.Batches.Add(1)
	s.stats.Events.Add(uint64(len(fresh)))
	s.observe(began, newest(fresh))
	s.log.Debug("batch written", "batch", b.ID, "seq_from", from, "seq_to", to, "events", len(fresh),
		"lookup", looked.Sub(began), "took", time.Since(began))
	return s.fault("done")
}

// newest is the time of the latest event of evs.
func newest(evs []usagestore.Event) time.Time {
	var t time.Time
	for i := range evs {
		if evs[i].OccurredAt.After(t) {
			t = evs[i].OccurredAt
		}
	}
	return t
}

// repair runs Writer.Repair until it succeeds or ctx ends.
func (s *Sink) repair(ctx context.Context, b usagestore.Batch, evs []usagestore.Event) error {
	return s.retry(ctx, "repair batch", func(ctx context.Context) error {
		res, err := s.w.Repair(ctx, evs)
		if err != nil {
			return err
		}
		s.stats.Repairs.Add(1)
		s.log.Info("batch repaired", "batch", b.ID, "seq_from", b.SeqFrom, "seq_to", b.SeqTo,
			"events", len(evs), "inserted", res.Inserted, "rollup_groups_corrected", res.Corrected)
		return nil
	})
}

// retry runs fn until it succeeds or ctx ends, waiting longer between
// attempts up to MaxBackoff (so a long outage logs once per MaxBackoff).
func (s *Sink) retry(ctx context.Context, what string, fn func(context.Context) error) error {
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			if attempt > 1 {
				s.log.Info("retry succeeded", "what", what, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Warn("sink will retry", "what", what, "attempt", attempt, "in", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait = min(2*wait, s.cfg.MaxBackoff)
	}
}

func ignoreCancel(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}
