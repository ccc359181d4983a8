package sink

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/usagestore"
)

// decoded is a batch read from the stream: its events, without an identity
// twice, and the range of stream sequences it covers.
type decoded struct {
	events   []usagestore.Event
	from, to uint64
}

// reader reads the USAGE stream in order and without gaps from a position:
// the ordered consumer of the nats.go library does that too, but its
// per-message iterator costs twice the CPU of Fetch, and Fetch itself (a
// goroutine that starts a timer, parses the metadata and passes each message
// on through a second channel) costs a sixth of the sink's CPU, which is
// what this machine's throughput depends on. So the reader makes its pulls
// itself: an ephemeral consumer without acks, a subscription on an inbox of
// its own for the consumer's deliveries, and a pull request per fetch
// (the JetStream API's CONSUMER.MSG.NEXT). It checks that every delivery
// follows the last (consumer sequence +1), and on any gap or error starts a
// new consumer just after the last message it returned. It is used by one
// goroutine.
type reader struct {
	nc       *nats.Conn
	stream   jetstream.Stream
	prefix   string        // of the consumers' names
	inactive time.Duration // how soon the server drops an unused consumer
	cons     string        // the current consumer's name; "" when there is none
	pull     string        // the subject of its pull requests
	sub      *nats.Subscription
	serial   int
	next     uint64 // stream sequence of the next message wanted
	dseq     uint64 // consumer sequence of the last message taken from cons
}

func (s *Sink) newReader(start uint64) *reader {
	return &reader{nc: s.nc, stream: s.stream, prefix: s.cfg.Consumer + "-" + randomSuffix(), inactive: cmp.Or(s.inactive, 5*time.Minute), next: max(start, 1)}
}

const (
	// minPullWait is the shortest expiry a pull request is given.
	minPullWait = 10 * time.Millisecond
	// pullGrace is how long after its expiry the reader waits for the
	// server's word that a pull has ended.
	pullGrace = time.Second
)

// fetch returns up to n messages: as soon as it has n, or when wait is up
// with fewer (JetStream holds a pull until it is filled or expires, and
// then says so with a status message).
func (r *reader) fetch(ctx context.Context, n int, wait time.Duration) ([]*nats.Msg, error) {
	if r.cons == "" {
		if err := r.open(ctx); err != nil {
			return nil, err
		}
	}
	wait = max(wait, minPullWait)
	req := fmt.Appendf(nil, `{"batch":%d,"expires":%d}`, n, wait.Nanoseconds())
	if err := r.nc.PublishRequest(r.pull, r.sub.Subject, req); err != nil {
		r.drop()
		return nil, fmt.Errorf("pull from %s: %w", bus.UsageStream, err)
	}
	fctx, cancel := context.WithTimeout(ctx, wait+pullGrace)
	defer cancel()
	msgs := make([]*nats.Msg, 0, n)
	for len(msgs) < n {
		m, err := r.sub.NextMsgWithContext(fctx)
		if err != nil {
			if ctx.Err() != nil {
				return msgs, nil
			}
			if errors.Is(err, context.DeadlineExceeded) {
				break // the end of the pull was not heard of: verify below
			}
			r.drop() // no responders: the consumer is gone; or the connection
			if len(msgs) > 0 {
				return msgs, nil // good as far as they go
			}
			return nil, fmt.Errorf("pull from %s: %w", bus.UsageStream, err)
		}
		if len(m.Data) == 0 && m.Header.Get(statusHeader) != "" {
			if end, err := r.status(m); err != nil {
				if len(msgs) > 0 {
					return msgs, nil
				}
				return nil, err
			} else if end {
				break
			}
			continue
		}
		sseq, dseq, ok := ackSeqs(m.Reply)
		if !ok || dseq != r.dseq+1 || sseq < r.next {
			// A delivery was lost (or is out of place): read again from
			// after the last good one with a new consumer.
			r.drop()
			return msgs, nil
		}
		r.dseq, r.next = dseq, sseq+1
		msgs = append(msgs, m)
	}
	if len(msgs) < n && ctx.Err() == nil {
		r.verify(ctx)
	}
	return msgs, nil
}

// statusHeader holds the status code of a JetStream control message.
const statusHeader = "Status"

// status reads a control message on the deliveries' inbox: end is true when
// it ends a pull (no messages, or the pull expired: "404", "408"), false
// for one to ignore (an idle heartbeat, "100"). Anything else ("409": the
// consumer was deleted, its leader changed, too many pulls waiting) is an
// error, after which the reader starts a new consumer. The status of an
// earlier pull that ended while nobody waited for it may end this one early:
// a short batch, nothing more.
func (r *reader) status(m *nats.Msg) (end bool, err error) {
	switch code := m.Header.Get(statusHeader); code {
	case "404", "408":
		return true, nil
	case "100":
		return false, nil
	default:
		r.drop()
		return true, fmt.Errorf("pull from %s: status %s %s", bus.UsageStream, code, m.Header.Get("Description"))
	}
}

// verify, after a pull that came back short, asks the server how far the
// consumer has delivered. A delivery the client dropped (the subscription's
// pending limit) is lost, and only a later delivery would show the gap: at
// the end of the traffic none comes, and the lost events would wait forever.
// It also notices a consumer the server has dropped (unused for longer than
// its inactivity limit, e.g. while ClickHouse was away), whose pulls go
// unanswered.
func (r *reader) verify(ctx context.Context) {
	if r.cons == "" {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cons, err := r.stream.Consumer(cctx, r.cons)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		r.drop()
	case err != nil:
		// The bus is away; the next pull fails and starts over.
	default:
		if waiting, _, err := r.sub.Pending(); err == nil && cons.CachedInfo().Delivered.Consumer <= r.dseq+uint64(waiting) {
			return
		}
		// Delivered, but neither taken nor waiting in the subscription.
		r.drop()
	}
}

// open creates a consumer that delivers from r.next on, and subscribes to
// its deliveries.
func (r *reader) open(ctx context.Context) error {
	r.serial++
	cfg := jetstream.ConsumerConfig{
		Name:        fmt.Sprintf("%s_%d", r.prefix, r.serial),
		Description: "tollgate sink (position kept in ClickHouse)",
		// No subject filter: USAGE holds only usage subjects, and a
		// filtered consumer makes the server match every message (half
		// the delivery rate here).
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       r.next,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: r.inactive,
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := r.stream.CreateConsumer(cctx, cfg)
	if err != nil {
		return fmt.Errorf("read %s from %d: %w", bus.UsageStream, r.next, err)
	}
	sub, err := r.nc.SubscribeSync(r.nc.NewInbox())
	if err != nil {
		r.deleteConsumer(cfg.Name)
		return fmt.Errorf("read %s from %d: %w", bus.UsageStream, r.next, err)
	}
	r.cons, r.sub, r.dseq = cfg.Name, sub, 0
	r.pull = "$JS.API.CONSUMER.MSG.NEXT." + cons.CachedInfo().Stream + "." + cfg.Name
	return nil
}

// drop forgets the current consumer (the server removes it once idle).
func (r *reader) drop() {
	if r.cons == "" {
		return
	}
	r.sub.Unsubscribe() //nolint:errcheck // the connection may be closed: then it is gone anyway
	r.deleteConsumer(r.cons)
	r.cons, r.sub = "", nil
}

func (r *reader) deleteConsumer(name string) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.stream.DeleteConsumer(ctx, name)
	}()
}

// read collects and decodes batches into out until ctx ends.
func (s *Sink) read(ctx context.Context, r *reader, out chan<- decoded) error {
	defer r.drop()
	d := newDecoder()
	for {
		b, err := s.collect(ctx, r, d)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case out <- b:
		case <-ctx.Done():
			return nil
		}
	}
}

// fetchChunk bounds one pull request: smaller ones let a batch start being
// decoded sooner, larger ones cost fewer round trips.
const fetchChunk = 10_000

// collect gathers a batch: it returns once it has BatchSize messages, or
// FlushInterval after the batch's first message, or as soon as the stream
// has no more for now. A pull from JetStream waits until it has all it asked
// for or expires, so each pull expires by the batch's deadline, and one that
// comes back short means the stream is drained. While the bus is away it
// keeps trying (the reader starts new consumers as needed). Each pull's
// messages are decoded as they come: only one pull's are held at a time.
func (s *Sink) collect(ctx context.Context, r *reader, d *decoder) (decoded, error) {
	bb := s.newBatch(d)
	var deadline time.Time
	backoff := 100 * time.Millisecond
	for bb.messages < s.cfg.BatchSize {
		wait := s.cfg.FlushInterval
		if bb.messages > 0 {
			if wait = time.Until(deadline); wait <= 0 {
				break
			}
		}
		want := min(s.cfg.BatchSize-bb.messages, fetchChunk)
		got, err := r.fetch(ctx, want, wait)
		if ctx.Err() != nil {
			return decoded{}, ctx.Err()
		}
		if err != nil {
			if bb.messages > 0 {
				break // write what is in hand; the reader reads on later
			}
			s.log.Warn("reading usage events failed; retrying", "in", backoff, "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return decoded{}, ctx.Err()
			}
			backoff = min(2*backoff, s.cfg.MaxBackoff)
			continue
		}
		backoff = 100 * time.Millisecond
		if len(got) == 0 && bb.messages == 0 {
			continue
		}
		if bb.messages == 0 {
			deadline = time.Now().Add(s.cfg.FlushInterval)
		}
		bb.add(got)
		if len(got) < want {
			break // drained for now
		}
	}
	return bb.b, nil
}

// decode turns messages, in stream order, into events. A message that is not
// a usage event cannot be stored; it is logged and skipped.
func (s *Sink) decode(msgs []*nats.Msg) decoded {
	bb := s.newBatch(newDecoder())
	bb.add(msgs)
	return bb.b
}

// batchBuilder decodes the messages of a batch, in stream order, as they
// come.
type batchBuilder struct {
	s        *Sink
	d        *decoder
	b        decoded
	messages int // taken so far, events or not
}

// newBatch starts a batch with d, which read keeps for all its batches: the
// strings that repeat from one batch to the next are then made once. The
// events go into a slice the checker has given back (see recycle).
func (s *Sink) newBatch(d *decoder) *batchBuilder {
	d.newBatch()
	bb := &batchBuilder{s: s, d: d}
	select {
	case bb.b.events = <-s.spare:
	default:
	}
	return bb
}

func (bb *batchBuilder) add(msgs []*nats.Msg) {
	if len(msgs) == 0 {
		return
	}
	// Messages come in stream order, so the ends give the range; the
	// metadata of the others is parsed only when it is needed.
	if bb.messages == 0 {
		bb.b.from = streamSeq(msgs[0])
	}
	bb.b.to = streamSeq(msgs[len(msgs)-1])
	bb.messages += len(msgs)
	bb.b.events = slices.Grow(bb.b.events, len(msgs))
	var e usagestore.Event
	for _, m := range msgs {
		k, err := bb.d.event(m, &e)
		if err != nil {
			bb.s.stats.Invalid.Add(1)
			bb.s.log.Error("usage message is not a usage event; skipped", "seq", streamSeq(m), "subject", m.Subject, "err", err)
			continue
		}
		if bb.d.seen[k] {
			bb.s.stats.Duplicates.Add(1)
			continue
		}
		bb.d.seen[k] = true
		bb.b.events = append(bb.b.events, e)
	}
}

func streamSeq(m *nats.Msg) uint64 {
	seq, _, _ := ackSeqs(m.Reply)
	return seq
}

// eventKey is an event's identity (usagestore.ID) with the edge instance's
// number in the batch for its name: hashing it costs much less.
type eventKey struct {
	edge, partition uint32
	seq             uint64
}

// streamEdge is the edge instance of an event that has none.
const streamEdge = "stream:" + bus.UsageStream

// event decodes one message into e and returns the event's identity.
func (d *decoder) event(m *nats.Msg, e *usagestore.Event) (eventKey, error) {
	edge, hasTime, err := d.decode(m.Data, e)
	if err != nil {
		return eventKey{}, err
	}
	if !hasTime || e.EdgeInstance == "" {
		meta, ok := ackMeta(m.Reply)
		if !ok {
			return eventKey{}, errors.New("message metadata: not a JetStream delivery")
		}
		if !hasTime {
			e.OccurredAt = meta.timestamp.UTC()
		}
		if e.EdgeInstance == "" {
			// Edges always stamp an identity; without one, the message's own
			// place in the stream is the best there is (it still makes reading
			// that message again harmless).
			e.EdgeInstance, edge, _ = d.internEdge([]byte(streamEdge)) // valid UTF-8
			e.Partition, e.Sequence = 0, meta.stream
		}
	}
	return eventKey{edge: edge, partition: e.Partition, seq: e.Sequence}, nil
}

func randomSuffix() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
