package usagestore

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
	"time"
)

// randomEvents are n events of two accounts, several keys, models and
// services, spread over three days from day at random seconds.
func randomEvents(rng *rand.Rand, n int, day time.Time) []Event {
	out := make([]Event, n)
	for i := range out {
		acct := []string{"acme", "globex"}[rng.IntN(2)]
		out[i] = Event{
			Account: acct, KeyID: fmt.Sprintf("key_%d", rng.IntN(6)),
			OccurredAt:   day.Add(time.Duration(rng.IntN(3*24*3600)) * time.Second),
			EdgeInstance: "e", Sequence: uint64(i + 1),
			Service: acct + []string{"/openai", "/anthropic"}[rng.IntN(2)], Model: []string{"a", "b", "c"}[rng.IntN(3)],
			InputTokens: int64(rng.IntN(1000)), OutputTokens: int64(rng.IntN(1000)), Cost: int64(rng.IntN(1_000_000_000)),
			LatencyUS: int64(rng.IntN(1_000_000)),
		}
	}
	return out
}

// expected computes q's answer from the events in Go.
func expected(evs []Event, q Query) []Row {
	groups := map[Row]*Row{}
	for _, e := range evs {
		if e.Account != q.Account || e.OccurredAt.Before(q.From) || !e.OccurredAt.Before(q.To) ||
			!in(q.Keys, e.KeyID) || !in(q.Models, e.Model) || !in(q.Services, e.Service) {
			continue
		}
		var g Row
		for _, d := range q.GroupBy {
			switch d {
			case ByKey:
				g.KeyID = e.KeyID
			case ByModel:
				g.Model = e.Model
			case ByService:
				g.Service = e.Service
			case ByHour:
				g.Bucket = e.OccurredAt.Truncate(time.Hour)
			case ByDay:
				g.Bucket = e.OccurredAt.Truncate(24 * time.Hour)
			}
		}
		r := groups[g]
		if r == nil {
			r = &Row{KeyID: g.KeyID, Model: g.Model, Service: g.Service, Bucket: g.Bucket}
			groups[g] = r
		}
		r.Requests++
		r.InputTokens += e.InputTokens
		r.OutputTokens += e.OutputTokens
		r.Cost += e.Cost
	}
	var out []Row
	for _, r := range groups {
		out = append(out, *r)
	}
	return out
}

func in(list []string, v string) bool {
	if len(list) == 0 {
		return true
	}
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

func sortRows(rows []Row) {
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if a.KeyID != b.KeyID {
			return a.KeyID < b.KeyID
		}
		if a.Model != b.Model {
			return a.Model < b.Model
		}
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		return a.Bucket.Before(b.Bucket)
	})
}

// Random reports against ClickHouse equal the same reports computed in Go:
// ranges on and off the hour (rollup, events, and both added up), every
// grouping, filters.
func TestReaderMatchesBruteForce(t *testing.T) {
	conn := openTest(t)
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(3, 4))
	day := time.Date(2025, 2, 27, 0, 0, 0, 0, time.UTC) // across a month's end
	evs := randomEvents(rng, 5000, day)
	w := NewWriter(conn, "c1", WriterOptions{})
	for i := 0; i < len(evs); i += 1000 { // several blocks, so unmerged rollup rows too
		if err := w.Insert(ctx, evs[i:i+1000]); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(conn, 0)
	dims := []Dimension{ByKey, ByModel, ByService, ByHour, ByDay}
	for i := range 60 {
		from := day.Add(time.Duration(rng.IntN(2*24*3600)) * time.Second)
		if i%3 == 0 {
			from = from.Truncate(time.Hour)
		}
		to := from.Add(time.Duration(1+rng.IntN(36*3600)) * time.Second)
		q := Query{Filter: Filter{Account: []string{"acme", "globex"}[rng.IntN(2)], From: from, To: to}}
		if i%5 == 0 {
			q.From = time.Time{}
		}
		for _, d := range rng.Perm(len(dims))[:rng.IntN(4)] {
			if dims[d] == ByDay && contains(q.GroupBy, ByHour) || dims[d] == ByHour && contains(q.GroupBy, ByDay) {
				continue
			}
			q.GroupBy = append(q.GroupBy, dims[d])
		}
		if rng.IntN(3) == 0 {
			q.Keys = []string{"key_1", "key_4"}
		}
		if rng.IntN(4) == 0 {
			q.Models = []string{"b"}
		}
		if rng.IntN(4) == 0 {
			q.Services = []string{q.Account + "/openai"}
		}
		got, err := r.Usage(ctx, q)
		if err != nil {
			t.Fatalf("query %d %+v: %v", i, q, err)
		}
		want := expected(evs, q)
		sortRows(got)
		sortRows(want)
		if len(got) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
			t.Fatalf("query %d %+v:\n%s\ngot  %d rows %+v\nwant %d rows %+v", i, q, q.UsageSQL().SQL, len(got), got, len(want), want)
		}
	}
}

func contains(ds []Dimension, d Dimension) bool {
	for _, x := range ds {
		if x == d {
			return true
		}
	}
	return false
}

func TestReaderTopKeysAndLatency(t *testing.T) {
	conn := openTest(t)
	ctx := testCtx(t)
	day := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
	var evs []Event
	for k := range 5 {
		for i := range 100 {
			evs = append(evs, Event{Account: "acme", KeyID: fmt.Sprintf("key_%d", k), OccurredAt: day.Add(time.Duration(i) * time.Minute),
				EdgeInstance: "e", Sequence: uint64(len(evs) + 1), Model: "m", Service: "acme/s",
				Cost: int64(k+1) * 1_000_000, LatencyUS: int64(1000 * (i + 1))})
		}
	}
	if err := NewWriter(conn, "c1", WriterOptions{}).Insert(ctx, evs); err != nil {
		t.Fatal(err)
	}
	rows, err := NewReader(conn, 0).Usage(ctx, Query{Filter: Filter{Account: "acme", From: day, To: day.Add(24 * time.Hour)},
		GroupBy: []Dimension{ByKey}, TopByCost: true, Limit: 2, Latency: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].KeyID != "key_4" || rows[1].KeyID != "key_3" || rows[0].Cost != 500_000_000 {
		t.Fatalf("top keys = %+v", rows)
	}
	l := rows[0].Latency
	if l == nil || l.P50 < 49_000 || l.P50 > 52_000 || l.P95 < 94_000 || l.P95 > 96_000 || l.P99 < 98_000 || l.P99 > 100_000 {
		t.Errorf("latency = %+v, want about 50.5 ms, 95 ms and 99 ms", l)
	}
	none, err := NewReader(conn, 0).Usage(ctx, Query{Filter: Filter{Account: "nobody", To: day}})
	if err != nil || len(none) != 0 {
		t.Errorf("usage of an account without any = %+v, %v", none, err)
	}
}
