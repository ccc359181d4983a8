package usagestore

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// Dimension is something usage can be grouped by.
type Dimension int

const (
	ByKey Dimension = iota + 1
	ByModel
	ByService
	ByHour
	ByDay
)

func (d Dimension) String() string {
	switch d {
	case ByKey:
		return "key"
	case ByModel:
		return "model"
	case ByService:
		return "service"
	case ByHour:
		return "hour"
	case ByDay:
		return "day"
	}
	return fmt.Sprintf("Dimension(%d)", int(d))
}

// IsTime reports whether d buckets time.
func (d Dimension) IsTime() bool { return d == ByHour || d == ByDay }

// Filter says which usage to count: one account's, in [From, To), of the
// keys, models and services listed (all when a list is empty).
type Filter struct {
	Account  string
	Keys     []string
	Models   []string
	Services []string
	// From is inclusive; the zero time means from the beginning.
	From time.Time
	// To is exclusive and must be set (the API uses now when it is not).
	To time.Time
}

// Query is a usage report: sums of requests, tokens and cost per group.
type Query struct {
	Filter
	GroupBy []Dimension
	// Latency adds p50, p95 and p99 latency per group (read from the events:
	// percentiles cannot be rolled up).
	Latency bool
	// TopByCost orders groups by cost, most first, instead of by the
	// group-by columns.
	TopByCost bool
	// Limit caps the rows; 0 means MaxRows. More rows than MaxRows is an
	// error (ErrTooManyRows), never a silently cut report.
	Limit int
}

// Limits on queries.
const (
	MaxRows       = 100_000
	MaxFilterList = 1000
)

// FieldError says what is wrong with one field of a query.
type FieldError struct {
	Field, Message string
}

// InvalidQueryError lists what is wrong with a query.
type InvalidQueryError struct {
	Fields []FieldError
}

func (e *InvalidQueryError) Error() string {
	msgs := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		msgs[i] = f.Field + ": " + f.Message
	}
	return "invalid usage query: " + strings.Join(msgs, "; ")
}

func (e *InvalidQueryError) add(field, format string, args ...any) {
	e.Fields = append(e.Fields, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// Validate reports everything wrong with q at once.
func (q Query) Validate() error {
	var e InvalidQueryError
	if q.Account == "" {
		e.add("filter.account", "is required")
	}
	if q.To.IsZero() {
		e.add("filter.end_time", "is required")
	} else if !q.From.IsZero() && !q.From.Before(q.To) {
		e.add("filter.start_time", "must be before end_time (%s is not before %s)", q.From.UTC().Format(time.RFC3339), q.To.UTC().Format(time.RFC3339))
	}
	for _, l := range []struct {
		field string
		v     []string
	}{{"filter.key_ids", q.Keys}, {"filter.models", q.Models}, {"filter.services", q.Services}} {
		if len(l.v) > MaxFilterList {
			e.add(l.field, "at most %d entries, got %d", MaxFilterList, len(l.v))
		}
		if slices.Contains(l.v, "") {
			e.add(l.field, "an entry is empty")
		}
	}
	seen := map[Dimension]bool{}
	times := 0
	for i, d := range q.GroupBy {
		switch {
		case d < ByKey || d > ByDay:
			e.add(fmt.Sprintf("group_by[%d]", i), "unknown dimension %d: use key, model, service, hour or day", int(d))
		case seen[d]:
			e.add(fmt.Sprintf("group_by[%d]", i), "%s is listed twice", d)
		case d.IsTime():
			times++
		}
		seen[d] = true
	}
	if times > 1 {
		e.add("group_by", "group by hour or by day, not both")
	}
	if q.Limit < 0 || q.Limit > MaxRows {
		e.add("limit", "must be 1 to %d", MaxRows)
	}
	if len(e.Fields) > 0 {
		return &e
	}
	return nil
}

// Statement is SQL with its positional arguments.
type Statement struct {
	SQL  string
	Args []any
}

// source is a table a report reads, with how it spells each part.
type source struct {
	table    string
	time     string // the column bounded by From and To
	dims     map[Dimension]string
	measures string
}

var (
	rollup = source{
		table: "usage_hourly", time: "hour",
		dims: map[Dimension]string{ByKey: "key_id", ByModel: "model", ByService: "service",
			ByHour: "hour", ByDay: "toStartOfDay(hour)"},
		measures: "sum(requests) AS requests, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cost) AS cost",
	}
	events = source{
		table: "usage_events", time: "occurred_at",
		dims: map[Dimension]string{ByKey: "key_id", ByModel: "model", ByService: "service",
			ByHour: "toStartOfHour(occurred_at)", ByDay: "toStartOfDay(occurred_at)"},
		measures: "toInt64(count()) AS requests, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cost) AS cost",
	}
)

// alias is a dimension's column name in results.
func alias(d Dimension) string {
	if d.IsTime() {
		return "bucket"
	}
	return map[Dimension]string{ByKey: "key_id", ByModel: "model", ByService: "service"}[d]
}

// span is a half-open time range.
type span struct{ from, to time.Time }

// plan splits [From, To) into the whole hours the rollup answers and the
// partial hours at either end that only the events can answer exactly.
func (f Filter) plan() (hours span, edges []span) {
	from, to := f.From.UTC(), f.To.UTC()
	if f.From.IsZero() {
		from = time.Unix(0, 0).UTC()
	}
	first := from.Truncate(time.Hour)
	if first.Before(from) {
		first = first.Add(time.Hour)
	}
	last := to.Truncate(time.Hour)
	if !first.Before(last) {
		return span{}, []span{{from, to}}
	}
	if from.Before(first) {
		edges = append(edges, span{from, first})
	}
	if last.Before(to) {
		edges = append(edges, span{last, to})
	}
	return span{first, last}, edges
}

// UsageSQL is the statement that answers q's sums. Whole hours come from
// the rollup; the partial hours at the ends of the range (a range like
// "the last 24 hours" rarely starts on the hour) come from the events and
// are added in, so the answer is exact and still reads mostly the rollup.
func (q Query) UsageSQL() Statement {
	hours, edges := q.plan()
	var parts []Statement
	if !hours.from.IsZero() {
		parts = append(parts, q.part(rollup, []span{hours}))
	}
	if len(edges) > 0 {
		parts = append(parts, q.part(events, edges))
	}
	var sb strings.Builder
	var args []any
	groups := q.groupAliases()
	if len(parts) == 1 {
		sb.WriteString(parts[0].SQL)
		args = parts[0].Args
	} else {
		sb.WriteString("SELECT ")
		for _, a := range groups {
			sb.WriteString(a + ", ")
		}
		sb.WriteString("sum(requests) AS requests, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cost) AS cost\nFROM (\n")
		for i, p := range parts {
			if i > 0 {
				sb.WriteString("\nUNION ALL\n")
			}
			sb.WriteString(p.SQL)
			args = append(args, p.Args...)
		}
		sb.WriteString("\n)")
		if len(groups) > 0 {
			sb.WriteString("\nGROUP BY " + strings.Join(groups, ", "))
		}
	}
	q.orderAndLimit(&sb)
	return Statement{SQL: sb.String(), Args: args}
}

// LatencySQL is the statement that answers q's latency percentiles, in
// microseconds, per group, from the events.
func (q Query) LatencySQL() Statement {
	var sb strings.Builder
	sb.WriteString("SELECT ")
	for _, d := range q.GroupBy {
		sb.WriteString(selectDim(events, d) + ", ")
	}
	sb.WriteString("quantiles(0.5, 0.95, 0.99)(latency_us) AS latency\nFROM usage_events\n")
	where, args := q.where(events, []span{{q.From, q.To}})
	sb.WriteString(where)
	if groups := q.groupAliases(); len(groups) > 0 {
		sb.WriteString("\nGROUP BY " + strings.Join(groups, ", "))
	}
	fmt.Fprintf(&sb, "\nLIMIT %d", q.rowLimit())
	return Statement{SQL: sb.String(), Args: args}
}

func selectDim(src source, d Dimension) string {
	expr, a := src.dims[d], alias(d)
	if expr == a {
		return expr
	}
	return expr + " AS " + a
}

func (q Query) groupAliases() []string {
	out := make([]string, len(q.GroupBy))
	for i, d := range q.GroupBy {
		out[i] = alias(d)
	}
	return out
}

// part is one source's grouped sums over spans.
func (q Query) part(src source, spans []span) Statement {
	var sb strings.Builder
	sb.WriteString("SELECT ")
	for _, d := range q.GroupBy {
		sb.WriteString(selectDim(src, d) + ", ")
	}
	sb.WriteString(src.measures + "\nFROM " + src.table + "\n")
	where, args := q.where(src, spans)
	sb.WriteString(where)
	if groups := q.groupAliases(); len(groups) > 0 {
		sb.WriteString("\nGROUP BY " + strings.Join(groups, ", "))
	}
	return Statement{SQL: sb.String(), Args: args}
}

// where filters src by account first (the head of every table's primary
// key), then time and the lists.
func (q Query) where(src source, spans []span) (string, []any) {
	conds := []string{"account = ?"}
	args := []any{q.Account}
	var times []string
	for _, s := range spans {
		if s.from.IsZero() {
			times = append(times, src.time+" < ?")
			args = append(args, s.to.UTC())
			continue
		}
		times = append(times, src.time+" >= ? AND "+src.time+" < ?")
		args = append(args, s.from.UTC(), s.to.UTC())
	}
	if len(times) == 1 {
		conds = append(conds, times[0])
	} else {
		conds = append(conds, "(("+strings.Join(times, ") OR (")+"))")
	}
	for _, l := range []struct {
		col string
		v   []string
	}{{"key_id", q.Keys}, {"model", q.Models}, {"service", q.Services}} {
		if len(l.v) > 0 {
			conds = append(conds, l.col+" IN ?")
			args = append(args, clickhouse.GroupSet{Value: anySlice(l.v)})
		}
	}
	return "WHERE " + strings.Join(conds, " AND "), args
}

func (q Query) orderAndLimit(sb *strings.Builder) {
	if q.TopByCost {
		sb.WriteString("\nORDER BY cost DESC")
		for _, a := range q.groupAliases() {
			sb.WriteString(", " + a)
		}
	} else if groups := q.groupAliases(); len(groups) > 0 {
		sb.WriteString("\nORDER BY " + strings.Join(groups, ", "))
	}
	fmt.Fprintf(sb, "\nLIMIT %d", q.rowLimit())
}

// rowLimit asks for one row more than allowed, to tell "exactly the limit"
// from "more".
func (q Query) rowLimit() int {
	if q.TopByCost && q.Limit > 0 {
		return q.Limit
	}
	if q.Limit > 0 {
		return q.Limit + 1
	}
	return MaxRows + 1
}

func anySlice(v []string) []any {
	out := make([]any, len(v))
	for i, s := range v {
		out[i] = s
	}
	return out
}
