package limits_test

import (
	"testing"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/limits"
	"github.com/tollgate/tollgate/pkg/money"
)

const (
	spend    = eventsv1.Metric_METRIC_SPEND
	tokens   = eventsv1.Metric_METRIC_TOKENS
	requests = eventsv1.Metric_METRIC_REQUESTS
	minute   = eventsv1.Interval_INTERVAL_MINUTE
	hour     = eventsv1.Interval_INTERVAL_HOUR
	day      = eventsv1.Interval_INTERVAL_DAY
	month    = eventsv1.Interval_INTERVAL_MONTH
	rolling  = eventsv1.Window_WINDOW_ROLLING
	calendar = eventsv1.Window_WINDOW_CALENDAR
	dollar   = int64(money.Dollar)
)

// t0 is an arbitrary start, a Monday noon in UTC.
var t0 = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

func lim(m eventsv1.Metric, iv eventsv1.Interval, amount int64, w eventsv1.Window, now bool) *eventsv1.Limit {
	return &eventsv1.Limit{Metric: m, Interval: iv, Amount: amount, Window: w, AvailableImmediately: now}
}

// available is limit id's Available in s at now.
func available(t *testing.T, s *limits.Set, id limits.ID, now time.Time) int64 {
	t.Helper()
	for _, ls := range s.Status(now) {
		if ls.ID == id {
			return ls.Available
		}
	}
	t.Fatalf("no limit %v", id)
	return 0
}

var spendDay = limits.ID{Metric: spend, Interval: day}

// TestRollingRefill is DESIGN.md's example: $240 per day refills $10 per hour;
// fully spent, $5 is available again after 30 minutes.
func TestRollingRefill(t *testing.T) {
	s := limits.NewSet([]*eventsv1.Limit{lim(spend, day, 240*dollar, rolling, true)}, nil, t0)
	s.Debit(limits.Usage{Spend: 240 * money.Dollar}, t0)
	for _, tt := range []struct {
		after time.Duration
		want  int64
	}{
		{0, 0},
		{359 * time.Nanosecond, 0}, // $240 a day is 1 nano-dollar per 360 ns
		{360 * time.Nanosecond, 1},
		{30 * time.Minute, 5 * dollar},
		{time.Hour, 10 * dollar},
		{90 * time.Minute, 15 * dollar},
		{12 * time.Hour, 120 * dollar},
		{24*time.Hour - time.Second, 240*dollar - 2_777_778}, // a second refills 2_777_777.7 nanos: round down
		{24 * time.Hour, 240 * dollar},
		{240 * time.Hour, 240 * dollar}, // never above the amount
	} {
		if got := available(t, s, spendDay, t0.Add(tt.after)); got != tt.want {
			t.Errorf("after %v: available %d, want %d", tt.after, got, tt.want)
		}
	}
}

// TestRollingMonthIs30Days checks the rolling month and the other periods.
func TestRollingPeriods(t *testing.T) {
	for _, tt := range []struct {
		iv     eventsv1.Interval
		amount int64
		after  time.Duration
		want   int64
	}{
		{minute, 60, time.Second, 1},
		{minute, 60, 999 * time.Millisecond, 0},
		{hour, 3600, time.Second, 1},
		{day, 86400, time.Second, 1},
		{month, 30 * 86400, time.Second, 1},
		{month, 300 * dollar, 24 * time.Hour, 10 * dollar},
		{month, 300 * dollar, 30 * 24 * time.Hour, 300 * dollar},
	} {
		s := limits.NewSet([]*eventsv1.Limit{lim(requests, tt.iv, tt.amount, rolling, false)}, nil, t0)
		id := limits.ID{Metric: requests, Interval: tt.iv}
		if got := available(t, s, id, t0.Add(tt.after)); got != tt.want {
			t.Errorf("%v amount %d after %v: available %d, want %d", tt.iv, tt.amount, tt.after, got, tt.want)
		}
	}
}

// TestRollingCarriesFractions is why usage does not move a rolling state's
// time: 60 requests a minute refill one a second, however often they come.
func TestRollingCarriesFractions(t *testing.T) {
	s := limits.NewSet([]*eventsv1.Limit{lim(requests, minute, 60, rolling, true)}, nil, t0)
	admitted := 0
	// Ten minutes of a request every 0.9 s: the first ones spend the 60 the
	// bucket starts with, then one a second refills.
	for i := 0; i <= 667; i++ {
		now := t0.Add(time.Duration(i) * 900 * time.Millisecond)
		if r, d := s.Reserve(limits.Usage{}, now); d == nil {
			s.Settle(r, limits.Usage{}, now)
			admitted++
		}
	}
	// 60 at the start plus one per second of the 600.3 s that passed.
	if want := 60 + 600; admitted != want {
		t.Errorf("admitted %d requests in 600.3 s, want %d", admitted, want)
	}
}

// TestStepIndependence: how time is split between operations does not change
// what a rolling limit has at a time.
func TestStepIndependence(t *testing.T) {
	l := []*eventsv1.Limit{lim(spend, day, 7*dollar+3, rolling, true)}
	one := limits.NewSet(l, nil, t0)
	two := limits.NewSet(l, nil, t0)
	one.Debit(limits.Usage{Spend: 7 * money.Dollar}, t0)
	two.Debit(limits.Usage{Spend: 7 * money.Dollar}, t0)
	// two is debited nothing-worth requests every 7 s; one is left alone.
	for at := t0; at.Before(t0.Add(2 * time.Hour)); at = at.Add(7 * time.Second) {
		r, d := two.Reserve(limits.Usage{Spend: 1}, at)
		if d != nil {
			t.Fatalf("refused at %v: %+v", at, d)
		}
		two.Settle(r, limits.Usage{}, at)
	}
	one.Debit(limits.Usage{Spend: 1}, t0.Add(2*time.Hour))
	two.Debit(limits.Usage{Spend: 1}, t0.Add(2*time.Hour))
	end := t0.Add(3 * time.Hour)
	if a, b := available(t, one, spendDay, end), available(t, two, spendDay, end); a != b {
		t.Errorf("one step: %d, many steps: %d", a, b)
	}
}

// TestNegativeLevel: a request may cost more than was left; the limit then
// refills from below zero.
func TestNegativeLevel(t *testing.T) {
	s := limits.NewSet([]*eventsv1.Limit{lim(spend, day, 240*dollar, rolling, true)}, nil, t0)
	s.Debit(limits.Usage{Spend: 250 * money.Dollar}, t0)
	for _, tt := range []struct {
		after time.Duration
		want  int64
	}{
		{0, -10 * dollar},
		{30 * time.Minute, -5 * dollar},
		{time.Hour, 0},
		{2 * time.Hour, 10 * dollar},
		{25 * time.Hour, 240 * dollar},
	} {
		if got := available(t, s, spendDay, t0.Add(tt.after)); got != tt.want {
			t.Errorf("after %v: available %d, want %d", tt.after, got, tt.want)
		}
	}
	ls := s.Status(t0)[0]
	if ls.Used != 250*dollar || !ls.ResetAt.Equal(t0.Add(25*time.Hour)) {
		t.Errorf("status %+v, want used $250, full at t0+25h", ls)
	}
}

// TestLateUsage: usage with a time before the state's is charged, never lost
// and never refunded.
func TestLateUsage(t *testing.T) {
	r, _ := limits.RuleOf(lim(spend, day, 240*dollar, rolling, false), nil)
	st := r.NewState(t0) // empty at t0
	st = r.Debit(st, 10*dollar, t0.Add(-time.Hour))
	if got := r.Available(st, t0.Add(time.Hour)); got != 0 {
		t.Errorf("late usage in an empty bucket: available %d an hour later, want 0", got)
	}
	full := r.Debit(limits.State{}, 1, t0.Add(24*time.Hour)) // full, then used at +24h
	late := r.Debit(full, 10*dollar, t0)
	if got, want := r.Available(late, t0.Add(24*time.Hour)), 230*dollar-1; got != want {
		t.Errorf("late usage in a full bucket: available %d, want %d (charged at the state's time)", got, want)
	}
}

// TestZeroState is a limit with nothing used, which is what metering has
// before a limit's first usage.
func TestZeroState(t *testing.T) {
	for _, w := range []eventsv1.Window{rolling, calendar} {
		r, _ := limits.RuleOf(lim(spend, day, 240*dollar, w, false), nil)
		if got := r.Available(limits.State{}, t0); got != 240*dollar {
			t.Errorf("%v: zero state has %d, want all", w, got)
		}
	}
}

func TestRuleOf(t *testing.T) {
	r, ok := limits.RuleOf(lim(tokens, hour, -5, 0, false), nil)
	if !ok || r.Window != rolling || r.Amount != 0 {
		t.Errorf("RuleOf = %+v, %v; want rolling, amount 0", r, ok)
	}
	for _, l := range []*eventsv1.Limit{lim(0, hour, 1, rolling, false), lim(tokens, 0, 1, rolling, false), lim(tokens, 9, 1, rolling, false), nil} {
		if _, ok := limits.RuleOf(l, nil); ok {
			t.Errorf("RuleOf(%v) ok", l)
		}
	}
}

// TestSaturation: huge amounts and usage saturate instead of wrapping, and
// what is reported stays sane.
func TestSaturation(t *testing.T) {
	const maxI = int64(^uint64(0) >> 1)
	s := limits.NewSet([]*eventsv1.Limit{lim(spend, month, maxI/2, rolling, true), lim(tokens, day, maxI, calendar, false)}, nil, t0)
	for range 3 {
		s.Debit(limits.Usage{Spend: money.Nanos(maxI), InputTokens: maxI, OutputTokens: maxI}, t0)
	}
	st := s.Status(t0)
	if st[0].Available != maxI/2-maxI || st[0].Used != maxI {
		t.Errorf("rolling: %+v, want the level at its floor", st[0])
	}
	if st[1].Used != maxI || st[1].Available != 0 {
		t.Errorf("calendar: %+v, want used saturated", st[1])
	}
	_, d := s.Reserve(limits.Usage{}, t0)
	if d == nil || d.Never || d.RetryAfter < time.Hour {
		t.Errorf("denial %+v", d)
	}
	if got := (limits.Usage{Spend: -5, InputTokens: -1, OutputTokens: 3, Requests: -2}); got.Of(spend) != 0 || got.Of(tokens) != 3 || got.Of(requests) != 0 {
		t.Errorf("negative usage counted: %d %d %d", got.Of(spend), got.Of(tokens), got.Of(requests))
	}
}

// TestStateRoundTrip: metering stores a State and an edge installs it; the
// reservations in flight stay.
func TestStateRoundTrip(t *testing.T) {
	l := []*eventsv1.Limit{lim(spend, day, 240*dollar, rolling, true)}
	metering := limits.NewSet(l, nil, t0)
	metering.Debit(usd(100), t0)
	st, ok := metering.State(spendDay)
	if !ok || st.Level != 140*dollar || !st.At.Equal(t0) {
		t.Fatalf("state %+v, %v", st, ok)
	}
	edge := limits.NewSet(l, nil, t0)
	r, _ := edge.Reserve(usd(5), t0)
	if !edge.SetState(spendDay, st) || edge.SetState(limits.ID{Metric: tokens, Interval: day}, st) {
		t.Error("SetState reports the wrong limits")
	}
	if ls := status(t, edge, spendDay, t0); ls.Available != 140*dollar || ls.Reserved != 5*dollar {
		t.Errorf("edge after SetState: %+v", ls)
	}
	edge.Settle(r, usd(5), t0)
	if _, ok := edge.State(limits.ID{Metric: 7, Interval: day}); ok {
		t.Error("State of an unknown limit")
	}
}
