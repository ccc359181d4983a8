package usagestore

import (
	"context"
	"fmt"
	"time"
)

// Pair is an edge instance's partition: its events are numbered 1, 2, 3, ...
type Pair struct {
	Edge      string
	Partition uint32
}

// Watermarks returns every pair's mark: no stored event of the pair has a
// higher sequence (sink_watermarks, migration 0006). A pair without one has
// no stored event.
func (w *Writer) Watermarks(ctx context.Context) (map[Pair]uint64, error) {
	ctx, cancel := w.queryCtx(ctx, "marks", longQuery)
	defer cancel()
	rows, err := w.conn.Query(ctx, `SELECT edge_instance, usage_partition, max(sequence) FROM sink_watermarks
GROUP BY edge_instance, usage_partition`)
	if err != nil {
		return nil, fmt.Errorf("read watermarks: %w", err)
	}
	defer rows.Close()
	marks := map[Pair]uint64{}
	for rows.Next() {
		var p Pair
		var seq uint64
		if err := rows.Scan(&p.Edge, &p.Partition, &seq); err != nil {
			return nil, fmt.Errorf("read watermarks: %w", err)
		}
		marks[p] = seq
	}
	return marks, rows.Err()
}

// RaiseWatermarks records marks. Call it before inserting events of the
// pairs, with marks at least their sequences: then no stored event is ever
// above its pair's mark. Recording a mark twice, or a lower one, is harmless.
func (w *Writer) RaiseWatermarks(ctx context.Context, marks map[Pair]uint64) error {
	if len(marks) == 0 {
		return nil
	}
	ctx, cancel := w.queryCtx(ctx, "marks", nil)
	defer cancel()
	batch, err := w.conn.PrepareBatch(ctx, "INSERT INTO sink_watermarks (edge_instance, usage_partition, sequence, recorded_at)")
	if err != nil {
		return fmt.Errorf("raise watermarks: %w", err)
	}
	defer batch.Abort()
	n := len(marks)
	edge, part, seq, at := make([]string, 0, n), make([]uint32, 0, n), make([]uint64, 0, n), make([]time.Time, 0, n)
	now := time.Now().UTC().Truncate(time.Second)
	for p, s := range marks {
		edge, part, seq, at = append(edge, p.Edge), append(part, p.Partition), append(seq, s), append(at, now)
	}
	for i, c := range []any{edge, part, seq, at} {
		if err := batch.Column(i).Append(c); err != nil {
			return fmt.Errorf("raise watermarks: column %d: %w", i, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("raise %d watermarks: %w", n, err)
	}
	return nil
}
