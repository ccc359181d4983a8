// Package store keeps metering's state in PostgreSQL: progress per (edge,
// partition), balances per key and the alert outbox, all written in the
// fold's one transaction.
package store

import (
	"context"
	"embed"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/limits"
	"github.com/tollgate/tollgate/pkg/pgdb"
	"github.com/tollgate/tollgate/services/metering/internal/fold"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate brings metering's schema up to date (in the pool's search_path).
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pgdb.Migrate(ctx, pool, "metering", migrations, "migrations")
}

// EdgePart names one (edge instance, partition).
type EdgePart struct {
	Edge      string
	Partition int32
}

// LoadProgress locks and reads the progress of the given (edge, partition)s.
func LoadProgress(ctx context.Context, tx pgx.Tx, parts []EdgePart) (map[EdgePart]*fold.Progress, error) {
	edges := make([]string, len(parts))
	ps := make([]int32, len(parts))
	for i, p := range parts {
		edges[i], ps[i] = p.Edge, p.Partition
	}
	rows, err := tx.Query(ctx, `SELECT p.edge, p.partition, p.watermark, p.above FROM metering_progress p
		JOIN unnest($1::text[], $2::int[]) AS want(edge, partition) USING (edge, partition)
		ORDER BY p.edge, p.partition FOR UPDATE OF p`, edges, ps)
	if err != nil {
		return nil, fmt.Errorf("load progress: %w", err)
	}
	out := make(map[EdgePart]*fold.Progress, len(parts))
	for rows.Next() {
		var ep EdgePart
		var wm int64
		var above []int64
		if err := rows.Scan(&ep.Edge, &ep.Partition, &wm, &above); err != nil {
			return nil, fmt.Errorf("load progress: %w", err)
		}
		p := &fold.Progress{Watermark: uint64(wm)}
		for _, a := range above {
			p.Above = append(p.Above, uint64(a))
		}
		out[ep] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load progress: %w", err)
	}
	for _, p := range parts {
		if out[p] == nil {
			out[p] = &fold.Progress{}
		}
	}
	return out, nil
}

// SaveProgress writes progress rows.
func SaveProgress(ctx context.Context, tx pgx.Tx, progress map[EdgePart]*fold.Progress) error {
	b := &pgx.Batch{}
	for ep, p := range progress {
		above := make([]int64, len(p.Above))
		for i, a := range p.Above {
			above[i] = int64(a)
		}
		b.Queue(`INSERT INTO metering_progress (edge, partition, watermark, above) VALUES ($1, $2, $3, $4)
			ON CONFLICT (edge, partition) DO UPDATE SET watermark = EXCLUDED.watermark, above = EXCLUDED.above`,
			ep.Edge, ep.Partition, int64(p.Watermark), above)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("save progress: %w", err)
	}
	return nil
}

// LoadBalances locks and reads the balances of keys (new keys get empty ones).
func LoadBalances(ctx context.Context, tx pgx.Tx, keyIDs []string) (map[string]*fold.Balance, error) {
	rows, err := tx.Query(ctx, `SELECT key_id, balance FROM metering_balances WHERE key_id = ANY($1) ORDER BY key_id FOR UPDATE`, keyIDs)
	if err != nil {
		return nil, fmt.Errorf("load balances: %w", err)
	}
	out := make(map[string]*fold.Balance, len(keyIDs))
	for rows.Next() {
		var id string
		var data []byte
		if err := rows.Scan(&id, &data); err != nil {
			return nil, fmt.Errorf("load balances: %w", err)
		}
		kb := new(eventsv1.KeyBalance)
		if err := proto.Unmarshal(data, kb); err != nil {
			return nil, fmt.Errorf("load balance of %s: %w", id, err)
		}
		out[id] = FromProto(kb)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load balances: %w", err)
	}
	for _, id := range keyIDs {
		if out[id] == nil {
			out[id] = fold.NewBalance(id)
		}
	}
	return out, nil
}

// SaveBalances writes balances; account and partition describe each key.
func SaveBalances(ctx context.Context, tx pgx.Tx, bals []*eventsv1.KeyBalance) error {
	b := &pgx.Batch{}
	for _, kb := range bals {
		data, err := proto.Marshal(kb)
		if err != nil {
			return err
		}
		b.Queue(`INSERT INTO metering_balances (key_id, account, partition, balance, requests, cost, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (key_id) DO UPDATE SET balance = EXCLUDED.balance, requests = EXCLUDED.requests,
				cost = EXCLUDED.cost, updated_at = EXCLUDED.updated_at`,
			kb.GetKeyId(), kb.GetAccount(), int32(kb.GetPartition()), data, kb.GetRequests(), kb.GetCost(), kb.GetUpdatedAt().AsTime())
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("save balances: %w", err)
	}
	return nil
}

// Balance reads one key's balance without locking (for GetBalances).
func Balance(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, keyID string) (*eventsv1.KeyBalance, error) {
	var data []byte
	err := q.QueryRow(ctx, `SELECT balance FROM metering_balances WHERE key_id = $1`, keyID).Scan(&data)
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read balance of %s: %w", keyID, err)
	}
	kb := new(eventsv1.KeyBalance)
	return kb, proto.Unmarshal(data, kb)
}

// ToProto turns a folded balance into its stored and published form.
func ToProto(b *fold.Balance, account string, partition uint32, now time.Time) *eventsv1.KeyBalance {
	kb := &eventsv1.KeyBalance{KeyId: b.KeyID, Account: account, ConfigRev: b.ConfigRev, Requests: b.Requests,
		InputTokens: b.Input, OutputTokens: b.Output, Cost: b.Cost, Partition: partition, UpdatedAt: timestamppb.New(now)}
	for id, st := range b.States {
		m := b.Marks[id]
		kb.Limits = append(kb.Limits, &eventsv1.LimitBalance{Metric: id.Metric, Interval: id.Interval, Level: st.Level, Used: st.Used,
			At: timestamppb.New(st.At), AlertWindow: m.Window, AlertedPpm: m.Threshold, ExhaustedAlerted: m.Exhausted})
	}
	sortLimits(kb.Limits)
	return kb
}

// FromProto is ToProto's inverse.
func FromProto(kb *eventsv1.KeyBalance) *fold.Balance {
	b := fold.NewBalance(kb.GetKeyId())
	b.ConfigRev, b.Requests, b.Input, b.Output, b.Cost = kb.GetConfigRev(), kb.GetRequests(), kb.GetInputTokens(), kb.GetOutputTokens(), kb.GetCost()
	b.Folded = kb.GetFolded()
	for _, l := range kb.GetLimits() {
		id := limits.ID{Metric: l.GetMetric(), Interval: l.GetInterval()}
		b.States[id] = limits.State{Level: l.GetLevel(), Used: l.GetUsed(), At: l.GetAt().AsTime()}
		b.Marks[id] = fold.Mark{Window: l.GetAlertWindow(), Threshold: l.GetAlertedPpm(), Exhausted: l.GetExhaustedAlerted()}
	}
	return b
}

func sortLimits(ls []*eventsv1.LimitBalance) {
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && less(ls[j], ls[j-1]); j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
}

func less(a, b *eventsv1.LimitBalance) bool {
	if a.GetMetric() != b.GetMetric() {
		return a.GetMetric() < b.GetMetric()
	}
	return a.GetInterval() < b.GetInterval()
}

// QueueAlert adds an alert to the outbox in the fold's transaction.
func QueueAlert(b *pgx.Batch, id, subject string, payload []byte) {
	b.Queue(`INSERT INTO metering_alert_outbox (id, subject, payload) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING`, id, subject, payload)
}

// Positions reads the stream position of partitions (0: nothing folded).
func Positions(ctx context.Context, pool *pgxpool.Pool, parts []int) (map[int]uint64, error) {
	ps := make([]int32, len(parts))
	for i, p := range parts {
		ps[i] = int32(p)
	}
	rows, err := pool.Query(ctx, `SELECT partition, stream_seq FROM metering_positions WHERE partition = ANY($1)`, ps)
	if err != nil {
		return nil, fmt.Errorf("read positions: %w", err)
	}
	out := map[int]uint64{}
	for rows.Next() {
		var p int32
		var seq int64
		if err := rows.Scan(&p, &seq); err != nil {
			return nil, fmt.Errorf("read positions: %w", err)
		}
		out[int(p)] = uint64(seq)
	}
	return out, rows.Err()
}

// SavePositions moves partitions' positions forward (never back).
func SavePositions(ctx context.Context, tx pgx.Tx, pos map[int]uint64) error {
	b := &pgx.Batch{}
	for p, seq := range pos {
		b.Queue(`INSERT INTO metering_positions (partition, stream_seq) VALUES ($1, $2)
			ON CONFLICT (partition) DO UPDATE SET stream_seq = GREATEST(metering_positions.stream_seq, EXCLUDED.stream_seq)`, int32(p), int64(seq))
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("save positions: %w", err)
	}
	return nil
}
