package sink

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

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

// fetchRange reads the stream's messages from..to again (those still there:
// limits may have removed old ones).
func (s *Sink) fetchRange(ctx context.Context, from, to uint64) ([]*nats.Msg, error) {
	r := s.newReader(from)
	defer r.drop()
	var msgs []*nats.Msg
	for empty := 0; r.next <= to; {
		got, err := r.fetch(ctx, min(int(to-r.next+1), fetchChunk), 2*time.Second)
		if err != nil {
			return nil, fmt.Errorf("read back batch %d..%d: %w", from, to, err)
		}
		for _, m := range got {
			if streamSeq(m) <= to { // the gaps of removed messages are filled from after the range
				msgs = append(msgs, m)
			}
		}
		if len(got) > 0 {
			empty = 0
			continue
		}
		// Nothing came: the rest of the range is gone if the stream ends
		// before it; otherwise the bus is slow, and we ask again.
		info, err := s.stream.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("read back batch %d..%d: %w", from, to, err)
		}
		if info.State.LastSeq < r.next {
			break
		}
		if empty++; empty == 5 {
			return nil, fmt.Errorf("read back batch %d..%d: nothing delivered after %d", from, to, r.next-1)
		}
	}
	return msgs, nil
}
