package usagestore

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// RepairResult says what a repair found wrong and put right.
type RepairResult struct {
	// Inserted counts events that were missing from usage_events.
	Inserted int
	// Corrected counts rollup groups whose sums were off.
	Corrected int
}

// longQuery lets a statement name tens of thousands of accounts, keys and
// identity ranges (a batch from many edges, each numbering 16 partitions):
// by default ClickHouse parses at most 256 KiB of SQL into at most 50,000
// syntax tree elements.
var longQuery = clickhouse.Settings{"max_query_size": 64 << 20, "max_ast_elements": 5_000_000, "max_expanded_ast_elements": 5_000_000}

// Repair brings the database to "each of events is stored exactly once",
// whatever earlier attempts to write them did: nothing, everything, or part
// (an INSERT writes one part per day, then the materialized view writes the
// rollup, each on its own, so a crash, a server error or a lost connection
// can leave any subset, and the client may not learn which). It is the other half of the sink's exactly-once protocol: the
// sink calls it for a batch whose insert failed, and at start for its last
// recorded batch, whose outcome it cannot know.
//
// Each step compares with what is in the database and writes only the
// difference, so Repair may itself fail at any point and be run again:
//  1. wait until no statement of this consumer is running (an abandoned
//     INSERT may still be writing, and would be counted after the repair);
//  2. insert the events that usage_events lacks (usage_events is the truth);
//  3. for every rollup group the events touch, insert the difference between
//     what usage_events sums to and what usage_hourly holds. SummingMergeTree
//     adds the correction in, whether the view wrote the group zero, one or
//     two times.
//
// events must hold no identity twice. Only one sink may write a consumer's
// events at a time (step 4 assumes nobody else is writing those groups).
func (w *Writer) Repair(ctx context.Context, events []Event) (RepairResult, error) {
	var res RepairResult
	if len(events) == 0 {
		return res, nil
	}
	if err := w.waitIdle(ctx); err != nil {
		return res, err
	}
	present, err := w.stored(ctx, "present", events)
	if err != nil {
		return res, fmt.Errorf("repair: %w", err)
	}
	var missing []Event
	for _, e := range events {
		if !present[e.ID()] {
			missing = append(missing, e)
		}
	}
	if err := w.Insert(ctx, missing); err != nil {
		return res, fmt.Errorf("repair: %w", err)
	}
	res.Inserted = len(missing)
	if res.Corrected, err = w.reconcileRollup(ctx, events); err != nil {
		return res, err
	}
	return res, nil
}

// waitIdle waits, after a short settling time for statements still on their
// way to the server, until no statement of this consumer's writers runs.
func (w *Writer) waitIdle(ctx context.Context) error {
	select {
	case <-time.After(w.settle):
	case <-ctx.Done():
		return ctx.Err()
	}
	deadline := time.Now().Add(w.timeout)
	for {
		qctx, cancel := w.queryCtx(ctx, "idle", nil)
		var n uint64
		err := w.conn.QueryRow(qctx, "SELECT count() FROM system.processes WHERE startsWith(query_id, ?)", w.prefix).Scan(&n)
		cancel()
		if err != nil {
			return fmt.Errorf("repair: list running statements: %w", err)
		}
		// This query is itself in the list.
		if n <= 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("repair: %d statements of consumer %s still running after %s", n-1, w.consumer, w.timeout)
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// scope is the part of the primary key a set of events lies in.
type scope struct {
	accounts, keys []any
	from, to       time.Time // occurred_at, inclusive
	hours          []any
}

func scopeOf(events []Event) scope {
	var s scope
	accounts, keys, hours := map[string]bool{}, map[string]bool{}, map[time.Time]bool{}
	for i, e := range events {
		if !accounts[e.Account] {
			accounts[e.Account] = true
			s.accounts = append(s.accounts, e.Account)
		}
		if !keys[e.KeyID] {
			keys[e.KeyID] = true
			s.keys = append(s.keys, e.KeyID)
		}
		h := e.OccurredAt.UTC().Truncate(time.Hour)
		if !hours[h] {
			hours[h] = true
			s.hours = append(s.hours, h)
		}
		if i == 0 || e.OccurredAt.Before(s.from) {
			s.from = e.OccurredAt
		}
		if i == 0 || e.OccurredAt.After(s.to) {
			s.to = e.OccurredAt
		}
	}
	return s
}

// group is one row of usage_hourly's key.
type group struct {
	account, key, model, service string
	hour                         time.Time
}

// sums are usage_hourly's summed columns.
type sums struct{ requests, in, out, cost int64 }

// reconcileRollup makes usage_hourly sum, for every group that events touch,
// to exactly what usage_events holds for it.
func (w *Writer) reconcileRollup(ctx context.Context, events []Event) (int, error) {
	touched := map[group]bool{}
	for _, e := range events {
		touched[group{e.Account, e.KeyID, e.Model, e.Service, e.OccurredAt.UTC().Truncate(time.Hour)}] = true
	}
	s := scopeOf(events)
	from, to := s.from.UTC().Truncate(time.Hour), s.to.UTC().Truncate(time.Hour).Add(time.Hour)
	truth, err := w.groupSums(ctx, touched, `SELECT account, key_id, model, service, toStartOfHour(occurred_at) AS h,
    toInt64(count()), sum(input_tokens), sum(output_tokens), sum(cost)
FROM usage_events
WHERE account IN ? AND key_id IN ? AND occurred_at >= ? AND occurred_at < ? AND toStartOfHour(occurred_at) IN ?
GROUP BY account, key_id, model, service, h`, s, from, to)
	if err != nil {
		return 0, err
	}
	rolled, err := w.groupSums(ctx, touched, `SELECT account, key_id, model, service, hour,
    sum(requests), sum(input_tokens), sum(output_tokens), sum(cost)
FROM usage_hourly
WHERE account IN ? AND key_id IN ? AND hour >= ? AND hour < ? AND hour IN ?
GROUP BY account, key_id, model, service, hour`, s, from, to)
	if err != nil {
		return 0, err
	}
	var fixes []group
	for g := range touched {
		if truth[g] != rolled[g] {
			fixes = append(fixes, g)
		}
	}
	if len(fixes) == 0 {
		return 0, nil
	}
	ctx, cancel := w.queryCtx(ctx, "reconcile", nil)
	defer cancel()
	batch, err := w.conn.PrepareBatch(ctx, "INSERT INTO usage_hourly (account, hour, key_id, model, service, requests, input_tokens, output_tokens, cost)")
	if err != nil {
		return 0, fmt.Errorf("repair: correct rollup: %w", err)
	}
	defer batch.Abort()
	for _, g := range fixes {
		t, r := truth[g], rolled[g]
		if err := batch.Append(g.account, g.hour, g.key, g.model, g.service,
			t.requests-r.requests, t.in-r.in, t.out-r.out, t.cost-r.cost); err != nil {
			return 0, fmt.Errorf("repair: correct rollup: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return 0, fmt.Errorf("repair: correct %d rollup groups: %w", len(fixes), err)
	}
	return len(fixes), nil
}

// groupSums runs a per-group sums query over scope s and keeps the groups
// in touched.
func (w *Writer) groupSums(ctx context.Context, touched map[group]bool, sql string, s scope, from, to time.Time) (map[group]sums, error) {
	ctx, cancel := w.queryCtx(ctx, "sums", longQuery)
	defer cancel()
	rows, err := w.conn.Query(ctx, sql, clickhouse.GroupSet{Value: s.accounts}, clickhouse.GroupSet{Value: s.keys}, from, to, clickhouse.GroupSet{Value: s.hours})
	if err != nil {
		return nil, fmt.Errorf("repair: sum rollup groups: %w", err)
	}
	defer rows.Close()
	out := map[group]sums{}
	for rows.Next() {
		var g group
		var v sums
		if err := rows.Scan(&g.account, &g.key, &g.model, &g.service, &g.hour, &v.requests, &v.in, &v.out, &v.cost); err != nil {
			return nil, fmt.Errorf("repair: sum rollup groups: %w", err)
		}
		g.hour = g.hour.UTC()
		if touched[g] {
			out[g] = v
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("repair: sum rollup groups: %w", err)
	}
	return out, nil
}
