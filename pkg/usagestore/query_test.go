package usagestore

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func set(v ...any) clickhouse.GroupSet { return clickhouse.GroupSet{Value: v} }

const sumCols = "sum(requests) AS requests, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cost) AS cost"
const countCols = "toInt64(count()) AS requests, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cost) AS cost"

// The generated SQL, without a database: which table answers which part of
// the range, and how each dimension and filter is spelled.
func TestUsageSQL(t *testing.T) {
	for _, tc := range []struct {
		name string
		q    Query
		sql  string
		args []any
	}{{
		name: "totals over whole hours read only the rollup",
		q:    Query{Filter: Filter{Account: "acme", From: at("2025-01-01T00:00:00Z"), To: at("2025-01-31T00:00:00Z")}},
		sql: "SELECT " + sumCols + `
FROM usage_hourly
WHERE account = ? AND hour >= ? AND hour < ?
LIMIT 100001`,
		args: []any{"acme", at("2025-01-01T00:00:00Z"), at("2025-01-31T00:00:00Z")},
	}, {
		name: "a 30-day daily series per key and model from the rollup",
		q: Query{Filter: Filter{Account: "acme", From: at("2025-01-01T00:00:00Z"), To: at("2025-01-31T00:00:00Z")},
			GroupBy: []Dimension{ByDay, ByKey, ByModel}},
		sql: "SELECT toStartOfDay(hour) AS bucket, key_id, model, " + sumCols + `
FROM usage_hourly
WHERE account = ? AND hour >= ? AND hour < ?
GROUP BY bucket, key_id, model
ORDER BY bucket, key_id, model
LIMIT 100001`,
		args: []any{"acme", at("2025-01-01T00:00:00Z"), at("2025-01-31T00:00:00Z")},
	}, {
		name: "partial hours at both ends come from the events",
		q: Query{Filter: Filter{Account: "acme", From: at("2025-01-01T10:15:00Z"), To: at("2025-01-02T10:15:00Z"),
			Keys: []string{"key_a", "key_b"}, Services: []string{"acme/openai"}}, GroupBy: []Dimension{ByHour}},
		sql: "SELECT bucket, " + sumCols + `
FROM (
SELECT hour AS bucket, ` + sumCols + `
FROM usage_hourly
WHERE account = ? AND hour >= ? AND hour < ? AND key_id IN ? AND service IN ?
GROUP BY bucket
UNION ALL
SELECT toStartOfHour(occurred_at) AS bucket, ` + countCols + `
FROM usage_events
WHERE account = ? AND ((occurred_at >= ? AND occurred_at < ?) OR (occurred_at >= ? AND occurred_at < ?)) AND key_id IN ? AND service IN ?
GROUP BY bucket
)
GROUP BY bucket
ORDER BY bucket
LIMIT 100001`,
		args: []any{"acme", at("2025-01-01T11:00:00Z"), at("2025-01-02T10:00:00Z"), set("key_a", "key_b"), set("acme/openai"),
			"acme", at("2025-01-01T10:15:00Z"), at("2025-01-01T11:00:00Z"), at("2025-01-02T10:00:00Z"), at("2025-01-02T10:15:00Z"),
			set("key_a", "key_b"), set("acme/openai")},
	}, {
		name: "a range within one hour reads only the events",
		q: Query{Filter: Filter{Account: "acme", From: at("2025-01-01T10:15:00Z"), To: at("2025-01-01T10:45:00Z"), Models: []string{"o3"}},
			GroupBy: []Dimension{ByService, ByModel}},
		sql: "SELECT service, model, " + countCols + `
FROM usage_events
WHERE account = ? AND occurred_at >= ? AND occurred_at < ? AND model IN ?
GROUP BY service, model
ORDER BY service, model
LIMIT 100001`,
		args: []any{"acme", at("2025-01-01T10:15:00Z"), at("2025-01-01T10:45:00Z"), set("o3")},
	}, {
		name: "no start: from the beginning of the rollup",
		q:    Query{Filter: Filter{Account: "acme", To: at("2025-01-01T10:00:00Z")}, GroupBy: []Dimension{ByKey}},
		sql: "SELECT key_id, " + sumCols + `
FROM usage_hourly
WHERE account = ? AND hour >= ? AND hour < ?
GROUP BY key_id
ORDER BY key_id
LIMIT 100001`,
		args: []any{"acme", time.Unix(0, 0).UTC(), at("2025-01-01T10:00:00Z")},
	}, {
		name: "top keys by spend",
		q: Query{Filter: Filter{Account: "acme", From: at("2025-01-01T00:00:00Z"), To: at("2025-01-08T00:00:00Z")},
			GroupBy: []Dimension{ByKey}, TopByCost: true, Limit: 10},
		sql: "SELECT key_id, " + sumCols + `
FROM usage_hourly
WHERE account = ? AND hour >= ? AND hour < ?
GROUP BY key_id
ORDER BY cost DESC, key_id
LIMIT 10`,
		args: []any{"acme", at("2025-01-01T00:00:00Z"), at("2025-01-08T00:00:00Z")},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.q.Validate(); err != nil {
				t.Fatal(err)
			}
			st := tc.q.UsageSQL()
			if st.SQL != tc.sql {
				t.Errorf("SQL:\n%s\nwant:\n%s", st.SQL, tc.sql)
			}
			if !reflect.DeepEqual(st.Args, tc.args) {
				t.Errorf("args:\n%v\nwant:\n%v", st.Args, tc.args)
			}
		})
	}
}

func TestLatencySQL(t *testing.T) {
	q := Query{Filter: Filter{Account: "acme", From: at("2025-01-01T10:15:00Z"), To: at("2025-01-02T00:00:00Z"), Keys: []string{"k"}},
		GroupBy: []Dimension{ByKey, ByDay}, Latency: true}
	st := q.LatencySQL()
	want := `SELECT key_id, toStartOfDay(occurred_at) AS bucket, quantiles(0.5, 0.95, 0.99)(latency_us) AS latency
FROM usage_events
WHERE account = ? AND occurred_at >= ? AND occurred_at < ? AND key_id IN ?
GROUP BY key_id, bucket
LIMIT 100001`
	if st.SQL != want {
		t.Errorf("SQL:\n%s\nwant:\n%s", st.SQL, want)
	}
	if want := []any{"acme", at("2025-01-01T10:15:00Z"), at("2025-01-02T00:00:00Z"), set("k")}; !reflect.DeepEqual(st.Args, want) {
		t.Errorf("args %v, want %v", st.Args, want)
	}
}

func TestQueryValidate(t *testing.T) {
	ok := Query{Filter: Filter{Account: "acme", To: at("2025-01-02T00:00:00Z")}}
	for _, tc := range []struct {
		name   string
		change func(*Query)
		fields []string
	}{
		{"no account", func(q *Query) { q.Account = "" }, []string{"filter.account"}},
		{"no end", func(q *Query) { q.To = time.Time{} }, []string{"filter.end_time"}},
		{"start after end", func(q *Query) { q.From = q.To.Add(time.Hour) }, []string{"filter.start_time"}},
		{"start equals end", func(q *Query) { q.From = q.To }, []string{"filter.start_time"}},
		{"hour and day", func(q *Query) { q.GroupBy = []Dimension{ByHour, ByKey, ByDay} }, []string{"group_by"}},
		{"twice", func(q *Query) { q.GroupBy = []Dimension{ByKey, ByKey} }, []string{"group_by[1]"}},
		{"unknown", func(q *Query) { q.GroupBy = []Dimension{0} }, []string{"group_by[0]"}},
		{"empty key", func(q *Query) { q.Keys = []string{"k", ""} }, []string{"filter.key_ids"}},
		{"long list", func(q *Query) { q.Models = make([]string, MaxFilterList+1) }, []string{"filter.models", "filter.models"}},
		{"limit", func(q *Query) { q.Limit = -1 }, []string{"limit"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := ok
			tc.change(&q)
			err := q.Validate()
			ie, isInvalid := err.(*InvalidQueryError)
			if !isInvalid {
				t.Fatalf("Validate() = %v, want an InvalidQueryError", err)
			}
			var got []string
			for _, f := range ie.Fields {
				got = append(got, f.Field)
			}
			if strings.Join(got, ",") != strings.Join(tc.fields, ",") {
				t.Errorf("fields %v, want %v (%v)", got, tc.fields, err)
			}
		})
	}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid query: %v", err)
	}
}
