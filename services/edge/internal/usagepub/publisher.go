// Package usagepub publishes an edge's usage events to the USAGE stream,
// asynchronously and in batches, and never loses one: what the bus does not
// acknowledge goes to a local spool file and is replayed, in order, when the
// bus is back.
package usagepub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
)

// SchemaVersion of the UsageEvent this package writes.
const SchemaVersion = 1

// Config configures a Publisher.
type Config struct {
	// Instance is a readable name for this edge process (the host name when
	// empty). New adds random bits to it at every start: with the sequence,
	// the instance identifies each event forever, and sequences start again
	// at 1 with each process.
	Instance   string
	SpoolDir   string
	Partitions int
	// BatchSize and BatchDelay bound how long an event waits to be sent.
	BatchSize  int
	BatchDelay time.Duration
	// AckTimeout is how long a batch may wait for the bus before it is spooled.
	AckTimeout time.Duration
	// QueueSize bounds events held in memory: beyond it Publish waits (the
	// bus and the spool are both far behind), it never drops an event.
	QueueSize int
	// AdoptInterval is how often a running publisher looks in SpoolDir for
	// the spools of edges that died (unlocked spools) and adopts them.
	AdoptInterval time.Duration
	// StopSpoolTimeout bounds, at stop, how long events that the bus did not
	// take are retried on a failing spool. While running, the publisher
	// retries for as long as it takes (Publish waits once the queue is
	// full); a stop must end, so after this the events are counted as lost,
	// logged, and Run returns an error.
	StopSpoolTimeout time.Duration
}

// Publisher sends usage events. Publish never blocks on the network.
//
// Publish appends to a list under a mutex instead of sending on a channel:
// a channel receive wakes the sending goroutine once per event, which at a
// few thousand requests a second costs a thread wake-up per request on the
// hot path. Run is woken once per batch instead: by the first event of a
// batch (to start its BatchDelay) and when a batch is full.
//
// It publishes with core NATS and reads JetStream's acknowledgements itself,
// on one inbox subscription, instead of through jetstream's PublishMsgAsync:
// that registered a future with two channels per event and decoded every
// acknowledgement's JSON, 10 % of the edge's CPU in all (BENCHMARKS.md).
type Publisher struct {
	cfg   Config
	nc    *nats.Conn
	log   *slog.Logger
	spool *spool

	// acks receives the answers to this publisher's messages, sent to
	// inbox.<batch>.<index>, straight from the connection's reader (a
	// channel subscription: no status handling, no goroutine of its own);
	// only Run's goroutine reads it. Should it ever be full, the client
	// drops the answer: that event is not acknowledged and is sent again.
	acks  chan *nats.Msg
	inbox string
	batch uint64

	mu      sync.Mutex
	space   sync.Cond // on mu: pending has room again
	pending []*eventsv1.UsageEvent
	seqs    []uint64 // per partition, under mu so pending is in sequence order
	kick    chan struct{}

	published atomic.Uint64
	spooled   atomic.Uint64
	lost      atomic.Uint64

	// stopping is Run's ctx.Done(); giveUpAt, once a stop began, is when a
	// failing spool stops being retried. Run's goroutine only.
	stopping <-chan struct{}
	giveUpAt time.Time

	adopted time.Time // when Run last looked for orphans; Run's goroutine only
}

// instanceID returns a fresh edge instance id: name (the host name when
// empty) and random bits. The bits are not optional: an edge started again
// under the same name counts its sequences from 1 again, and the stream (by
// message id, for two minutes) and metering (by instance and sequence,
// forever) would drop its events as copies of the previous process's.
func instanceID(name string) string {
	if name == "" {
		name, _ = os.Hostname()
	}
	if name == "" {
		name = "edge"
	}
	var b [6]byte
	rand.Read(b[:])
	return name + "-" + hex.EncodeToString(b[:])
}

// New opens the spool and returns a Publisher; Run sends.
func New(nc *nats.Conn, cfg Config, log *slog.Logger) (*Publisher, error) {
	cfg.Instance = instanceID(cfg.Instance)
	cfg.BatchSize = cmpOr(cfg.BatchSize, 1000)
	cfg.BatchDelay = cmpOr(cfg.BatchDelay, 5*time.Millisecond)
	cfg.AckTimeout = cmpOr(cfg.AckTimeout, 3*time.Second)
	cfg.QueueSize = cmpOr(cfg.QueueSize, 65536)
	cfg.AdoptInterval = cmpOr(cfg.AdoptInterval, 30*time.Second)
	cfg.StopSpoolTimeout = cmpOr(cfg.StopSpoolTimeout, 30*time.Second)
	cfg.Partitions = cmpOr(cfg.Partitions, 16)
	inbox := nc.NewRespInbox()
	acks := make(chan *nats.Msg, 4*cfg.BatchSize)
	sub, err := nc.ChanSubscribe(inbox+".*.*", acks)
	if err != nil {
		return nil, fmt.Errorf("usage: subscribe to acknowledgements: %w", err)
	}
	sp, err := openSpool(cfg.SpoolDir, cfg.Instance)
	if err != nil {
		sub.Unsubscribe() //nolint:errcheck // the spool's error is the one to report
		return nil, err
	}
	p := &Publisher{cfg: cfg, nc: nc, log: log, spool: sp, acks: acks, inbox: inbox,
		seqs: make([]uint64, cfg.Partitions), kick: make(chan struct{}, 1)}
	p.space.L = &p.mu
	return p, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Instance is this publisher's edge instance id: Config.Instance (or the
// host name) and the random bits added at this start.
func (p *Publisher) Instance() string { return p.cfg.Instance }

// Stats are counters for metrics and tests.
func (p *Publisher) Stats() (published, spooled uint64) { return p.published.Load(), p.spooled.Load() }

// Publish stamps ev with this edge's instance, its key's partition and the
// next sequence number of that partition, and queues it. It returns the
// sequence. It waits only when QueueSize events are queued already (the bus
// and the spool are both far behind): it never drops one.
func (p *Publisher) Publish(ev *eventsv1.UsageEvent) uint64 {
	part := bus.Partition(ev.GetKeyId(), p.cfg.Partitions)
	ev.EdgeInstance = p.cfg.Instance
	ev.Partition = uint32(part)
	ev.SchemaVersion = SchemaVersion
	if ev.OccurredAt == nil {
		ev.OccurredAt = timestamppb.Now()
	}
	p.mu.Lock()
	for len(p.pending) >= p.cfg.QueueSize {
		p.space.Wait()
	}
	p.seqs[part]++
	seq := p.seqs[part]
	ev.Sequence = seq
	p.pending = append(p.pending, ev)
	n := len(p.pending)
	p.mu.Unlock()
	if n == 1 || n == p.cfg.BatchSize {
		select {
		case p.kick <- struct{}{}:
		default: // Run has a wake-up pending already
		}
	}
	return seq
}

// eventID is the event's message id on the bus, which the stream uses to
// drop a re-published copy. It is built when the event is sent, off the
// request path; it depends only on the event's identity, so a replay from
// the spool gives the same id.
func eventID(ev *eventsv1.UsageEvent) string {
	return ev.GetEdgeInstance() + ":" + strconv.FormatUint(uint64(ev.GetPartition()), 10) + ":" + strconv.FormatUint(ev.GetSequence(), 10)
}

// Run sends queued events until ctx ends, then flushes: what cannot be
// published within a short deadline is spooled, so nothing is lost on SIGTERM.
func (p *Publisher) Run(ctx context.Context) error {
	p.stopping = ctx.Done()
	p.adoptNow()
	retry := time.NewTicker(500 * time.Millisecond)
	defer retry.Stop()
	p.batches(ctx, func(batch []*eventsv1.UsageEvent) { p.send(ctx, batch) }, retry.C)
	return p.flush()
}

// maintain runs on Run's tick: it adopts, every AdoptInterval, the spools of
// edges that died while this one ran (at start it adopts those of earlier
// processes), and replays the spool, if there is one.
func (p *Publisher) maintain(ctx context.Context) {
	if time.Since(p.adopted) >= p.cfg.AdoptInterval {
		p.adoptNow()
	}
	if !p.spool.empty() {
		p.replay(ctx)
	}
}

func (p *Publisher) adoptNow() {
	p.adopted = time.Now()
	if err := p.adoptOrphans(); err != nil {
		p.log.Error("usage: the spools of other edge processes not adopted", "err", err)
	}
}

// Consume hands queued events to fn, a batch at a time and in order, until
// ctx ends, instead of publishing them: for benchmarks and tests of the
// request path that must not depend on the bus. fn must not keep the slice.
func (p *Publisher) Consume(ctx context.Context, fn func([]*eventsv1.UsageEvent)) {
	p.batches(ctx, fn, nil)
}

// batches takes the queue a batch at a time (BatchSize events, or what came
// within BatchDelay of a batch's first event) and hands it to send, until ctx
// ends. On each tick it maintains the spool (maintain).
func (p *Publisher) batches(ctx context.Context, send func([]*eventsv1.UsageEvent), tick <-chan time.Time) {
	var batch []*eventsv1.UsageEvent
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	for {
		select {
		case <-p.kick:
			if p.queued() < p.cfg.BatchSize {
				if !armed {
					timer.Reset(p.cfg.BatchDelay)
					armed = true
				}
				continue
			}
		case <-timer.C:
			armed = false
		case <-tick:
			p.maintain(ctx)
			continue
		case <-ctx.Done():
			return
		}
		// A batch is due: send the queue in batches of at most BatchSize.
		batch = p.take(batch[:0])
		for rest := batch; len(rest) > 0; {
			n := min(len(rest), p.cfg.BatchSize)
			send(rest[:n])
			rest = rest[n:]
		}
		clear(batch) // let the events go
		if !armed && p.queued() > 0 {
			timer.Reset(p.cfg.BatchDelay) // what came in while sending
			armed = true
		}
	}
}

func (p *Publisher) queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}

// take moves the queue into dst (which it returns) and wakes Publish calls
// that wait for room.
func (p *Publisher) take(dst []*eventsv1.UsageEvent) []*eventsv1.UsageEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	dst = append(dst, p.pending...)
	clear(p.pending)
	p.pending = p.pending[:0]
	p.space.Broadcast()
	return dst
}

// send publishes a batch, or spools it when the spool already holds older
// events (order) or the bus does not acknowledge it.
func (p *Publisher) send(ctx context.Context, batch []*eventsv1.UsageEvent) {
	if len(batch) == 0 {
		return
	}
	if !p.spool.empty() {
		p.spoolEvents(batch)
		p.replay(ctx)
		return
	}
	if failed := p.publish(ctx, batch); len(failed) > 0 {
		p.spoolEvents(failed)
	}
}

// publish sends events and waits, up to AckTimeout, for JetStream to
// acknowledge each. It returns the events that were not acknowledged, in
// order: re-publishing an event that did arrive is harmless (its message id
// is deduplicated by the stream, and metering recognises (instance,
// sequence) forever), losing one is not. Each message asks for its answer on
// inbox.<batch>.<index>; answers to an earlier batch that gave up waiting
// are recognised by their batch and dropped.
func (p *Publisher) publish(ctx context.Context, evs []*eventsv1.UsageEvent) []*eventsv1.UsageEvent {
	if p.nc.Status() != nats.CONNECTED {
		return evs
	}
	p.batch++
	prefix := p.inbox + "." + strconv.FormatUint(p.batch, 10) + "."
	acked := make([]bool, len(evs))
	sent := 0
	for i, ev := range evs {
		if ev.EventId == "" {
			ev.EventId = eventID(ev)
		}
		data, err := proto.Marshal(ev)
		if err != nil {
			p.log.Error("usage: marshal", "err", err)
			break
		}
		msg := &nats.Msg{
			Subject: bus.UsageSubject(int(ev.GetPartition()), ev.GetAccount(), ev.GetKeyId()),
			Reply:   prefix + strconv.Itoa(i),
			Header:  nats.Header{jetstream.MsgIDHeader: []string{ev.GetEventId()}},
			Data:    data,
		}
		if err := p.nc.PublishMsg(msg); err != nil {
			break // this one and the rest are not sent
		}
		sent++
	}
	deadline := time.NewTimer(p.cfg.AckTimeout)
	defer deadline.Stop()
	for pending := sent; pending > 0; {
		var m *nats.Msg
		select {
		case m = <-p.acks:
		case <-deadline.C:
		case <-ctx.Done():
		}
		if m == nil {
			break // AckTimeout, or ctx ended: the rest are unknown
		}
		rest, ok := strings.CutPrefix(m.Subject, prefix)
		if !ok {
			continue // an answer to an earlier batch
		}
		i, err := strconv.Atoi(rest)
		if err != nil || i < 0 || i >= sent || acked[i] {
			continue
		}
		if ackOK(m.Data) {
			acked[i] = true
			p.published.Add(1)
		}
		pending-- // answered, acknowledged or not
	}
	var failed []*eventsv1.UsageEvent
	for i, ev := range evs {
		if !acked[i] {
			failed = append(failed, ev)
		}
	}
	return failed
}

func (p *Publisher) spoolEvents(evs []*eventsv1.UsageEvent) {
	// If the disk fails too, keep trying, the bus as well as the disk: the
	// events stay in memory and Publish callers wait on the full queue
	// (backpressure), nothing is dropped. Only a stop gives up,
	// StopSpoolTimeout after it began.
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		err := p.spool.append(evs)
		if err == nil {
			break
		}
		if p.spool.empty() { // nothing older waits in the spool: the bus may take these now
			ctx, cancel := context.WithTimeout(context.Background(), p.cfg.AckTimeout)
			evs = p.publish(ctx, evs)
			cancel()
			if len(evs) == 0 {
				p.log.Info("usage: the bus took the events the spool could not")
				return
			}
		}
		p.noticeStop()
		wake := p.stopping // a stop starts the count to giving up at once
		if !p.giveUpAt.IsZero() {
			left := time.Until(p.giveUpAt)
			if left <= 0 {
				p.lost.Add(uint64(len(evs)))
				p.log.Error("usage: events lost at stop: the bus did not take them and the spool cannot be written",
					"err", err, "events", len(evs), "first_sequence", evs[0].GetSequence(), "instance", p.cfg.Instance)
				return
			}
			backoff, wake = min(backoff, left), nil
		}
		p.log.Error("usage: spool write failed; retrying", "err", err, "events", len(evs))
		select {
		case <-time.After(backoff):
		case <-wake:
		}
	}
	p.spooled.Add(uint64(len(evs)))
	p.log.Warn("usage: bus unavailable, events spooled", "events", len(evs))
}

// replay publishes the spool in order; on full success it empties it.
func (p *Publisher) replay(ctx context.Context) {
	if p.nc.Status() != nats.CONNECTED {
		return
	}
	evs, err := p.spool.events()
	if err != nil {
		p.log.Error("usage: read spool", "err", err)
		return
	}
	for start := 0; start < len(evs); start += p.cfg.BatchSize {
		end := min(start+p.cfg.BatchSize, len(evs))
		if failed := p.publish(ctx, evs[start:end]); len(failed) > 0 {
			return // try again later, from the start: duplicates are harmless
		}
	}
	if err := p.spool.reset(); err != nil {
		p.log.Error("usage: reset spool", "err", err)
		return
	}
	p.log.Info("usage: spool replayed", "events", len(evs))
}

// adoptOrphans moves what other edge processes left in the spool dir into
// this process's spool (at start, before any new event); the normal replay
// then publishes them with their original instance and sequence, each
// instance's in its order. The spools of edges that still run (locked) are
// left to them.
func (p *Publisher) adoptOrphans() error {
	for _, path := range p.spool.orphans() {
		if err := p.adopt(path); err != nil {
			return err
		}
	}
	return nil
}

// adopt moves the orphan at path into this process's spool, holding its
// lock throughout: an edge starting at the same time skips it, and so does
// one that locks it after it was removed (lockOrphan).
func (p *Publisher) adopt(path string) error {
	f, err := lockOrphan(path)
	if errors.Is(err, errLocked) || errors.Is(err, fs.ErrNotExist) {
		return nil // a live edge's spool, or adopted by another edge already
	}
	if err != nil {
		return err
	}
	defer f.Close() // after the removal: that releases the lock
	evs, _, err := readRecords(f)
	if err != nil {
		return err
	}
	if err := p.spool.append(evs); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	p.log.Info("usage: adopted an earlier spool", "file", path, "events", len(evs))
	return nil
}

// noticeStop starts the count to giving up on a failing spool once a stop
// has begun.
func (p *Publisher) noticeStop() {
	if !p.giveUpAt.IsZero() {
		return
	}
	select {
	case <-p.stopping:
		p.giveUpAt = time.Now().Add(p.cfg.StopSpoolTimeout)
	default:
	}
}

// flush sends or spools whatever is queued; it runs after ctx has ended. It
// is an error if some events could be neither published nor spooled within
// StopSpoolTimeout.
func (p *Publisher) flush() error {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.AckTimeout)
	defer cancel()
	p.noticeStop()
	rest := p.take(nil)
	for len(rest) > 0 {
		n := min(len(rest), p.cfg.BatchSize)
		p.send(ctx, rest[:n])
		rest = rest[n:]
	}
	if !p.spool.empty() {
		p.replay(ctx)
	}
	err := p.spool.close()
	if n := p.lost.Load(); n > 0 {
		err = errors.Join(fmt.Errorf("usage: %d events lost: the bus did not acknowledge them and the spool in %s could not be written", n, p.cfg.SpoolDir), err)
	}
	return err
}
