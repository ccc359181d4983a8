package usagestore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Row is one group of a usage report. Only the columns of the query's
// dimensions are set.
type Row struct {
	KeyID, Model, Service string
	// Bucket is the start of the hour or day (UTC) for time series.
	Bucket       time.Time
	Requests     int64
	InputTokens  int64
	OutputTokens int64
	Cost         int64 // nano-dollars
	// Latency is set when the query asked for it.
	Latency *Latency
}

// Latency percentiles in microseconds. ClickHouse's quantiles sample at
// most 8192 values per group, so for larger groups they are estimates.
type Latency struct {
	P50, P95, P99 float64
}

// ErrTooManyRows means a report would have more than MaxRows rows.
var ErrTooManyRows = fmt.Errorf("the report has more than %d rows: narrow the time range or the filters, or group by fewer columns", MaxRows)

// Reader answers usage queries.
type Reader struct {
	conn    driver.Conn
	timeout time.Duration
}

// NewReader returns a Reader whose queries each take at most timeout
// (DefaultTimeout when zero).
func NewReader(conn driver.Conn, timeout time.Duration) *Reader {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Reader{conn: conn, timeout: timeout}
}

// Usage runs q.
func (r *Reader) Usage(ctx context.Context, q Query) ([]Row, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := withTimeout(ctx, r.timeout)
	defer cancel()
	st := q.UsageSQL()
	rows, err := r.conn.Query(ctx, st.SQL, st.Args...)
	if err != nil {
		return nil, fmt.Errorf("usage query: %w", err)
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		var row Row
		dest := dimDest(q.GroupBy, &row)
		dest = append(dest, &row.Requests, &row.InputTokens, &row.OutputTokens, &row.Cost)
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("usage query: %w", err)
		}
		row.Bucket = row.Bucket.UTC()
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("usage query: %w", err)
	}
	if !q.TopByCost && len(out) > MaxRows {
		return nil, ErrTooManyRows
	}
	if len(q.GroupBy) == 0 && len(out) == 1 && out[0].Requests == 0 {
		out = nil // sum() over nothing is one row of zeros: no usage
	}
	if q.Latency && len(out) > 0 {
		if err := r.addLatency(ctx, q, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// addLatency fills in the rows' latency percentiles.
func (r *Reader) addLatency(ctx context.Context, q Query, out []Row) error {
	if q.TopByCost && slices.Equal(q.GroupBy, []Dimension{ByKey}) {
		// Only the top keys' events need reading.
		q.Keys = make([]string, len(out))
		for i := range out {
			q.Keys[i] = out[i].KeyID
		}
	}
	st := q.LatencySQL()
	rows, err := r.conn.Query(ctx, st.SQL, st.Args...)
	if err != nil {
		return fmt.Errorf("latency query: %w", err)
	}
	defer rows.Close()
	byGroup := make(map[Row]*Row, len(out))
	for i := range out {
		byGroup[groupOf(out[i])] = &out[i]
	}
	for rows.Next() {
		var row Row
		var qs []float64
		dest := append(dimDest(q.GroupBy, &row), &qs)
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("latency query: %w", err)
		}
		row.Bucket = row.Bucket.UTC()
		if len(qs) != 3 {
			return errors.New("latency query: want 3 quantiles")
		}
		if target, ok := byGroup[groupOf(row)]; ok {
			target.Latency = &Latency{P50: qs[0], P95: qs[1], P99: qs[2]}
		}
	}
	return rows.Err()
}

// groupOf is a row's group key: its dimension columns only.
func groupOf(r Row) Row {
	return Row{KeyID: r.KeyID, Model: r.Model, Service: r.Service, Bucket: r.Bucket}
}

func dimDest(dims []Dimension, row *Row) []any {
	dest := make([]any, 0, len(dims)+5)
	for _, d := range dims {
		switch d {
		case ByKey:
			dest = append(dest, &row.KeyID)
		case ByModel:
			dest = append(dest, &row.Model)
		case ByService:
			dest = append(dest, &row.Service)
		case ByHour, ByDay:
			dest = append(dest, &row.Bucket)
		}
	}
	return dest
}
