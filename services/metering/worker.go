package metering

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/services/metering/internal/fold"
	"github.com/tollgate/tollgate/services/metering/internal/keyhistory"
	"github.com/tollgate/tollgate/services/metering/internal/store"
)

// folder folds batches of usage events into PostgreSQL. It is shared by the
// live worker and the rebuild, so both give the same numbers.
type folder struct {
	pool *pgxpool.Pool
	keys *keyhistory.Keys
	now  func() time.Time
}

// result is what a committed fold changed.
type result struct {
	balances []*eventsv1.KeyBalance
	alerts   []*eventsv1.Alert
	folded   int
	dupes    int
}

// foldBatch folds events in one transaction: it locks the progress of their
// (edge, partition)s and the balances of their keys, skips every event the
// progress says was folded before (a redelivery, a replayed spool, a
// duplicate in the batch), applies the rest in order and writes everything
// back, with the alerts to publish, before COMMIT. Nothing is acknowledged
// to the bus before this returns.
func (f *folder) foldBatch(ctx context.Context, evs []*eventsv1.UsageEvent, positions map[int]uint64) (result, error) {
	var res result
	parts := map[store.EdgePart]bool{}
	keySet := map[string]*eventsv1.UsageEvent{}
	for _, ev := range evs {
		parts[store.EdgePart{Edge: ev.GetEdgeInstance(), Partition: int32(ev.GetPartition())}] = true
		keySet[ev.GetKeyId()] = ev
	}
	partList := make([]store.EdgePart, 0, len(parts))
	for p := range parts {
		partList = append(partList, p)
	}
	keyIDs := make([]string, 0, len(keySet))
	for id := range keySet {
		keyIDs = append(keyIDs, id)
	}
	err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
		progress, err := store.LoadProgress(ctx, tx, partList)
		if err != nil {
			return err
		}
		bals, err := store.LoadBalances(ctx, tx, keyIDs)
		if err != nil {
			return err
		}
		res = result{}
		touched := map[string]bool{}
		var alerts []fold.Alert
		for _, ev := range evs {
			p := progress[store.EdgePart{Edge: ev.GetEdgeInstance(), Partition: int32(ev.GetPartition())}]
			if !p.Add(ev.GetSequence()) {
				res.dupes++
				continue
			}
			h, _ := f.keys.History(ev.GetKeyId())
			alerts = append(alerts, fold.Apply(bals[ev.GetKeyId()], h, ev)...)
			touched[ev.GetKeyId()] = true
			res.folded++
		}
		if err := store.SavePositions(ctx, tx, positions); err != nil {
			return err
		}
		if res.folded == 0 {
			return nil
		}
		now := f.now()
		for id := range touched {
			ev := keySet[id]
			kb := store.ToProto(bals[id], ev.GetAccount(), ev.GetPartition(), now)
			kb.Folded = foldedProgress(bals[id].Folded, progress, ev.GetPartition(), now)
			res.balances = append(res.balances, kb)
		}
		if err := store.SaveBalances(ctx, tx, res.balances); err != nil {
			return err
		}
		if err := store.SaveProgress(ctx, tx, progress); err != nil {
			return err
		}
		b := &pgx.Batch{}
		for _, a := range alerts {
			msg := alertProto(a)
			data, err := proto.Marshal(msg)
			if err != nil {
				return err
			}
			store.QueueAlert(b, a.ID, bus.AlertSubject(a.Account, a.KeyID), data)
			res.alerts = append(res.alerts, msg)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return result{}, fmt.Errorf("fold %d events: %w", len(evs), err)
	}
	return res, nil
}

// carryProgressFor is how long an edge's progress stays in a key's balances
// after the edge's last event of the partition was folded with the key. An
// edge subtracts its spend that a balance does not include yet, judged by its
// progress in the balance; a balance without it would make an edge that
// missed the one before (a lost publication, a watch restarted after a NATS
// blip, which sees only the latest) subtract folded spend again, refusing
// the key early until its own next event is folded. An hour is far beyond
// any fold lag: by then every edge has seen a balance that names it, or has
// restarted under a new instance.
const carryProgressFor = time.Hour

// foldedProgress is the Folded list of a balance folded now: the progress of
// the batch's edges of the key's partition, and the earlier balance's
// entries of other edges younger than carryProgressFor.
func foldedProgress(earlier []*eventsv1.EdgeProgress, progress map[store.EdgePart]*fold.Progress, partition uint32, now time.Time) []*eventsv1.EdgeProgress {
	var out []*eventsv1.EdgeProgress
	inBatch := map[string]bool{}
	for ep, p := range progress {
		if uint32(ep.Partition) == partition {
			out = append(out, &eventsv1.EdgeProgress{EdgeInstance: ep.Edge, Watermark: p.Watermark, Above: p.Above, At: timestamppb.New(now)})
			inBatch[ep.Edge] = true
		}
	}
	for _, f := range earlier {
		if !inBatch[f.GetEdgeInstance()] && now.Sub(f.GetAt().AsTime()) < carryProgressFor {
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetEdgeInstance() < out[j].GetEdgeInstance() })
	return out
}

func alertProto(a fold.Alert) *eventsv1.Alert {
	return &eventsv1.Alert{AlertId: a.ID, OccurredAt: timestamppb.New(a.At), SchemaVersion: 1, KeyId: a.KeyID, Account: a.Account,
		Metric: a.Limit.Metric, Interval: a.Limit.Interval, Window: a.Limit.Window, ThresholdPpm: a.Threshold,
		Exhausted: a.Exhausted, Used: a.Used, Amount: a.Amount}
}

// worker is one metering process: it consumes its partitions, folds, acks
// after commit, and publishes balances and alerts.
type worker struct {
	cfg        Config
	log        *slog.Logger
	js         jetstream.JetStream
	folder     *folder
	keysStream jetstream.Stream
	lag        func(time.Duration) // observes fold lag (event time to commit), for tests
	metrics    *metrics
}

// run folds the worker's partitions until ctx ends. Each partition is read
// with an ordered consumer from the position committed with the last fold,
// so events are folded in stream order (the order a rebuild uses), a restart
// resumes right after the last commit, and nothing waits for redelivery.
func (w *worker) run(ctx context.Context) error {
	owned := w.cfg.owned()
	pos, err := store.Positions(ctx, w.folder.pool, owned)
	if err != nil {
		return err
	}
	in := make(chan jetstream.Msg, 4*w.cfg.BatchSize)
	for _, p := range owned {
		cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.UsageSubjectPrefix + strconv.Itoa(p) + ".>"}, DeliverPolicy: jetstream.DeliverAllPolicy}
		if pos[p] > 0 {
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, pos[p]+1
		}
		cons, err := w.js.OrderedConsumer(ctx, bus.UsageStream, cfg)
		if err != nil {
			return fmt.Errorf("consume partition %d: %w", p, err)
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(w.cfg.BatchSize))
		if err != nil {
			return fmt.Errorf("consume partition %d: %w", p, err)
		}
		defer it.Stop()
		stop := context.AfterFunc(ctx, it.Stop)
		defer stop()
		go func() {
			for {
				m, err := it.Next()
				if err != nil {
					if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
						return
					}
					continue
				}
				select {
				case in <- m:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	w.log.Info("metering worker started", "partitions", owned)
	batch := make([]jetstream.Msg, 0, w.cfg.BatchSize)
	for {
		batch = batch[:0]
		select {
		case m := <-in:
			batch = append(batch, m)
		case <-ctx.Done():
			return nil
		}
		deadline := time.After(w.cfg.BatchDelay)
	fill:
		for len(batch) < w.cfg.BatchSize {
			select {
			case m := <-in:
				batch = append(batch, m)
			case <-deadline:
				break fill
			}
		}
		// A failed fold is retried with the same messages, in the same
		// order: nothing after them is folded first.
		for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
			err := w.process(ctx, batch)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			w.log.Error("fold failed; retrying the batch", "err", err, "events", len(batch), "in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
		}
	}
}

func (w *worker) process(ctx context.Context, batch []jetstream.Msg) error {
	evs := make([]*eventsv1.UsageEvent, 0, len(batch))
	positions := map[int]uint64{}
	for _, m := range batch {
		if md, err := m.Metadata(); err == nil {
			if p, ok := partitionOf(m.Subject()); ok && md.Sequence.Stream > positions[p] {
				positions[p] = md.Sequence.Stream
			}
		}
		ev := new(eventsv1.UsageEvent)
		if err := proto.Unmarshal(m.Data(), ev); err != nil || ev.GetEdgeInstance() == "" {
			w.log.Error("metering: undecodable usage event skipped", "subject", m.Subject(), "err", err)
			continue
		}
		evs = append(evs, ev)
	}
	// No event is folded with a key configuration older than one appended.
	if err := w.folder.keys.CatchUp(ctx, w.keysStream); err != nil {
		return err
	}
	began := time.Now()
	res, err := w.folder.foldBatch(ctx, evs, positions)
	if err != nil {
		return err
	}
	if m := w.metrics; m != nil {
		m.batchDur.Observe(time.Since(began).Seconds())
		m.folded.Add(float64(res.folded))
		m.dupes.Add(float64(res.dupes))
		m.alerts.Add(float64(len(res.alerts)))
	}
	now := time.Now()
	for _, ev := range evs {
		lag := now.Sub(ev.GetOccurredAt().AsTime())
		if w.lag != nil {
			w.lag(lag)
		}
		if w.metrics != nil {
			w.metrics.lag.Observe(lag.Seconds())
		}
	}
	w.publish(ctx, res)
	return nil
}

// partitionOf reads the partition from tollgate.usage.<partition>.<account>.<key>.
func partitionOf(subject string) (int, bool) {
	rest, ok := strings.CutPrefix(subject, bus.UsageSubjectPrefix)
	if !ok {
		return 0, false
	}
	p, _, _ := strings.Cut(rest, ".")
	n, err := strconv.Atoi(p)
	return n, err == nil
}

// publish sends the touched balances to BALANCES and flushes the alert
// outbox. Both are derived from committed state: a lost balance is
// replaced by the next fold of the key, and alerts stay in the outbox until
// the bus has them.
func (w *worker) publish(ctx context.Context, res result) {
	var futures []jetstream.PubAckFuture
	for _, kb := range res.balances {
		data, err := proto.Marshal(kb)
		if err != nil {
			continue
		}
		f, err := w.js.PublishMsgAsync(&nats.Msg{Subject: "$KV." + bus.BalancesBucket + "." + kb.GetKeyId(), Data: data})
		if err == nil {
			futures = append(futures, f)
		}
	}
	if len(res.alerts) > 0 {
		if err := flushOutbox(ctx, w.folder.pool, w.js); err != nil {
			w.log.Warn("alerts stay in the outbox for now", "err", err)
		}
	}
	timeout := time.After(5 * time.Second)
	for _, f := range futures {
		select {
		case <-f.Ok():
		case <-f.Err():
		case <-timeout:
			return
		}
	}
}

// flushOutbox publishes pending alerts with their id as message id (the
// stream drops a duplicate within its window, the notifier by id) and
// deletes those the bus acknowledged.
func flushOutbox(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream) error {
	rows, err := pool.Query(ctx, `SELECT id, subject, payload FROM metering_alert_outbox ORDER BY id LIMIT 1000`)
	if err != nil {
		return err
	}
	type pending struct {
		id, subject string
		payload     []byte
	}
	var ps []pending
	for rows.Next() {
		var p pending
		if err := rows.Scan(&p.id, &p.subject, &p.payload); err != nil {
			return err
		}
		ps = append(ps, p)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	var done []string
	for _, p := range ps {
		if _, err := js.Publish(ctx, p.subject, p.payload, jetstream.WithMsgID(p.id)); err != nil {
			break
		}
		done = append(done, p.id)
	}
	if len(done) > 0 {
		if _, err := pool.Exec(ctx, `DELETE FROM metering_alert_outbox WHERE id = ANY($1)`, done); err != nil {
			return err
		}
	}
	return nil
}
