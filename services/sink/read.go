package sink

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/usagestore"
)

// decoded is a batch read from the stream: its events, without an identity
// twice, and the range of stream sequences it covers.
type decoded struct {
	events   []usagestore.Event
	from, to uint64
}

// open starts reading the stream at sequence start with an ordered
// consumer: in order and without gaps (see the comment in sink.go).
func (s *Sink) open(ctx context.Context, start uint64) (jetstream.MessagesContext, error) {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.UsageSubjectPrefix + ">"},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		// Ordered consumers are named <prefix>_<n> from n = 1 in every
		// process, and a crashed run's consumer lingers for a while.
		NamePrefix:        s.cfg.Consumer + "-" + randomSuffix(),
		InactiveThreshold: s.inactive,
	}
	if start > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	cons, err := s.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", bus.UsageStream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(min(s.cfg.BatchSize, 100_000)))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", bus.UsageStream, err)
	}
	return it, nil
}

// read collects and decodes batches into out until ctx ends.
func (s *Sink) read(ctx context.Context, it jetstream.MessagesContext, out chan<- decoded) error {
	for {
		msgs, err := s.collect(ctx, it)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", bus.UsageStream, err)
		}
		select {
		case out <- s.decode(msgs):
		case <-ctx.Done():
			return nil
		}
	}
}

// collect waits for a first message, then gathers more until the batch is
// full or FlushInterval has passed since the first.
func (s *Sink) collect(ctx context.Context, it jetstream.MessagesContext) ([]jetstream.Msg, error) {
	first, err := it.Next(jetstream.NextContext(ctx))
	if err != nil {
		return nil, err
	}
	msgs := []jetstream.Msg{first}
	deadline := time.Now().Add(s.cfg.FlushInterval)
	for len(msgs) < s.cfg.BatchSize {
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		msg, err := it.Next(jetstream.NextMaxWait(wait))
		if errors.Is(err, nats.ErrTimeout) {
			break
		}
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, msg)
	}
	return msgs, nil
}

// decode turns messages, in stream order, into events. A message that is not
// a usage event cannot be stored; it is logged and skipped.
func (s *Sink) decode(msgs []jetstream.Msg) decoded {
	b := decoded{events: make([]usagestore.Event, 0, len(msgs))}
	if len(msgs) == 0 {
		return b
	}
	// Messages come in stream order, so the ends give the range; the
	// metadata of the others is parsed only when it is needed.
	b.from, b.to = streamSeq(msgs[0]), streamSeq(msgs[len(msgs)-1])
	seen := make(map[usagestore.ID]bool, len(msgs))
	for _, m := range msgs {
		e, err := toEvent(m)
		if err != nil {
			s.stats.Invalid.Add(1)
			s.log.Error("usage message is not a usage event; skipped", "seq", streamSeq(m), "subject", m.Subject(), "err", err)
			continue
		}
		if seen[e.ID()] {
			s.stats.Duplicates.Add(1)
			continue
		}
		seen[e.ID()] = true
		b.events = append(b.events, e)
	}
	return b
}

func streamSeq(m jetstream.Msg) uint64 {
	meta, err := m.Metadata()
	if err != nil {
		return 0
	}
	return meta.Sequence.Stream
}

// toEvent decodes one message.
func toEvent(m jetstream.Msg) (usagestore.Event, error) {
	var ev eventsv1.UsageEvent
	if err := proto.Unmarshal(m.Data(), &ev); err != nil {
		return usagestore.Event{}, err
	}
	e := usagestore.Event{
		Account: ev.GetAccount(), KeyID: ev.GetKeyId(),
		EdgeInstance: ev.GetEdgeInstance(), Sequence: ev.GetSequence(),
		Service: ev.GetService(), Model: ev.GetModel(), Endpoint: ev.GetEndpoint(),
		InputTokens: ev.GetInputTokens(), OutputTokens: ev.GetOutputTokens(), Cost: ev.GetCost(),
		RequestBytes: ev.GetRequestBytes(), ResponseBytes: ev.GetResponseBytes(),
		Status: uint16(min(max(ev.GetStatus(), 0), 65535)), LatencyUS: ev.GetLatencyUs(),
		Streamed: ev.GetStreamed(), Estimated: ev.GetEstimated(),
	}
	var meta *jetstream.MsgMetadata
	if ev.GetOccurredAt() == nil || e.EdgeInstance == "" {
		var err error
		if meta, err = m.Metadata(); err != nil {
			return usagestore.Event{}, fmt.Errorf("message metadata: %w", err)
		}
	}
	if ev.GetOccurredAt() != nil {
		e.OccurredAt = ev.GetOccurredAt().AsTime()
	} else {
		e.OccurredAt = meta.Timestamp.UTC()
	}
	if e.EdgeInstance == "" {
		// Edges always stamp an identity; without one, the message's own
		// place in the stream is the best there is (it still makes reading
		// that message again harmless).
		e.EdgeInstance, e.Sequence = "stream:"+bus.UsageStream, meta.Sequence.Stream
	}
	return e, nil
}

func randomSuffix() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
