package usagestore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Event is one usage event as usage_events stores it.
type Event struct {
	Account       string
	KeyID         string
	OccurredAt    time.Time
	EdgeInstance  string
	Partition     uint32 // the key's usage partition
	Sequence      uint64
	Service       string
	Model         string
	Endpoint      string
	InputTokens   int64
	OutputTokens  int64
	Cost          int64 // nano-dollars
	RequestBytes  int64
	ResponseBytes int64
	Status        uint16
	LatencyUS     int64
	Streamed      bool
	Estimated     bool
}

// ID identifies an event forever: the edge process that served the request,
// the key's usage partition, and the sequence number the edge gave the event
// in that partition.
type ID struct {
	Edge      string
	Partition uint32
	Seq       uint64
}

// ID is the event's identity.
func (e *Event) ID() ID { return ID{Edge: e.EdgeInstance, Partition: e.Partition, Seq: e.Sequence} }

// Batch is what the sink records before it inserts a batch: enough to find
// the batch's events again in the stream (Stream sequences SeqFrom..SeqTo).
type Batch struct {
	Consumer string
	ID       uint64
	SeqFrom  uint64
	SeqTo    uint64
	Events   int
}

// Writer writes usage events for one sink consumer. Its statements carry
// query ids that start with a prefix of the consumer's, so that a repair can
// tell whether a statement of an earlier, interrupted attempt (of this
// process or one that crashed) is still running on the server.
type Writer struct {
	conn     driver.Conn
	consumer string
	prefix   string // of the query ids of every Writer of this consumer
	instance string // of this Writer's query ids
	n        atomic.Uint64
	timeout  time.Duration
	// settle is how long Repair first waits for a statement that the
	// client gave up on but the server may not have seen yet.
	settle time.Duration
}

// WriterOptions tune a Writer; zero values take the defaults.
type WriterOptions struct {
	// Timeout bounds each statement (default DefaultTimeout).
	Timeout time.Duration
	// Settle is how long a repair waits before it looks for statements of
	// earlier attempts still running (default one second).
	Settle time.Duration
}

// NewWriter returns a Writer for consumer.
func NewWriter(conn driver.Conn, consumer string, opt WriterOptions) *Writer {
	var b [4]byte
	rand.Read(b[:])
	w := &Writer{conn: conn, consumer: consumer, prefix: "tollgate-sink:" + consumer + ":",
		timeout: opt.Timeout, settle: opt.Settle}
	w.instance = w.prefix + hex.EncodeToString(b[:]) + ":"
	if w.timeout <= 0 {
		w.timeout = DefaultTimeout
	}
	if w.settle <= 0 {
		w.settle = time.Second
	}
	return w
}

// queryCtx gives a statement its deadline and query id.
func (w *Writer) queryCtx(ctx context.Context, kind string, settings clickhouse.Settings) (context.Context, context.CancelFunc) {
	ctx, cancel := withTimeout(ctx, w.timeout)
	opts := []clickhouse.QueryOption{clickhouse.WithQueryID(w.instance + kind + ":" + strconv.FormatUint(w.n.Add(1), 10))}
	if settings != nil {
		opts = append(opts, clickhouse.WithSettings(settings))
	}
	return clickhouse.Context(ctx, opts...), cancel
}

// eventColumns is the column list of every insert into usage_events, in the
// order insertEvents appends them: 18.16 requires the list.
const eventColumns = `account, key_id, occurred_at, edge_instance, usage_partition, sequence, service, model, endpoint,
    input_tokens, output_tokens, cost, request_bytes, response_bytes, status, latency_us, streamed, estimated`

// Insert writes events into usage_events as one block, so the server writes
// them as one part per day they fall on, and the materialized views write
// the rollup and the identities (usage_seen). An error means the outcome is
// unknown, for each of the three tables: the caller must Repair.
func (w *Writer) Insert(ctx context.Context, events []Event) error {
	for _, chunk := range byDays(events, maxDaysPerInsert) {
		if err := w.insert(ctx, chunk); err != nil {
			return err
		}
	}
	return nil
}

// maxDaysPerInsert keeps an insert under current ClickHouse's limit of 100
// partitions per block (max_partitions_per_insert_block; 18.16 has no such
// setting, so it cannot simply be raised): a batch with events of many days
// (an edge's spool replayed after months) is written in several inserts.
const maxDaysPerInsert = 90

// byDays splits events into groups that each fall on at most n days (the
// partitions of usage_events), in one group when they can.
func byDays(events []Event, n int) [][]Event {
	days := map[int64]int{}
	for _, e := range events {
		days[e.OccurredAt.Unix()/86400]++
	}
	if len(days) <= n {
		return [][]Event{events}
	}
	order := make([]int64, 0, len(days))
	for d := range days {
		order = append(order, d)
	}
	slices.Sort(order)
	chunkOf := map[int64]int{}
	for i, d := range order {
		chunkOf[d] = i / n
	}
	out := make([][]Event, (len(order)+n-1)/n)
	for _, e := range events {
		c := chunkOf[e.OccurredAt.Unix()/86400]
		out[c] = append(out[c], e)
	}
	return out
}

func (w *Writer) insert(ctx context.Context, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	ctx, cancel := w.queryCtx(ctx, "insert", nil)
	defer cancel()
	batch, err := w.conn.PrepareBatch(ctx, "INSERT INTO usage_events ("+eventColumns+")")
	if err != nil {
		return fmt.Errorf("insert usage events: %w", err)
	}
	defer batch.Abort()
	if err := appendEvents(batch, events); err != nil {
		return fmt.Errorf("insert usage events: %w", err)
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d usage events: %w", len(events), err)
	}
	return nil
}

// appendEvents fills the batch column by column: an order of magnitude
// cheaper than appending row by row through reflection.
func appendEvents(batch driver.Batch, events []Event) error {
	n := len(events)
	var (
		account, key, edge, service, model, endpoint = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		at                                           = make([]time.Time, n)
		seq                                          = make([]uint64, n)
		part                                         = make([]uint32, n)
		in, out, cost, reqB, resB, lat               = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		status                                       = make([]uint16, n)
		streamed, estimated                          = make([]uint8, n), make([]uint8, n)
	)
	for i := range events {
		e := &events[i]
		account[i], key[i], at[i], edge[i], part[i], seq[i] = e.Account, e.KeyID, e.OccurredAt, e.EdgeInstance, e.Partition, e.Sequence
		service[i], model[i], endpoint[i] = e.Service, e.Model, e.Endpoint
		in[i], out[i], cost[i], reqB[i], resB[i] = e.InputTokens, e.OutputTokens, e.Cost, e.RequestBytes, e.ResponseBytes
		status[i], lat[i], streamed[i], estimated[i] = e.Status, e.LatencyUS, b2u(e.Streamed), b2u(e.Estimated)
	}
	cols := []any{account, key, at, edge, part, seq, service, model, endpoint, in, out, cost, reqB, resB, status, lat, streamed, estimated}
	for i, c := range cols {
		if err := batch.Column(i).Append(c); err != nil {
			return fmt.Errorf("column %d: %w", i, err)
		}
	}
	return nil
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// MarkStored records the identities of events that are in usage_events.
// Insert does that through a view; Repair does it itself, since the view may
// not have run. Calling it twice for an event is harmless.
func (w *Writer) MarkStored(ctx context.Context, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	ctx, cancel := w.queryCtx(ctx, "seen", nil)
	defer cancel()
	batch, err := w.conn.PrepareBatch(ctx, "INSERT INTO usage_seen (edge_instance, usage_partition, sequence, occurred_at)")
	if err != nil {
		return fmt.Errorf("record stored events: %w", err)
	}
	defer batch.Abort()
	n := len(events)
	edge, part, seq, at := make([]string, n), make([]uint32, n), make([]uint64, n), make([]time.Time, n)
	for i := range events {
		edge[i], part[i], seq[i], at[i] = events[i].EdgeInstance, events[i].Partition, events[i].Sequence, events[i].OccurredAt
	}
	for i, c := range []any{edge, part, seq, at} {
		if err := batch.Column(i).Append(c); err != nil {
			return fmt.Errorf("record stored events: column %d: %w", i, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("record %d stored events: %w", len(events), err)
	}
	return nil
}

// Stored reports which of ids usage_seen holds.
func (w *Writer) Stored(ctx context.Context, ids []ID) (map[ID]bool, error) {
	found := map[ID]bool{}
	if len(ids) == 0 {
		return found, nil
	}
	want := make(map[ID]struct{}, len(ids))
	for _, id := range ids {
		want[id] = struct{}{}
	}
	for _, c := range idConditions(ids, maxRuns, runsPerQuery) {
		err := w.scanIDs(ctx, "lookup", "SELECT edge_instance, usage_partition, sequence FROM usage_seen WHERE "+c.where, c.args, func(id ID) {
			if _, ok := want[id]; ok { // the ranges may cover sequences not asked for
				found[id] = true
			}
		})
		if err != nil {
			return nil, fmt.Errorf("look up stored events: %w", err)
		}
	}
	return found, nil
}

// scanIDs runs a query that returns identities and hands each to fn.
func (w *Writer) scanIDs(ctx context.Context, kind, sql string, args []any, fn func(ID)) error {
	ctx, cancel := w.queryCtx(ctx, kind, longQuery)
	defer cancel()
	rows, err := w.conn.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id ID
		if err := rows.Scan(&id.Edge, &id.Partition, &id.Seq); err != nil {
			return err
		}
		fn(id)
	}
	return rows.Err()
}

// Limits on identity look-ups.
const (
	// maxRuns is how many sequence ranges a look-up may have before the
	// closest ranges of an edge's partition are joined.
	maxRuns = 1024
	// runsPerQuery bounds the ranges of one statement: ClickHouse limits
	// the size of a query's syntax tree (max_ast_elements, 50,000), and
	// each range costs several elements.
	runsPerQuery = 500
)

// idCondition is a condition on (edge_instance, usage_partition, sequence)
// with its arguments.
type idCondition struct {
	where string
	args  []any
}

// idConditions turns ids into conditions made of sequence ranges, which the
// primary key of usage_seen answers with a few seeks. An edge numbers each
// partition's events in order, so a batch holds a run or two per edge and
// partition. Beyond limit runs, the closest runs of an edge's partition are
// joined (covering sequences that are not asked for); the runs are then
// split into conditions of at most perQuery ranges, one statement each.
func idConditions(ids []ID, limit, perQuery int) []idCondition {
	sorted := slices.Clone(ids)
	slices.SortFunc(sorted, func(a, b ID) int {
		if c := strings.Compare(a.Edge, b.Edge); c != 0 {
			return c
		}
		if c := cmpUint(uint64(a.Partition), uint64(b.Partition)); c != 0 {
			return c
		}
		return cmpUint(a.Seq, b.Seq)
	})
	type run struct {
		edge     string
		part     uint32
		from, to uint64
	}
	var runs []run
	for gap := uint64(1); ; gap *= 4 {
		runs = runs[:0]
		for _, id := range sorted {
			if n := len(runs); n > 0 && runs[n-1].edge == id.Edge && runs[n-1].part == id.Partition && id.Seq-runs[n-1].to <= gap {
				runs[n-1].to = id.Seq
				continue
			}
			runs = append(runs, run{id.Edge, id.Partition, id.Seq, id.Seq})
		}
		if len(runs) <= limit || gap > 1<<60 {
			break
		}
	}
	var out []idCondition
	for len(runs) > 0 {
		chunk := runs[:min(perQuery, len(runs))]
		runs = runs[len(chunk):]
		var sb strings.Builder
		args := make([]any, 0, 4*len(chunk))
		for i, r := range chunk {
			if i > 0 {
				sb.WriteString(" OR ")
			}
			sb.WriteString("(edge_instance = ? AND usage_partition = ? AND sequence BETWEEN ? AND ?)")
			args = append(args, r.edge, r.part, r.from, r.to)
		}
		out = append(out, idCondition{where: sb.String(), args: args})
	}
	return out
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// BeginBatch records b before its rows are inserted.
func (w *Writer) BeginBatch(ctx context.Context, b Batch) error {
	ctx, cancel := w.queryCtx(ctx, "batch", nil)
	defer cancel()
	err := w.conn.Exec(ctx, `INSERT INTO sink_batches (consumer, batch_id, seq_from, seq_to, events, created_at) SELECT ?, ?, ?, ?, ?, ?`,
		w.consumer, b.ID, b.SeqFrom, b.SeqTo, uint32(b.Events), time.Now().UTC().Truncate(time.Second))
	if err != nil {
		return fmt.Errorf("record batch %d: %w", b.ID, err)
	}
	return nil
}

// LastBatch returns the consumer's last recorded batch, if any.
func (w *Writer) LastBatch(ctx context.Context) (Batch, bool, error) {
	ctx, cancel := w.queryCtx(ctx, "last-batch", nil)
	defer cancel()
	rows, err := w.conn.Query(ctx, `SELECT batch_id, seq_from, seq_to, events FROM sink_batches
WHERE consumer = ? ORDER BY batch_id DESC LIMIT 1`, w.consumer)
	if err != nil {
		return Batch{}, false, fmt.Errorf("read last batch: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		return Batch{}, false, rows.Err()
	}
	b := Batch{Consumer: w.consumer}
	var n uint32
	if err := rows.Scan(&b.ID, &b.SeqFrom, &b.SeqTo, &n); err != nil {
		return Batch{}, false, fmt.Errorf("read last batch: %w", err)
	}
	b.Events = int(n)
	return b, true, nil
}
