package limits_test

import (
	"testing"
	"time"
	_ "time/tzdata" // the tests need Europe/Berlin whatever the machine has

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/limits"
	"github.com/tollgate/tollgate/pkg/money"
)

func mustLoad(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestCalendar checks that calendar usage is summed from the start of the
// local day or month and resets at the boundary. Each case spends $10 at
// spent and reads the limit ($100) at each of reads.
func TestCalendar(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	type read struct {
		at    string
		used  int64 // dollars
		reset string
	}
	tests := []struct {
		name  string
		iv    eventsv1.Interval
		loc   *time.Location
		spent string
		start string // the window State.At holds after spending
		reads []read
	}{
		{name: "UTC day by default", iv: day, spent: "2026-03-02T12:00:00Z", start: "2026-03-02T00:00:00Z", reads: []read{
			{"2026-03-02T23:59:59Z", 10, "2026-03-03T00:00:00Z"},
			{"2026-03-03T00:00:00Z", 0, "2026-03-04T00:00:00Z"},
		}},
		{name: "window opened at 23:59 resets at 00:00", iv: day, loc: berlin, spent: "2026-03-02T22:59:00Z", start: "2026-03-01T23:00:00Z", reads: []read{
			{"2026-03-02T22:59:59Z", 10, "2026-03-02T23:00:00Z"},
			{"2026-03-02T23:00:00Z", 0, "2026-03-03T23:00:00Z"},
		}},
		// 2026-03-29 has 23 hours in Berlin: CET ends at 02:00.
		{name: "Berlin day across DST start", iv: day, loc: berlin, spent: "2026-03-28T23:30:00Z", start: "2026-03-28T23:00:00Z", reads: []read{
			{"2026-03-29T12:00:00Z", 10, "2026-03-29T22:00:00Z"},
			{"2026-03-29T21:59:59Z", 10, "2026-03-29T22:00:00Z"},
			{"2026-03-29T22:00:00Z", 0, "2026-03-30T22:00:00Z"},
		}},
		// 2026-10-25 has 25 hours in Berlin: CEST ends at 03:00.
		{name: "Berlin day across DST end", iv: day, loc: berlin, spent: "2026-10-24T22:00:00Z", start: "2026-10-24T22:00:00Z", reads: []read{
			{"2026-10-25T01:30:00Z", 10, "2026-10-25T23:00:00Z"},
			{"2026-10-25T22:59:59Z", 10, "2026-10-25T23:00:00Z"},
			{"2026-10-25T23:00:00Z", 0, "2026-10-26T23:00:00Z"},
		}},
		{name: "Berlin month end", iv: month, loc: berlin, spent: "2026-01-31T22:59:00Z", start: "2025-12-31T23:00:00Z", reads: []read{
			{"2026-01-31T22:59:59Z", 10, "2026-01-31T23:00:00Z"},
			{"2026-01-31T23:00:00Z", 0, "2026-02-28T23:00:00Z"},
		}},
		{name: "Berlin day at month end", iv: day, loc: berlin, spent: "2026-01-31T22:59:00Z", start: "2026-01-30T23:00:00Z", reads: []read{
			{"2026-01-31T23:00:00Z", 0, "2026-02-01T23:00:00Z"},
		}},
		// The month across DST is 31 days minus an hour of UTC.
		{name: "Berlin month across DST", iv: month, loc: berlin, spent: "2026-03-15T12:00:00Z", start: "2026-02-28T23:00:00Z", reads: []read{
			{"2026-03-31T21:59:59Z", 10, "2026-03-31T22:00:00Z"},
			{"2026-03-31T22:00:00Z", 0, "2026-04-30T22:00:00Z"},
		}},
		{name: "UTC February", iv: month, spent: "2026-02-01T00:00:00Z", start: "2026-02-01T00:00:00Z", reads: []read{
			{"2026-02-28T23:59:59Z", 10, "2026-03-01T00:00:00Z"},
			{"2026-03-01T00:00:00Z", 0, "2026-04-01T00:00:00Z"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spent := utc(tt.spent)
			s := limits.NewSet([]*eventsv1.Limit{lim(spend, tt.iv, 100*dollar, calendar, false)}, tt.loc, spent.Add(-time.Minute))
			s.Debit(limits.Usage{Spend: 10 * money.Dollar}, spent)
			id := limits.ID{Metric: spend, Interval: tt.iv}
			if st, _ := s.State(id); !st.At.Equal(utc(tt.start)) || st.Used != 10*dollar {
				t.Errorf("state %+v, want used $10 from %s", st, tt.start)
			}
			for _, r := range tt.reads {
				ls := s.Status(utc(r.at))[0]
				if ls.Used != r.used*dollar || ls.Available != (100-r.used)*dollar || !ls.ResetAt.Equal(utc(r.reset)) {
					t.Errorf("at %s: used %d, available %d, reset %v; want used $%d, reset %s",
						r.at, ls.Used, ls.Available, ls.ResetAt.UTC(), r.used, r.reset)
				}
			}
		})
	}
}

// TestCalendarNewWindow: usage after a reset starts a new sum,
// and usage reported late (before the state's window) still counts.
func TestCalendarNewWindow(t *testing.T) {
	r, _ := limits.RuleOf(lim(tokens, day, 1000, calendar, false), nil)
	st := r.Debit(limits.State{}, 400, utc("2026-03-02T10:00:00Z"))
	st = r.Debit(st, 700, utc("2026-03-03T10:00:00Z"))
	if st.Used != 700 || !st.At.Equal(utc("2026-03-03T00:00:00Z")) {
		t.Errorf("next day: %+v, want 700 from 2026-03-03", st)
	}
	st = r.Debit(st, 50, utc("2026-03-02T23:59:59Z"))
	if got := r.Available(st, utc("2026-03-03T10:00:00Z")); got != 250 {
		t.Errorf("late usage: available %d, want 250", got)
	}
}

// TestCalendarHour: calendar minutes and hours, which keys.Validate refuses,
// follow UTC ones whatever the zone.
func TestCalendarHour(t *testing.T) {
	r, _ := limits.RuleOf(lim(requests, hour, 10, calendar, false), mustLoad(t, "Asia/Kolkata"))
	st := r.Debit(limits.State{}, 4, utc("2026-03-02T10:59:59Z"))
	if ls := r.Status(st, 0, utc("2026-03-02T10:30:00Z")); ls.Used != 4 || !ls.ResetAt.Equal(utc("2026-03-02T11:00:00Z")) {
		t.Errorf("in the hour: %+v", ls)
	}
	if got := r.Available(st, utc("2026-03-02T11:00:00Z")); got != 10 {
		t.Errorf("next hour: %d", got)
	}
	m, _ := limits.RuleOf(lim(requests, minute, 10, calendar, false), nil)
	st = m.Debit(limits.State{}, 4, utc("2026-03-02T10:59:59Z"))
	if !st.At.Equal(utc("2026-03-02T10:59:00Z")) || m.Available(st, utc("2026-03-02T11:00:00Z")) != 10 {
		t.Errorf("minute: %+v", st)
	}
}
