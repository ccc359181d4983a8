package limits_test

import (
	"testing"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/limits"
	"github.com/tollgate/tollgate/pkg/money"
)

func usd(n int64) limits.Usage { return limits.Usage{Spend: money.Nanos(n * dollar)} }

// spendSet is a $240/day rolling limit with $10 left at t0.
func spendSet(t *testing.T) *limits.Set {
	s := limits.NewSet([]*eventsv1.Limit{lim(spend, day, 240*dollar, rolling, true)}, nil, t0)
	s.Debit(usd(230), t0)
	return s
}

func status(t *testing.T, s *limits.Set, id limits.ID, now time.Time) limits.LimitStatus {
	t.Helper()
	for _, ls := range s.Status(now) {
		if ls.ID == id {
			return ls
		}
	}
	t.Fatalf("no limit %v", id)
	return limits.LimitStatus{}
}

// TestReserveCannotOverspend: requests in flight together never hold more
// than was left, the worst case is capped at what is left, and a request
// starts while anything at all is left.
func TestReserveCannotOverspend(t *testing.T) {
	s := spendSet(t)
	var held []int64
	for range 3 {
		r, d := s.Reserve(usd(4), t0)
		if d != nil {
			t.Fatalf("refused with $%d held: %+v", len(held), d)
		}
		held = append(held, r.Held(spendDay))
	}
	if want := []int64{4 * dollar, 4 * dollar, 2 * dollar}; held[0] != want[0] || held[1] != want[1] || held[2] != want[2] {
		t.Errorf("held %v, want %v (the third capped at what is left)", held, want)
	}
	if ls := status(t, s, spendDay, t0); ls.Reserved != 10*dollar || ls.Remaining != 0 || ls.Available != 10*dollar {
		t.Errorf("status %+v, want $10 reserved, nothing remaining", ls)
	}
	if _, d := s.Reserve(usd(0), t0); d == nil || d.Left != 0 || d.Limit.ID != spendDay {
		t.Errorf("fourth request admitted or wrong denial: %+v", d)
	}
	// One nano-dollar refills in 360 ns, and that is enough to start.
	r, d := s.Reserve(usd(50), t0.Add(360*time.Nanosecond))
	if d != nil || r.Held(spendDay) != 1 {
		t.Errorf("with 1 nano left: %+v, held %d; want admitted holding 1", d, r.Held(spendDay))
	}
}

// TestSettle: the reservation is released and the actual cost debited,
// smaller or larger than reserved.
func TestSettle(t *testing.T) {
	t.Run("smaller", func(t *testing.T) {
		s := spendSet(t)
		r, _ := s.Reserve(usd(4), t0)
		s.Settle(r, usd(1), t0)
		if ls := status(t, s, spendDay, t0); ls.Available != 9*dollar || ls.Reserved != 0 || ls.Remaining != 9*dollar {
			t.Errorf("status %+v, want $9 available, nothing reserved", ls)
		}
	})
	t.Run("larger ends below zero by the overrun", func(t *testing.T) {
		s := spendSet(t)
		r, _ := s.Reserve(usd(50), t0) // capped at $10
		s.Settle(r, usd(13), t0)
		// $13 cost is $3 beyond the $10 reservation.
		if ls := status(t, s, spendDay, t0); ls.Available != -3*dollar || ls.Reserved != 0 || ls.Remaining != 0 {
			t.Errorf("status %+v, want $-3 available", ls)
		}
		if _, d := s.Reserve(usd(0), t0.Add(time.Minute)); d == nil {
			t.Error("admitted below zero")
		}
	})
	t.Run("aborted", func(t *testing.T) {
		s := spendSet(t)
		r, _ := s.Reserve(usd(4), t0)
		s.Settle(r, limits.Usage{}, t0)
		if ls := status(t, s, spendDay, t0); ls.Available != 10*dollar || ls.Reserved != 0 {
			t.Errorf("status %+v, want all $10 back", ls)
		}
	})
}

// TestReserveAllOrNothing: a request refused by one limit reserves nothing
// on the others.
func TestReserveAllOrNothing(t *testing.T) {
	s := limits.NewSet([]*eventsv1.Limit{
		lim(spend, day, 240*dollar, rolling, true),
		lim(requests, minute, 1, rolling, true),
	}, nil, t0)
	r, _ := s.Reserve(usd(5), t0)
	if _, d := s.Reserve(usd(5), t0); d == nil || d.Limit.Metric != requests {
		t.Fatalf("second request in the minute: %+v, want refused by requests", d)
	}
	if ls := status(t, s, spendDay, t0); ls.Reserved != 5*dollar {
		t.Errorf("spend reserved %d, want only the first request's $5", ls.Reserved)
	}
	s.Settle(r, usd(1), t0)
}

// TestMetrics: token limits count input and output tokens; request limits
// count requests whatever they cost.
func TestMetrics(t *testing.T) {
	s := limits.NewSet([]*eventsv1.Limit{
		lim(tokens, day, 1000, calendar, false),
		lim(requests, minute, 2, rolling, true),
	}, nil, t0)
	tok := limits.ID{Metric: tokens, Interval: day}
	rpm := limits.ID{Metric: requests, Interval: minute}
	r, d := s.Reserve(limits.Usage{Spend: 1000 * money.Dollar, InputTokens: 300, OutputTokens: 4096, Requests: 7}, t0)
	if d != nil || r.Held(tok) != 1000 || r.Held(rpm) != 1 {
		t.Fatalf("reserve: %+v, held %d tokens and %d requests; want 1000 (capped) and 1", d, r.Held(tok), r.Held(rpm))
	}
	s.Settle(r, limits.Usage{Spend: 1000 * money.Dollar, InputTokens: 300, OutputTokens: 200, Requests: 7}, t0)
	if got := status(t, s, tok, t0).Used; got != 500 {
		t.Errorf("tokens used %d, want 300 in + 200 out", got)
	}
	if got := status(t, s, rpm, t0).Available; got != 1 {
		t.Errorf("requests available %d, want 1 (one request counted)", got)
	}
	s.Debit(limits.Usage{InputTokens: 100, OutputTokens: 100, Requests: 1}, t0)
	_, d = s.Reserve(limits.Usage{}, t0)
	if d == nil || d.Limit.ID != rpm || d.RetryAfter != 30*time.Second {
		t.Errorf("third request in the minute: %+v, want refused by requests, retry after 30 s", d)
	}
}

// TestRetryAfter checks when a refused request may start again.
func TestRetryAfter(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	tests := []struct {
		name  string
		limit *eventsv1.Limit
		loc   *time.Location
		setup func(s *limits.Set) // at t0
		at    time.Time
		want  time.Duration
		never bool
		held  bool // the requests in flight still hold it all after want
	}{
		{name: "rolling $5 below zero", limit: lim(spend, day, 240*dollar, rolling, true),
			setup: func(s *limits.Set) { s.Debit(usd(245), t0) },
			// $5 and 1 nano at $10 an hour: 30 min and 360 ns, rounded up.
			at: t0, want: 30*time.Minute + time.Second},
		{name: "rolling requests", limit: lim(requests, hour, 10, rolling, true),
			setup: func(s *limits.Set) { s.Debit(limits.Usage{Requests: 10}, t0) },
			at:    t0.Add(time.Minute), want: 5 * time.Minute},
		{name: "rolling requests, half in flight", limit: lim(requests, hour, 10, rolling, true),
			setup: func(s *limits.Set) {
				s.Debit(limits.Usage{Requests: 5}, t0)
				for range 5 {
					s.Reserve(limits.Usage{}, t0)
				}
			},
			// Five are used and five held: the sixth needs one more.
			at: t0, want: 6 * time.Minute},
		{name: "rolling, all in flight", limit: lim(requests, hour, 10, rolling, true),
			setup: func(s *limits.Set) {
				for range 10 {
					s.Reserve(limits.Usage{}, t0)
				}
			},
			// The bucket is full: only the requests in flight can free it.
			at: t0, want: time.Second, held: true},
		{name: "rolling amount 0", limit: lim(spend, day, 0, rolling, true), at: t0, never: true},
		{name: "calendar day", limit: lim(spend, day, 100*dollar, calendar, false),
			setup: func(s *limits.Set) { s.Debit(usd(100), t0) },
			at:    t0, want: 12 * time.Hour},
		{name: "calendar day, 30 s before midnight", limit: lim(spend, day, 100*dollar, calendar, false),
			setup: func(s *limits.Set) { s.Debit(usd(100), t0) },
			at:    utc("2026-03-02T23:59:29.5Z"), want: 31 * time.Second},
		{name: "calendar day in Berlin", limit: lim(spend, day, 100*dollar, calendar, false), loc: berlin,
			setup: func(s *limits.Set) { s.Debit(usd(100), t0) },
			at:    t0, want: 11 * time.Hour},
		{name: "calendar month", limit: lim(tokens, month, 1000, calendar, false),
			setup: func(s *limits.Set) { s.Debit(limits.Usage{OutputTokens: 1000}, t0) },
			at:    t0, want: (31-2)*24*time.Hour + 12*time.Hour},
		{name: "calendar amount 0", limit: lim(tokens, month, 0, calendar, false), at: t0, never: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := limits.NewSet([]*eventsv1.Limit{tt.limit}, tt.loc, t0)
			if tt.setup != nil {
				tt.setup(s)
			}
			_, d := s.Reserve(limits.Usage{}, tt.at)
			if d == nil {
				t.Fatal("admitted")
			}
			if d.RetryAfter != tt.want || d.Never != tt.never {
				t.Errorf("retry after %v (never %v), want %v (never %v)", d.RetryAfter, d.Never, tt.want, tt.never)
			}
			if tt.never {
				return
			}
			if _, d := s.Reserve(limits.Usage{}, tt.at.Add(tt.want)); (d != nil) != tt.held {
				t.Errorf("after Retry-After: %+v, want refused %v", d, tt.held)
			}
		})
	}
}

// TestDenialPicksTheLongestWait: with several limits refusing, Retry-After is
// the one of the limit that frees up last.
func TestDenialPicksTheLongestWait(t *testing.T) {
	s := limits.NewSet([]*eventsv1.Limit{
		lim(requests, minute, 1, rolling, true),
		lim(spend, day, 10*dollar, calendar, false),
		lim(tokens, hour, 100, rolling, true),
	}, nil, t0)
	s.Debit(limits.Usage{Spend: 10 * money.Dollar, InputTokens: 100, Requests: 1}, t0)
	_, d := s.Reserve(limits.Usage{}, t0)
	if d == nil || d.Limit.ID != spendDay || d.RetryAfter != 12*time.Hour {
		t.Errorf("denial %+v, want the calendar day, 12 h", d)
	}
}

// TestSettleAfterReconfigure: a reservation is released only from limits
// that existed when it was made, so removing and adding a limit again does
// not let an old reservation free another request's.
func TestSettleAfterReconfigure(t *testing.T) {
	l := []*eventsv1.Limit{lim(spend, day, 240*dollar, rolling, true)}
	s := limits.NewSet(l, nil, t0)
	old, _ := s.Reserve(usd(100), t0)
	s.Reconfigure(nil, nil, t0)
	s.Reconfigure(l, nil, t0)
	fresh, _ := s.Reserve(usd(100), t0)
	s.Settle(old, usd(1), t0)
	if ls := status(t, s, spendDay, t0); ls.Reserved != fresh.Held(spendDay) {
		t.Errorf("reserved %d, want the new request's %d", ls.Reserved, fresh.Held(spendDay))
	}
	// A changed limit keeps its reservations.
	s.Reconfigure([]*eventsv1.Limit{lim(spend, day, 300*dollar, rolling, true)}, nil, t0)
	s.Settle(fresh, usd(1), t0)
	if ls := status(t, s, spendDay, t0); ls.Reserved != 0 {
		t.Errorf("reserved %d after settling all", ls.Reserved)
	}
}

// TestTightest picks what the x-ratelimit-* headers show.
func TestTightest(t *testing.T) {
	s := limits.NewSet([]*eventsv1.Limit{
		lim(requests, minute, 60, rolling, true),
		lim(requests, day, 1000, calendar, false),
		lim(spend, day, 10*dollar, rolling, true),
	}, nil, t0)
	s.Debit(limits.Usage{Requests: 950}, t0)
	// An hour later the minute's bucket is full again, the day is not.
	ls, ok := s.Tightest(requests, t0.Add(time.Hour))
	if !ok || ls.Interval != day || ls.Amount != 1000 || ls.Remaining != 50 || !ls.ResetAt.Equal(utc("2026-03-03T00:00:00Z")) {
		t.Errorf("tightest requests limit %+v, want the day's 50 of 1000", ls)
	}
	if _, ok := s.Tightest(tokens, t0); ok {
		t.Error("a tokens limit where there is none")
	}
}

func TestNoLimits(t *testing.T) {
	s := limits.NewSet(nil, nil, t0)
	r, d := s.Reserve(usd(1_000_000), t0)
	if d != nil {
		t.Fatalf("refused: %+v", d)
	}
	s.Settle(r, usd(1_000_000), t0)
	if len(s.Status(t0)) != 0 {
		t.Error("status of no limits")
	}
}
