package sink

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
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
//  1. look up which events are stored already (in usage_events, by the
//     event's forever identity, edge instance, partition and sequence): a
//     re-published event, e.g. an edge's spool replayed after the bus's
//     2-minute de-duplication window, is dropped here; so is a copy of an
//     event of the batch before that is fresh there (see "Looking up ahead").
//     Only events at or below their pair's watermark are looked up (see
//     "Watermarks");
//  1b. raise the watermarks of the batch's pairs in sink_watermarks;
//  2. record the batch (its stream range) in sink_batches;
//  3. insert the new events into usage_events, as one block: a
//     materialized view sums them into usage_hourly;
//  4. if 3 failed, its outcome is unknown (the rows of each day and the
//     rollup may each be written or not): Writer.Repair compares each
//     with the truth and writes only the difference, retried until it
//     succeeds.
//
// The next batch is recorded only once this one is complete, so after a
// crash only the last recorded batch can be incomplete: at start the sink
// reads its range from the stream again and repairs it, then reads on from
// the end of that range. A crash anywhere thus neither loses an event nor
// counts one twice, and ClickHouse being away only makes the sink wait (the
// events wait in the stream, which keeps them for 30 days).
//
// Looking up ahead. Steps 2 to 4 are the writer's (run, process); step 1 is
// done one batch ahead by another goroutine, the checker (check), so that
// the look-up of batch N+1 overlaps with the insert of batch N. Three
// goroutines: reader -> (decoded batches) -> checker -> (checked batches:
// the range and the fresh events) -> writer. The look-up of N+1 may then
// see all, part or none of what N is writing; it is still exact because:
//   - the checker hands N to the writer over an unbuffered channel, and the
//     writer takes a batch only once it has completely finished the one
//     before (written, or repaired), so the hand-over of N happens after
//     N-1 is complete in ClickHouse;
//   - the checker looks N+1 up only after that hand-over, so every batch
//     before N is then complete and visible in usage_events; the only batch
//     that may be in flight is N, whose fresh events the checker still has
//     in memory (inFlight): it drops from N+1 every event stored already
//     or among them (by identity; whatever the look-up saw of N is among
//     them too);
//   - the writer records N+1 only after N is complete, so what N+1 dropped
//     as N's is stored by then; if N is never completed (a crash, a
//     shutdown), N+1 is not recorded either, and the next start repairs N
//     and reads N+1 again, looking it up anew.
//
// After a start, nothing is in flight: recoverLast has repaired the last
// recorded batch (waiting first for any statement of an earlier run still
// running), before the reader starts, and the batches before it were
// complete before it was recorded; the checker starts with an empty
// inFlight. A batch that was looked up but not recorded when the sink stops
// is simply read and looked up again by the next start: a look-up writes
// nothing. The look-up is retried until it succeeds or the sink stops, as
// the writer's steps are; a repair waits for a look-up still running (it
// waits for every statement of the consumer), which ends by its deadline.

// Watermarks. An edge numbers each partition's events 1, 2, 3, ..., and
// they mostly arrive in that order, so the look-up of step 1 almost always
// answers "none stored". sink_watermarks keeps, per (edge instance,
// partition), a sequence that no stored event is above: the writer records
// it (step 1b) before it inserts, so after a crash it may be above what is
// stored, never below; migration 0006 gave the pairs stored before it their
// highest sequence. The checker reads them at start and raises its own copy
// with every batch it hands over; an event above its pair's mark (or of a
// pair without one) cannot be stored, nor be in the batch in flight, and is
// kept without a look-up. Only events at or below the mark (a spool
// replayed late, copies, events out of order) are looked up. The writer's
// marks lag the checker's by at most the batch in flight, which the writer
// records before inserting it.

// Stats are counters for logs and tests.
type Stats struct {
	Events     atomic.Uint64 // inserted into usage_events
	Duplicates atomic.Uint64 // dropped because already stored (or being stored, by the batch before)
	LookedUp   atomic.Uint64 // events at or below their pair's watermark, looked up in usage_events
	Invalid    atomic.Uint64 // messages that are not usage events
	Batches    atomic.Uint64
	Repairs    atomic.Uint64
}

// Sink moves usage events from the USAGE stream into ClickHouse.
type Sink struct {
	cfg    Config
	log    *slog.Logger
	nc     *nats.Conn
	stream jetstream.Stream
	w      *usagestore.Writer
	nextID uint64
	stats  Stats
	hist   histograms
	// spare holds event slices of written batches, for the reader to fill
	// again (see recycle).
	spare chan []usagestore.Event
	// recorded are the watermarks in sink_watermarks, as far as this run
	// knows (the writer's; the checker has its own, ahead of these).
	recorded map[usagestore.Pair]uint64
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
	return &Sink{cfg: cfg, log: log, nc: js.Conn(), stream: stream, spare: make(chan []usagestore.Event, 2), hist: newHistograms(), fault: func(string) error { return nil }}, nil
}

// Stats are the sink's counters since it started.
func (s *Sink) Stats() *Stats { return &s.stats }

// run consumes until ctx ends. The batch in hand then has ShutdownTimeout to
// be written; if it is cut short, the next start repairs it.
//
// Three goroutines, one batch between each two, overlap the work: the reader
// reads and decodes batch N+2 while the checker looks up N+1 and the writer
// writes N (see "Looking up ahead" at the top). Batches are still recorded
// and written one after the other, in order.
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
	var marks map[usagestore.Pair]uint64
	err = s.retry(work, "read the watermarks", func(ctx context.Context) (err error) {
		marks, err = s.w.Watermarks(ctx)
		return err
	})
	if err != nil {
		return ignoreCancel(err)
	}
	s.recorded = maps.Clone(marks) // the writer's; the checker raises marks as it goes
	r := s.newReader(start)
	s.log.Info("sink reading usage events", "from_seq", max(start, 1), "consumer", s.cfg.Consumer)

	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	batches := make(chan decoded, 1)
	checkedBatches := make(chan checked) // unbuffered: the exactness depends on it
	readErr := make(chan error, 1)
	go func() {
		defer close(batches)
		readErr <- s.read(readCtx, r, batches)
	}()
	go func() {
		defer close(checkedBatches)
		s.check(readCtx, marks, batches, checkedBatches)
	}()
	for b := range checkedBatches {
		if ctx.Err() != nil {
			break // not recorded, not written: the next start reads it again
		}
		if err = s.process(work, b); err != nil {
			break
		}
	}
	stopReading()
	for range checkedBatches { // not recorded: read again by the next start
	}
	if rerr := <-readErr; err == nil && ctx.Err() == nil {
		err = rerr
	}
	return ignoreCancel(err)
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

// checked is a batch whose stored events have been looked up.
type checked struct {
	fresh      []usagestore.Event // the events to write
	from, to   uint64             // the batch's range of stream sequences
	duplicates int                // events dropped: stored already, or in flight
	lookup     time.Duration      // how long the look-up took
}

// check looks up each batch from in and hands it, checked, to out, until in
// closes or ctx ends. out must be unbuffered, and its reader must take a
// batch only once it has completely written the one before: then, when
// check looks up a batch, the only batch that may be in flight is the one it
// handed over last (see "Looking up ahead" at the top).
func (s *Sink) check(ctx context.Context, marks map[usagestore.Pair]uint64, in <-chan decoded, out chan<- checked) {
	var pending inFlight // the fresh events of the batch handed over last
	for b := range in {  // closed by the reader when ctx ends
		c, err := s.lookup(ctx, b, marks, &pending)
		if err != nil {
			return // ctx ended
		}
		select {
		case out <- c:
		case <-ctx.Done():
			return
		}
		s.recycle(pending.events)
		pending.reset(c.fresh)
		raise(marks, c.fresh) // the writer records them before it inserts
	}
}

// recycle gives the reader the slice of a written batch's events to fill
// again, sparing the garbage collector a batch-sized slice per batch. The
// checker calls it with the batch in flight before the last hand-over:
// the writer took the last one only once it was done with that one, and
// the checker, done with it too, drops it from pending right after.
func (s *Sink) recycle(events []usagestore.Event) {
	if cap(events) == 0 {
		return
	}
	clear(events[:cap(events)]) // no strings of old batches kept alive
	select {
	case s.spare <- events[:0]:
	default:
	}
}

// raise raises marks to the sequences of evs.
func raise(marks map[usagestore.Pair]uint64, evs []usagestore.Event) {
	for i := range evs {
		p := usagestore.Pair{Edge: evs[i].EdgeInstance, Partition: evs[i].Partition}
		if m, ok := marks[p]; !ok || evs[i].Sequence > m {
			marks[p] = evs[i].Sequence
		}
	}
}

// lookup drops from b's events those stored already and those among
// pending (fresh in the batch being written), and returns the others. Only
// events at or below their pair's watermark can be either: marks holds the
// watermarks recorded before this run and the sequences of every batch this
// run has handed to the writer, pending's included; the others are new
// without a look-up (see "Watermarks" at the top).
func (s *Sink) lookup(ctx context.Context, b decoded, marks map[usagestore.Pair]uint64, pending *inFlight) (checked, error) {
	began := time.Now()
	evs := b.events
	var ask []usagestore.Event
	var at []int // of ask's events in evs
	for i := range evs {
		if m, ok := marks[usagestore.Pair{Edge: evs[i].EdgeInstance, Partition: evs[i].Partition}]; ok && evs[i].Sequence <= m {
			ask, at = append(ask, evs[i]), append(at, i)
		}
	}
	var stored map[usagestore.ID]bool
	if len(ask) > 0 {
		err := s.retry(ctx, "look up stored events", func(ctx context.Context) (err error) {
			stored, err = s.w.Stored(ctx, ask)
			return err
		})
		if err != nil {
			return checked{}, err
		}
		s.stats.LookedUp.Add(uint64(len(ask)))
	}
	fresh := evs[:0] // in place: fresh is never ahead of evs
	for i := range evs {
		if len(at) > 0 && at[0] == i {
			at = at[1:]
			if id := evs[i].ID(); stored[id] || pending.has(id) {
				continue
			}
		}
		fresh = append(fresh, evs[i])
	}
	return checked{fresh: fresh, from: b.from, to: b.to, duplicates: len(evs) - len(fresh), lookup: time.Since(began)}, nil
}

// process writes one checked batch (steps 2 to 4 of the comment at the top).
func (s *Sink) process(ctx context.Context, c checked) error {
	began := time.Now()
	fresh, from, to := c.fresh, c.from, c.to
	s.stats.Duplicates.Add(uint64(c.duplicates))
	if up := s.marksToRecord(fresh); len(up) > 0 {
		if err := s.retry(ctx, "record watermarks", func(ctx context.Context) error { return s.w.RaiseWatermarks(ctx, up) }); err != nil {
			return err
		}
		maps.Copy(s.recorded, up)
	}
	b := usagestore.Batch{ID: s.nextID, SeqFrom: from, SeqTo: to, Events: len(fresh)}
	if err := s.retry(ctx, "record batch", func(ctx context.Context) error { return s.w.BeginBatch(ctx, b) }); err != nil {
		return err
	}
	s.nextID++
	if err := s.fault("recorded"); err != nil {
		return err
	}
	if len(fresh) > 0 {
		err := s.w.Insert(ctx, fresh)
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
	s.observe(began.Add(-c.lookup), newest(fresh)) // the look-up is part of the batch's time
	s.log.Debug("batch written", "batch", b.ID, "seq_from", from, "seq_to", to, "events", len(fresh),
		"duplicates", c.duplicates, "lookup", c.lookup, "took", time.Since(began))
	return s.fault("done")
}

// inFlight is the fresh events of the batch the writer may still be
// writing, for the checker to drop their copies from the next batch. Only
// events at or below their pair's watermark can be such copies (the checker
// raised the marks to every event it handed over), and they are rare, so the
// set of identities is built only when first asked for. The zero value is
// empty.
type inFlight struct {
	events []usagestore.Event
	ids    map[usagestore.ID]struct{} // of events, once built
	built  bool
}

// reset makes events the events in flight.
func (f *inFlight) reset(events []usagestore.Event) {
	f.events, f.built = events, false
}

// has reports whether id is the identity of an event in flight.
func (f *inFlight) has(id usagestore.ID) bool {
	if len(f.events) == 0 {
		return false
	}
	if !f.built {
		if f.ids == nil {
			f.ids = make(map[usagestore.ID]struct{}, len(f.events))
		}
		clear(f.ids)
		for i := range f.events {
			f.ids[f.events[i].ID()] = struct{}{}
		}
		f.built = true
	}
	_, ok := f.ids[id]
	return ok
}

// marksToRecord returns the watermarks evs raise above those recorded.
func (s *Sink) marksToRecord(evs []usagestore.Event) map[usagestore.Pair]uint64 {
	up := map[usagestore.Pair]uint64{}
	for i := range evs {
		p := usagestore.Pair{Edge: evs[i].EdgeInstance, Partition: evs[i].Partition}
		if m, ok := s.recorded[p]; (!ok || evs[i].Sequence > m) && evs[i].Sequence > up[p] {
			up[p] = evs[i].Sequence
		}
	}
	return up
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
