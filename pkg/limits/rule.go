package limits

import (
	"math"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/money"
)

// ID names a limit within a key: a key has at most one limit per metric and
// interval (DESIGN.md section 4), so this is also how metering keys its rows.
type ID struct {
	Metric   eventsv1.Metric
	Interval eventsv1.Interval
}

// numIDs is how many IDs exist: 3 metrics times 4 intervals.
const numIDs = 12

// index maps a valid ID to 0..numIDs-1, in the order Status reports limits.
func (id ID) index() (int, bool) {
	m, iv := int(id.Metric), int(id.Interval)
	if m < 1 || m > 3 || iv < 1 || iv > 4 {
		return 0, false
	}
	return (m-1)*4 + iv - 1, true
}

// Rule is one limit of a key in the form the arithmetic needs.
type Rule struct {
	ID
	// Window is WINDOW_ROLLING or WINDOW_CALENDAR; RuleOf reads an
	// unspecified window as rolling, as the admin API does.
	Window eventsv1.Window
	// Amount is nano-dollars for SPEND, a count for TOKENS and REQUESTS.
	Amount int64
	// AvailableImmediately matters only when a rolling limit is added or
	// its amount changes (NewState, Reconfigure).
	AvailableImmediately bool
	// Loc is the key's time zone for calendar windows; nil means UTC.
	Loc *time.Location
}

// RuleOf converts a limit from a key event. ok is false for a metric or
// interval this package does not know (keys.Validate refuses those); a
// negative amount counts as 0.
func RuleOf(l *eventsv1.Limit, loc *time.Location) (r Rule, ok bool) {
	r = Rule{
		ID:                   ID{Metric: l.GetMetric(), Interval: l.GetInterval()},
		Window:               l.GetWindow(),
		Amount:               max(l.GetAmount(), 0),
		AvailableImmediately: l.GetAvailableImmediately(),
		Loc:                  loc,
	}
	if r.Window != eventsv1.Window_WINDOW_CALENDAR {
		r.Window = eventsv1.Window_WINDOW_ROLLING
	}
	_, ok = r.index()
	return r, ok
}

// State is what one limit remembers between operations. Only the fields of
// the limit's window mean anything; the zero State has nothing used.
type State struct {
	// Level is, for a rolling limit, what was available at At before the
	// refill since At. It may be negative.
	Level int64
	// Used is, for a calendar limit, the usage counted in the window that
	// starts at At.
	Used int64
	// At is, for a rolling limit, when Level was measured; for a calendar
	// limit, the start of the window Used belongs to.
	At time.Time
}

func (r *Rule) rolling() bool { return r.Window != eventsv1.Window_WINDOW_CALENDAR }

func (r *Rule) loc() *time.Location {
	if r.Loc == nil {
		return time.UTC
	}
	return r.Loc
}

// period is a rolling interval in nanoseconds; a rolling month is 30 days.
func (r *Rule) period() int64 {
	switch r.Interval {
	case eventsv1.Interval_INTERVAL_MINUTE:
		return int64(time.Minute)
	case eventsv1.Interval_INTERVAL_HOUR:
		return int64(time.Hour)
	case eventsv1.Interval_INTERVAL_DAY:
		return int64(24 * time.Hour)
	default:
		return int64(30 * 24 * time.Hour)
	}
}

// NewState is the state of a limit added at now: a rolling limit starts full
// when AvailableImmediately is set and empty otherwise; a calendar limit
// starts with nothing used.
func (r *Rule) NewState(now time.Time) State {
	now = now.Round(0)
	if !r.rolling() {
		return State{At: r.windowStart(now)}
	}
	if r.AvailableImmediately {
		return State{Level: r.Amount, At: now}
	}
	return State{At: now}
}

// Available is what the limit has left at now, before the reservations of
// requests in flight. It never exceeds Amount and may be negative.
func (r *Rule) Available(st State, now time.Time) int64 {
	if r.rolling() {
		return r.rollingAvailable(st, now)
	}
	return satSub(r.Amount, r.used(st, now))
}

// Debit returns the state after usage n (in the limit's metric) at now.
func (r *Rule) Debit(st State, n int64, now time.Time) State {
	if n <= 0 {
		return st
	}
	if r.rolling() {
		at := later(now, st.At)
		if r.rollingAvailable(st, at) == r.Amount {
			// Re-anchor a full bucket: it does not refill, so moving At
			// loses nothing, and At stays old only while it matters.
			return State{Level: r.clampLevel(r.Amount - n), At: at}
		}
		return State{Level: r.clampLevel(satSub(r.clampLevel(st.Level), n)), At: st.At}
	}
	if r.windowAfter(now, st.At) {
		return State{Used: n, At: r.windowStart(now)}
	}
	return State{Used: satAdd(max(st.Used, 0), n), At: st.At}
}

// Reconfigure returns the state of limit r, which replaces old (same metric
// and interval) at now, given old's state st. For rolling limits, raising the
// amount adds the difference to what is available when AvailableImmediately
// is set and leaves it unchanged otherwise, lowering caps what is available
// at the new amount, and an unchanged amount keeps the state. A calendar
// limit keeps what it used, whatever the amount. A limit that becomes rolling
// carries over what is available and then follows the rolling rules; one that
// becomes calendar carries over what is used (Amount minus what is
// available). A calendar limit whose time zone changes keeps its usage in the
// window that the new zone is in at now.
func (r *Rule) Reconfigure(old *Rule, st State, now time.Time) State {
	now = now.Round(0)
	switch {
	case r.rolling() && old.rolling() && r.Amount == old.Amount:
		return st
	case !r.rolling() && !old.rolling() && r.loc().String() == old.loc().String():
		// The amount alone changed: Used stays, so lowering caps what is
		// available at the new amount on its own.
		return st
	case !r.rolling():
		// If time went backwards, stay in the state's window rather than
		// reopen an earlier one.
		at := later(now, st.At)
		used := satSub(old.Amount, old.Available(st, at))
		if !old.rolling() {
			used = old.used(st, at)
		}
		return State{Used: used, At: r.windowStart(at)}
	}
	at := now
	if old.rolling() {
		at = later(now, st.At)
	}
	avail := old.Available(st, at)
	level := min(avail, r.Amount)
	if r.Amount > old.Amount && r.AvailableImmediately {
		level = satAdd(avail, r.Amount-old.Amount)
	}
	return State{Level: r.clampLevel(level), At: at}
}

// rollingAvailable is min(Amount, Level + ⌊Amount·(now−At)/period⌋).
func (r *Rule) rollingAvailable(st State, now time.Time) int64 {
	level := r.clampLevel(st.Level)
	if level >= r.Amount {
		return r.Amount
	}
	dt := now.Sub(st.At)
	if dt <= 0 {
		return level
	}
	refill, ok := money.MulDiv(r.Amount, int64(dt), r.period())
	// clampLevel keeps Amount-level within int64; a refill that overflows
	// is more than any bucket can hold.
	if !ok || refill >= r.Amount-level {
		return r.Amount
	}
	return level + refill
}

// clampLevel keeps a rolling level in [Amount−MaxInt64, Amount], so that
// Amount−level, the room left in the bucket, always fits in an int64.
func (r *Rule) clampLevel(level int64) int64 {
	return min(max(level, r.Amount-math.MaxInt64), r.Amount)
}

// rollingBase is a (level, at) from which the refill formula gives the same
// availability as st from now on, with the fewest steps: a full bucket is
// (Amount, now).
func (r *Rule) rollingBase(st State, now time.Time) (int64, time.Time) {
	at := later(now, st.At)
	if r.rollingAvailable(st, at) == r.Amount {
		return r.Amount, at
	}
	return r.clampLevel(st.Level), st.At
}

// refillTime is when a rolling bucket reaches target (≤ Amount), with no
// usage in between: the first t with Level + ⌊Amount·(t−At)/period⌋ ≥ target.
func (r *Rule) refillTime(st State, target int64, now time.Time) (t time.Time, ok bool) {
	level, at := r.rollingBase(st, now)
	if level >= target {
		return at, true
	}
	if r.Amount == 0 {
		return time.Time{}, false
	}
	wait, ok := money.MulDivCeil(target-level, r.period(), r.Amount)
	if !ok {
		wait = math.MaxInt64
	}
	return at.Add(time.Duration(wait)), true
}

// used is a calendar limit's usage in the window that is current at now.
func (r *Rule) used(st State, now time.Time) int64 {
	if r.windowAfter(now, st.At) {
		return 0
	}
	return max(st.Used, 0)
}

// windowAfter reports whether now is in a later calendar window than start.
func (r *Rule) windowAfter(now, start time.Time) bool {
	return r.window(now) > r.window(start)
}

// window numbers calendar windows in increasing order. Days and months
// compare local dates, which is correct across DST changes; minutes and hours
// are UTC ones, which local clocks repeat or skip around DST changes.
func (r *Rule) window(t time.Time) int64 {
	switch r.Interval {
	case eventsv1.Interval_INTERVAL_MINUTE, eventsv1.Interval_INTERVAL_HOUR:
		return floorDiv(t.Unix(), r.period()/int64(time.Second))
	}
	y, m, d := t.In(r.loc()).Date()
	if r.Interval == eventsv1.Interval_INTERVAL_MONTH {
		return int64(y)*12 + int64(m)
	}
	return (int64(y)*100+int64(m))*100 + int64(d)
}

// windowStart is the first instant of the calendar window that holds t.
func (r *Rule) windowStart(t time.Time) time.Time {
	return r.windowBoundary(t, 0)
}

// windowEnd is the first instant of the calendar window after the one that
// holds t.
func (r *Rule) windowEnd(t time.Time) time.Time {
	return r.windowBoundary(t, 1)
}

func (r *Rule) windowBoundary(t time.Time, next int) time.Time {
	switch r.Interval {
	case eventsv1.Interval_INTERVAL_MINUTE, eventsv1.Interval_INTERVAL_HOUR:
		p := r.period() / int64(time.Second)
		return time.Unix((floorDiv(t.Unix(), p)+int64(next))*p, 0).In(r.loc())
	}
	y, m, d := t.In(r.loc()).Date()
	if r.Interval == eventsv1.Interval_INTERVAL_MONTH {
		return time.Date(y, m+time.Month(next), 1, 0, 0, 0, 0, r.loc())
	}
	// Where midnight is skipped by a DST change, time.Date normalizes to
	// the first instant of the day, which is what a window needs.
	return time.Date(y, m, d+next, 0, 0, 0, 0, r.loc())
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b.Round(0)
	}
	return a.Round(0)
}

// satAdd and satSub saturate instead of wrapping around.
func satAdd(a, b int64) int64 {
	s := a + b
	if (s > a) != (b > 0) {
		if b > 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return s
}

func satSub(a, b int64) int64 {
	if b == math.MinInt64 {
		return satAdd(satAdd(a, math.MaxInt64), 1)
	}
	return satAdd(a, -b)
}
