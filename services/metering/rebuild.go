package metering

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/pgdb"
	"github.com/tollgate/tollgate/services/metering/internal/keyhistory"
	"github.com/tollgate/tollgate/services/metering/internal/store"
)

// RebuildReport is what a rebuild found.
type RebuildReport struct {
	Schema      string
	Events      int
	Keys        int
	Differences []string
}

// Rebuild recomputes every balance from the streams into a fresh schema,
// with the same fold as the live worker, and compares the result with the
// live balances. The live schema is not touched. It covers what the USAGE
// stream still holds (its retention bounds how far back a rebuild can go).
func Rebuild(ctx context.Context, cfg Config, log *slog.Logger, out io.Writer) (RebuildReport, error) {
	rep := RebuildReport{Schema: fmt.Sprintf("metering_rebuild_%d", time.Now().UnixNano())}
	nc, err := bus.Connect(cfg.NATSURL, "tollgate-metering-rebuild", log)
	if err != nil {
		return rep, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return rep, err
	}
	live, err := pgdb.Open(ctx, cfg.PostgresDSN)
	if err != nil {
		return rep, err
	}
	defer live.Close()
	if _, err := live.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{rep.Schema}.Sanitize()); err != nil {
		return rep, fmt.Errorf("create schema: %w", err)
	}
	pool, err := openSchema(ctx, cfg.PostgresDSN, rep.Schema)
	if err != nil {
		return rep, err
	}
	defer pool.Close()
	if err := store.Migrate(ctx, pool); err != nil {
		return rep, err
	}
	keysStream, err := ensure(ctx, js, cfg.StreamReplicas)
	if err != nil {
		return rep, err
	}
	keys := keyhistory.New(log)
	kctx, stopKeys := context.WithCancel(ctx)
	defer stopKeys()
	go keys.Run(kctx, js) //nolint:errcheck // ends with kctx
	if err := keys.CatchUp(ctx, keysStream); err != nil {
		return rep, err
	}
	f := &folder{pool: pool, keys: keys, now: time.Now}

	usage, err := js.Stream(ctx, bus.UsageStream)
	if err != nil {
		return rep, err
	}
	info, err := usage.Info(ctx)
	if err != nil {
		return rep, err
	}
	if info.State.Msgs > 0 {
		cons, err := js.OrderedConsumer(ctx, bus.UsageStream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
		if err != nil {
			return rep, err
		}
		var last uint64
		for last < info.State.LastSeq {
			msgs, err := cons.Fetch(cfg.BatchSize, jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				return rep, err
			}
			var evs []*eventsv1.UsageEvent
			positions := map[int]uint64{}
			for m := range msgs.Messages() {
				md, _ := m.Metadata()
				last = md.Sequence.Stream
				if p, ok := partitionOf(m.Subject()); ok {
					positions[p] = last
				}
				ev := new(eventsv1.UsageEvent)
				if proto.Unmarshal(m.Data(), ev) == nil && ev.GetEdgeInstance() != "" {
					evs = append(evs, ev)
				}
			}
			if len(evs) == 0 && msgs.Error() != nil {
				return rep, msgs.Error()
			}
			if _, err := f.foldBatch(ctx, evs, positions); err != nil {
				return rep, err
			}
			rep.Events += len(evs)
		}
	}
	rep.Differences, rep.Keys, err = compare(ctx, live, pool)
	if err != nil {
		return rep, err
	}
	fmt.Fprintf(out, "rebuilt %d keys from %d usage events into schema %s\n", rep.Keys, rep.Events, rep.Schema)
	if len(rep.Differences) == 0 {
		fmt.Fprintln(out, "no differences from the live balances")
	}
	for _, d := range rep.Differences {
		fmt.Fprintln(out, "difference:", d)
	}
	return rep, nil
}

// compare lists the keys whose balances differ between two schemas, ignoring
// when they were written and which edge progress was attached.
func compare(ctx context.Context, live, rebuilt interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) ([]string, int, error) {
	a, err := loadAll(ctx, live)
	if err != nil {
		return nil, 0, err
	}
	b, err := loadAll(ctx, rebuilt)
	if err != nil {
		return nil, 0, err
	}
	var diffs []string
	for id, kb := range b {
		la, ok := a[id]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s: in the rebuild (cost %d) but not live", id, kb.GetCost()))
		case !proto.Equal(la, kb):
			diffs = append(diffs, fmt.Sprintf("%s: live requests %d cost %d, rebuilt requests %d cost %d (%v vs %v)",
				id, la.GetRequests(), la.GetCost(), kb.GetRequests(), kb.GetCost(), la.GetLimits(), kb.GetLimits()))
		}
	}
	for id, kb := range a {
		if _, ok := b[id]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: live (cost %d) but not in the rebuild", id, kb.GetCost()))
		}
	}
	sort.Strings(diffs)
	return diffs, len(b), nil
}

func loadAll(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) (map[string]*eventsv1.KeyBalance, error) {
	rows, err := q.Query(ctx, `SELECT key_id, balance FROM metering_balances`)
	if err != nil {
		return nil, err
	}
	out := map[string]*eventsv1.KeyBalance{}
	for rows.Next() {
		var id string
		var data []byte
		if err := rows.Scan(&id, &data); err != nil {
			return nil, err
		}
		kb := new(eventsv1.KeyBalance)
		if err := proto.Unmarshal(data, kb); err != nil {
			return nil, err
		}
		kb.UpdatedAt, kb.Folded = nil, nil
		out[id] = kb
	}
	return out, rows.Err()
}
