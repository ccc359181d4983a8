package sink

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/usagestore"
)

// recoverLast repairs the consumer's last recorded batch, whose outcome an
// earlier run may not have learnt, and returns the stream sequence to read
// on from.
func (s *Sink) recoverLast(ctx context.Context) (uint64, error) {
	last, ok, err := s.w.LastBatch(ctx)
	if err != nil {
		return 0, err
	}
	if !ok {
		s.nextID = 1
		return 1, nil
	}
	s.nextID = last.ID + 1
	if last.Events == 0 {
		// Nothing of that batch was new: nothing was written for it.
		return last.SeqTo + 1, nil
	}
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read %s state: %w", bus.UsageStream, err)
	}
	if info.State.LastSeq < last.SeqTo {
		// The stream is younger than our position: it was deleted and
		// created again. Read it all; what is stored already is skipped.
		s.log.Warn("the USAGE stream ends before the sink's position: it was recreated; reading it from the start",
			"position", last.SeqTo, "stream_last_seq", info.State.LastSeq)
		return 1, nil
	}
	msgs, err := s.fetchRange(ctx, last.SeqFrom, last.SeqTo)
	if err != nil {
		return 0, err
	}
	if err := s.repairOnce(ctx, last, s.decode(msgs).events); err != nil {
		return 0, err
	}
	return last.SeqTo + 1, nil
}

// repairOnce is one attempt of a startup repair (recoverLast is retried as
// a whole).
func (s *Sink) repairOnce(ctx context.Context, b usagestore.Batch, evs []usagestore.Event) error {
	res, err := s.w.Repair(ctx, evs)
	if err != nil {
		return err
	}
	s.stats.Repairs.Add(1)
	s.log.Info("last batch of the previous run checked", "batch", b.ID, "seq_from", b.SeqFrom, "seq_to", b.SeqTo,
		"events", len(evs), "inserted", res.Inserted, "rollup_groups_corrected", res.Corrected)
	return nil
}

// fetchRange reads the stream's usage messages from..to again (those still
// there: limits may have removed old ones).
func (s *Sink) fetchRange(ctx context.Context, from, to uint64) ([]jetstream.Msg, error) {
	cons, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.UsageSubjectPrefix + ">"},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
		NamePrefix:     s.cfg.Consumer + "-recover-" + randomSuffix(),
	})
	if err != nil {
		return nil, fmt.Errorf("read back batch %d..%d: %w", from, to, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(min(int(to-from+1), 10_000)))
	if err != nil {
		return nil, fmt.Errorf("read back batch %d..%d: %w", from, to, err)
	}
	defer it.Stop()
	var msgs []jetstream.Msg
	for {
		msg, err := it.Next(jetstream.NextMaxWait(s.cfg.WriteTimeout))
		if errors.Is(err, nats.ErrTimeout) {
			// Nothing more arrives: the rest of the range is gone (or the
			// bus is away, in which case the caller retries).
			info, ierr := s.stream.Info(ctx)
			if ierr != nil {
				return nil, fmt.Errorf("read back batch %d..%d: %w", from, to, ierr)
			}
			if info.State.LastSeq <= lastSeq(msgs) {
				return msgs, nil
			}
			return nil, fmt.Errorf("read back batch %d..%d: no message after %d", from, to, lastSeq(msgs))
		}
		if err != nil {
			return nil, fmt.Errorf("read back batch %d..%d: %w", from, to, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("read back batch %d..%d: %w", from, to, err)
		}
		if meta.Sequence.Stream > to {
			return msgs, nil
		}
		msgs = append(msgs, msg)
		if meta.Sequence.Stream == to {
			return msgs, nil
		}
	}
}

func lastSeq(msgs []jetstream.Msg) uint64 {
	if len(msgs) == 0 {
		return 0
	}
	meta, err := msgs[len(msgs)-1].Metadata()
	if err != nil {
		return 0
	}
	return meta.Sequence.Stream
}
