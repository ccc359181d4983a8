package limits_test

import (
	"fmt"
	"math/big"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/limits"
)

// ref is the reference model of one key's limits for TestAgainstReference. It
// is written for clarity, not speed, and shares no code with the package: a
// rolling level is an exact fraction advanced step by step, and a calendar
// window is named by its local date.
type ref struct {
	loc  *time.Location
	lims [12]*refLimit // by metric, then interval
	incs int           // limits ever added, to tell a re-added limit apart
}

type refLimit struct {
	rule     *eventsv1.Limit
	level    *big.Rat  // rolling: available at at, exactly
	at       time.Time // rolling: when level was computed
	used     int64     // calendar: usage in window
	window   string    // calendar: the local date or month used belongs to
	reserved int64
	inc      int
}

type refReservation struct {
	held [12]int64
	inc  [12]int
}

func newRef(loc *time.Location) *ref { return &ref{loc: loc} }

func isCalendar(l *eventsv1.Limit) bool { return l.Window == calendar }

func period(iv eventsv1.Interval) time.Duration {
	return map[eventsv1.Interval]time.Duration{minute: time.Minute, hour: time.Hour, day: 24 * time.Hour, month: 30 * 24 * time.Hour}[iv]
}

func (m *ref) windowOf(l *eventsv1.Limit, t time.Time) string {
	if l.Interval == month {
		return t.In(m.loc).Format("2006-01")
	}
	return t.In(m.loc).Format("2006-01-02")
}

func floor(r *big.Rat) int64 {
	return new(big.Int).Div(r.Num(), r.Denom()).Int64() // Euclidean: rounds down
}

func rat(n int64) *big.Rat { return new(big.Rat).SetInt64(n) }

// advance refills rolling limits and closes calendar windows up to now.
func (m *ref) advance(now time.Time) {
	for _, l := range m.lims {
		switch {
		case l == nil:
		case isCalendar(l.rule):
			if w := m.windowOf(l.rule, now); w != l.window {
				l.used, l.window = 0, w
			}
		case now.After(l.at):
			refill := new(big.Rat).SetFrac(
				new(big.Int).Mul(big.NewInt(l.rule.Amount), big.NewInt(int64(now.Sub(l.at)))),
				big.NewInt(int64(period(l.rule.Interval))))
			l.level.Add(l.level, refill)
			if l.level.Cmp(rat(l.rule.Amount)) > 0 {
				l.level = rat(l.rule.Amount)
			}
			l.at = now
		}
	}
}

func (l *refLimit) available() int64 {
	if isCalendar(l.rule) {
		return l.rule.Amount - l.used
	}
	return floor(l.level)
}

func (l *refLimit) debit(n int64) {
	if isCalendar(l.rule) {
		l.used += n
	} else {
		l.level.Sub(l.level, rat(n))
	}
}

func (m *ref) debit(u limits.Usage, now time.Time) {
	m.advance(now)
	for _, l := range m.lims {
		if l != nil {
			l.debit(u.Of(l.rule.Metric))
		}
	}
}

// reconfigure follows DESIGN.md section 4; where a limit changes, what is
// available is taken rounded down.
func (m *ref) reconfigure(ls []*eventsv1.Limit, now time.Time) {
	m.advance(now)
	var next [12]*refLimit
	for _, nl := range ls {
		i := int(nl.Metric-1)*4 + int(nl.Interval-1)
		if next[i] != nil {
			continue // a second limit with the same metric and interval
		}
		old := m.lims[i]
		l := &refLimit{rule: nl, at: now, window: m.windowOf(nl, now)}
		next[i] = l
		if old == nil {
			m.incs++
			l.inc, l.level = m.incs, rat(0)
			if nl.AvailableImmediately {
				l.level = rat(nl.Amount)
			}
			continue
		}
		l.inc, l.reserved = old.inc, old.reserved
		oldAvail := old.available()
		switch {
		case isCalendar(nl) && isCalendar(old.rule):
			l.used = old.used
		case isCalendar(nl):
			l.used = old.rule.Amount - oldAvail
		case !isCalendar(old.rule) && nl.Amount == old.rule.Amount:
			l.level = new(big.Rat).Set(old.level)
		case nl.Amount > old.rule.Amount && nl.AvailableImmediately:
			l.level = rat(oldAvail + nl.Amount - old.rule.Amount)
		default:
			l.level = rat(min(oldAvail, nl.Amount))
		}
	}
	m.lims = next
}

func (m *ref) reserve(worst limits.Usage, now time.Time) (refReservation, *limits.Denial) {
	m.advance(now)
	var d *limits.Denial
	for _, l := range m.lims {
		if l == nil || l.available()-l.reserved > 0 {
			continue
		}
		wait, never := m.retryAfter(l, now)
		if d == nil || (never && !d.Never) || (!d.Never && wait > d.RetryAfter) {
			r, _ := limits.RuleOf(l.rule, m.loc)
			d = &limits.Denial{Limit: r, Left: l.available() - l.reserved, RetryAfter: wait, Never: never}
		}
	}
	if d != nil {
		return refReservation{}, d
	}
	var r refReservation
	worst.Requests = 1
	for i, l := range m.lims {
		if l != nil {
			r.held[i] = min(worst.Of(l.rule.Metric), l.available()-l.reserved)
			r.inc[i] = l.inc
			l.reserved += r.held[i]
		}
	}
	return r, nil
}

// retryAfter: a rolling limit waits until it holds one more than is reserved
// (or is full), a calendar one for its next window.
func (m *ref) retryAfter(l *refLimit, now time.Time) (time.Duration, bool) {
	if l.rule.Amount == 0 {
		return 0, true
	}
	var wait time.Duration
	if isCalendar(l.rule) {
		y, mo, d := now.In(m.loc).Date()
		next := time.Date(y, mo, d+1, 0, 0, 0, 0, m.loc)
		if l.rule.Interval == month {
			next = time.Date(y, mo+1, 1, 0, 0, 0, 0, m.loc)
		}
		wait = next.Sub(now)
	} else if target := rat(min(l.reserved+1, l.rule.Amount)); l.level.Cmp(target) < 0 {
		ns := new(big.Rat).Mul(new(big.Rat).Sub(target, l.level), rat(int64(period(l.rule.Interval))))
		ns.Quo(ns, rat(l.rule.Amount))
		wait = time.Duration(-floor(new(big.Rat).Neg(ns))) // rounded up
	}
	return max((wait + time.Second - 1).Truncate(time.Second), time.Second), false
}

func (m *ref) settle(r refReservation, actual limits.Usage, now time.Time) {
	m.advance(now)
	actual.Requests = 1
	for i, l := range m.lims {
		if l == nil {
			continue
		}
		if r.inc[i] == l.inc {
			l.reserved -= r.held[i]
		}
		l.debit(actual.Of(l.rule.Metric))
	}
}

// check compares the Set's Status with the model at now and checks the
// invariants; it returns what is wrong, or "".
func (m *ref) check(s *limits.Set, now time.Time) string {
	m.advance(now)
	got := s.Status(now)
	n := 0
	for i, l := range m.lims {
		if l == nil {
			continue
		}
		if n >= len(got) || got[n].ID != idOf(i) {
			return fmt.Sprintf("status %+v lacks %v", got, idOf(i))
		}
		g := got[n]
		n++
		avail := l.available()
		used := l.used
		if !isCalendar(l.rule) {
			used = l.rule.Amount - avail
		}
		switch {
		case g.Available != avail || g.Reserved != l.reserved || g.Used != used || g.Amount != l.rule.Amount:
			return fmt.Sprintf("%v: status %+v, model available %d (exactly %s), reserved %d, used %d",
				g.ID, g, avail, l.level.FloatString(3), l.reserved, used)
		case g.Available > g.Amount || g.Reserved < 0 || g.Remaining != max(g.Available-g.Reserved, 0):
			return fmt.Sprintf("%v: invariant broken: %+v", g.ID, g)
		case isCalendar(l.rule) && (m.windowOf(l.rule, g.ResetAt) == l.window || m.windowOf(l.rule, g.ResetAt.Add(-time.Nanosecond)) != l.window):
			return fmt.Sprintf("%v: reset at %v is not the start of the window after %s", g.ID, g.ResetAt, l.window)
		case !isCalendar(l.rule) && l.rule.Amount > 0 && g.Available < g.Amount && s.Status(g.ResetAt)[n-1].Available != g.Amount:
			return fmt.Sprintf("%v: not full at its reset time %v", g.ID, g.ResetAt)
		case !isCalendar(l.rule) && g.Available < g.Amount && g.ResetAt.After(now) && s.Status(g.ResetAt.Add(-time.Nanosecond))[n-1].Available == g.Amount:
			return fmt.Sprintf("%v: already full before its reset time %v", g.ID, g.ResetAt)
		}
	}
	if n != len(got) {
		return fmt.Sprintf("status %+v has more limits than the model", got)
	}
	return ""
}
