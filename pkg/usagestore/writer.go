package usagestore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
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
// them as one part per day they fall on, and the materialized view writes
// the rollup. An error means the outcome is unknown, for each of the two
// tables: the caller must Repair.
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

// Stored reports which of events usage_events holds, by identity. It looks
// only where they would be: their accounts, keys and time range, through the
// primary key (a re-published event carries the same account, key and time
// as the stored one).
func (w *Writer) Stored(ctx context.Context, events []Event) (map[ID]bool, error) {
	return w.stored(ctx, "lookup", events)
}

func (w *Writer) stored(ctx context.Context, kind string, events []Event) (map[ID]bool, error) {
	found := map[ID]bool{}
	if len(events) == 0 {
		return found, nil
	}
	s := scopeOf(events)
	ids := make([]ID, len(events))
	for i := range events {
		ids[i] = events[i].ID()
	}
	err := w.scanIDs(ctx, kind, ids, `SELECT edge_instance, usage_partition, sequence FROM usage_events
WHERE account IN ? AND key_id IN ? AND occurred_at >= ? AND occurred_at <= ? AND `+inBatchIDs,
		[]any{clickhouse.GroupSet{Value: s.accounts}, clickhouse.GroupSet{Value: s.keys}, s.from, s.to}, func(id ID) { found[id] = true })
	if err != nil {
		return nil, fmt.Errorf("look up stored events: %w", err)
	}
	return found, nil
}

// inBatchIDs is the condition "the row's identity is one of ids", with ids
// sent along with the query as an external table (scanIDs): ClickHouse tests
// each row with one hash look-up.
// (Conditions of the form "edge = ? AND partition = ? AND sequence BETWEEN ?
// AND ?", one per run of sequences, were tried first: with a hundred runs in
// a batch, the condition alone cost ClickHouse 40 ms to analyse and every
// row read a hundred comparisons.)
const inBatchIDs = "(edge_instance, usage_partition, sequence) IN (SELECT edge_instance, usage_partition, sequence FROM batch_ids)"

// scanIDs runs a query that returns identities and hands each to fn; ids
// are sent with it as the external table batch_ids.
func (w *Writer) scanIDs(ctx context.Context, kind string, ids []ID, sql string, args []any, fn func(ID)) error {
	table, err := idsTable(ids)
	if err != nil {
		return err
	}
	ctx, cancel := w.queryCtx(ctx, kind, longQuery)
	defer cancel()
	rows, err := w.conn.Query(clickhouse.Context(ctx, clickhouse.WithExternalTable(table)), sql, args...)
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

// idsTable builds the external table batch_ids, column by column.
func idsTable(ids []ID) (*ext.Table, error) {
	table, err := ext.NewTable("batch_ids",
		ext.Column("edge_instance", "String"), ext.Column("usage_partition", "UInt32"), ext.Column("sequence", "UInt64"))
	if err != nil {
		return nil, err
	}
	edge, part, seq := make([]string, len(ids)), make([]uint32, len(ids)), make([]uint64, len(ids))
	for i, id := range ids {
		edge[i], part[i], seq[i] = id.Edge, id.Partition, id.Seq
	}
	for i, col := range []any{edge, part, seq} {
		if _, err := table.Block().Columns[i].Append(col); err != nil {
			return nil, fmt.Errorf("identities table: %w", err)
		}
	}
	return table, nil
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
