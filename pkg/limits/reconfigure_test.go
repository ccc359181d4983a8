package limits_test

import (
	"testing"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/limits"
	"github.com/tollgate/tollgate/pkg/money"
)

// TestReconfigure holds DESIGN.md's available_immediately rules as vectors: a
// $100/day rolling limit (or none) with $30 available at t0+1h is changed at
// t0+1h, and what is available is read then and an hour later.
func TestReconfigure(t *testing.T) {
	const h = time.Hour
	old := func(ai bool) []*eventsv1.Limit { return []*eventsv1.Limit{lim(spend, day, 100*dollar, rolling, ai)} }
	to := func(amount int64, ai bool) []*eventsv1.Limit {
		return []*eventsv1.Limit{lim(spend, day, amount, rolling, ai)}
	}
	tests := []struct {
		name        string
		before      []*eventsv1.Limit // nil: the key had no spend limit
		after       []*eventsv1.Limit
		now, hourOn int64 // available at the change and an hour later
		removed     bool
	}{
		// Raising: on adds the difference now, off keeps $30 and refills at
		// the new rate ($150/24 = $6.25 an hour).
		{name: "raise on", before: old(true), after: to(150*dollar, true), now: 80 * dollar, hourOn: 86_250_000_000},
		{name: "raise off", before: old(false), after: to(150*dollar, false), now: 30 * dollar, hourOn: 36_250_000_000},
		// The flag of the new limit decides.
		{name: "raise, flag switched on", before: old(false), after: to(150*dollar, true), now: 80 * dollar, hourOn: 86_250_000_000},
		{name: "raise, flag switched off", before: old(true), after: to(150*dollar, false), now: 30 * dollar, hourOn: 36_250_000_000},
		// Lowering caps what is available at the new amount either way.
		{name: "lower below available on", before: old(true), after: to(20*dollar, true), now: 20 * dollar, hourOn: 20 * dollar},
		{name: "lower below available off", before: old(false), after: to(20*dollar, false), now: 20 * dollar, hourOn: 20 * dollar},
		// $50/24 an hour is 2_083_333_333.3 nanos: rounded down.
		{name: "lower above available", before: old(true), after: to(50*dollar, true), now: 30 * dollar, hourOn: 32_083_333_333},
		// A new limit starts full (on) or empty (off).
		{name: "add on", after: to(240*dollar, true), now: 240 * dollar, hourOn: 240 * dollar},
		{name: "add off", after: to(240*dollar, false), now: 0, hourOn: 10 * dollar},
		// An unchanged limit keeps its state: the refill counts from t0,
		// so its fraction of a nano is not lost at the change (a re-anchored
		// state would give ..._666).
		{name: "unchanged", before: old(true), after: old(true), now: 30 * dollar, hourOn: 34_166_666_667},
		{name: "flag alone", before: old(true), after: old(false), now: 30 * dollar, hourOn: 34_166_666_667},
		{name: "removed", before: old(true), after: nil, removed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A day old, so that even a limit that started empty is full.
			s := limits.NewSet(tt.before, nil, t0.Add(-24*h))
			// Spend down to $30 available at t0+1h.
			if tt.before != nil {
				s.Debit(limits.Usage{Spend: money.Nanos(100*dollar + 100*dollar/24 - 30*dollar)}, t0)
				if got := available(t, s, spendDay, t0.Add(h)); got != 30*dollar {
					t.Fatalf("before the change: %d", got)
				}
			}
			s.Reconfigure(tt.after, nil, t0.Add(h))
			if tt.removed {
				if st := s.Status(t0.Add(h)); len(st) != 0 {
					t.Fatalf("removed limit still there: %+v", st)
				}
				return
			}
			if got := available(t, s, spendDay, t0.Add(h)); got != tt.now {
				t.Errorf("at the change: %d, want %d", got, tt.now)
			}
			if got := available(t, s, spendDay, t0.Add(2*h)); got != tt.hourOn {
				t.Errorf("an hour later: %d, want %d", got, tt.hourOn)
			}
			amount := tt.after[0].Amount
			if got := available(t, s, spendDay, t0.Add(30*24*h)); got != amount {
				t.Errorf("a month later: %d, want the amount %d", got, amount)
			}
		})
	}
}

// TestReconfigureUnchangedKeepsFractions: an unchanged limit keeps its state
// exactly, so a key update does not round away a partial refill.
func TestReconfigureUnchangedKeepsFractions(t *testing.T) {
	l := []*eventsv1.Limit{lim(requests, minute, 60, rolling, false)}
	s := limits.NewSet(l, nil, t0) // empty at t0
	id := limits.ID{Metric: requests, Interval: minute}
	before, _ := s.State(id)
	s.Reconfigure(l, nil, t0.Add(500*time.Millisecond))
	if after, _ := s.State(id); after != before {
		t.Errorf("state changed from %+v to %+v", before, after)
	}
	if got := available(t, s, id, t0.Add(time.Second)); got != 1 {
		t.Errorf("available after 1 s: %d, want 1", got)
	}
}

// TestReconfigureCalendar: a new calendar limit starts with nothing used, and
// changing the amount keeps what was used.
func TestReconfigureCalendar(t *testing.T) {
	cal := func(amount int64) []*eventsv1.Limit {
		return []*eventsv1.Limit{lim(spend, day, amount, calendar, false)}
	}
	s := limits.NewSet(nil, nil, t0)
	s.Reconfigure(cal(100*dollar), nil, t0)
	if got := available(t, s, spendDay, t0); got != 100*dollar {
		t.Errorf("new calendar limit: %d, want all", got)
	}
	s.Debit(limits.Usage{Spend: 70 * money.Dollar}, t0)
	for _, tt := range []struct{ amount, want int64 }{
		{150 * dollar, 80 * dollar},
		{50 * dollar, -20 * dollar}, // keeps used: over the new amount
		{100 * dollar, 30 * dollar},
	} {
		s.Reconfigure(cal(tt.amount), nil, t0.Add(time.Hour))
		if got := available(t, s, spendDay, t0.Add(time.Hour)); got != tt.want {
			t.Errorf("amount %d: available %d, want %d", tt.amount, got, tt.want)
		}
	}
}

// TestReconfigureWindow: switching window carries what is available (to
// rolling) or what is used (to calendar).
func TestReconfigureWindow(t *testing.T) {
	s := limits.NewSet([]*eventsv1.Limit{lim(spend, day, 100*dollar, rolling, true)}, nil, t0)
	s.Debit(limits.Usage{Spend: 70 * money.Dollar}, t0)
	s.Reconfigure([]*eventsv1.Limit{lim(spend, day, 100*dollar, calendar, false)}, nil, t0)
	if ls := s.Status(t0)[0]; ls.Used != 70*dollar || ls.Available != 30*dollar {
		t.Errorf("to calendar: %+v, want used $70", ls)
	}
	// Noon to midnight UTC: the calendar window ends and usage resets.
	if got := available(t, s, spendDay, t0.Add(12*time.Hour)); got != 100*dollar {
		t.Errorf("next day: %d", got)
	}
	s.Reconfigure([]*eventsv1.Limit{lim(spend, day, 100*dollar, rolling, true)}, nil, t0.Add(time.Hour))
	if got := available(t, s, spendDay, t0.Add(time.Hour)); got != 30*dollar {
		t.Errorf("back to rolling: %d, want $30", got)
	}
}

// TestReconfigureTimeZone: a calendar limit that changes time zone keeps its
// usage in the window the new zone is in.
func TestReconfigureTimeZone(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	l := []*eventsv1.Limit{lim(spend, day, 100*dollar, calendar, false)}
	noon := time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)
	s := limits.NewSet(l, nil, noon)
	s.Debit(limits.Usage{Spend: 70 * money.Dollar}, noon)
	s.Reconfigure(l, berlin, noon)
	if got := available(t, s, spendDay, noon); got != 30*dollar {
		t.Errorf("after the change: %d, want $30", got)
	}
	// Berlin's day ends at 23:00 UTC.
	if got := available(t, s, spendDay, time.Date(2026, 3, 2, 23, 0, 0, 0, time.UTC)); got != 100*dollar {
		t.Errorf("at Berlin's midnight: %d, want all", got)
	}
}

func TestNewKeySetStartsFull(t *testing.T) {
	l := []*eventsv1.Limit{lim(spend, day, 240*dollar, rolling, false), lim(spend, month, 100*dollar, calendar, false)}
	s := limits.NewKeySet(l, nil, t0)
	for _, st := range s.Status(t0) {
		if st.Available != st.Amount {
			t.Fatalf("%v: available %d, want the full %d", st.ID, st.Available, st.Amount)
		}
	}
	// Raising it later without available_immediately leaves what is available.
	raised := []*eventsv1.Limit{lim(spend, day, 480*dollar, rolling, false), l[1]}
	s.Debit(limits.Usage{Spend: money.Nanos(240 * dollar)}, t0)
	s.Reconfigure(raised, nil, t0)
	if got := s.Status(t0)[0].Available; got != 0 {
		t.Fatalf("raise without available_immediately made %d available at once", got)
	}
}
