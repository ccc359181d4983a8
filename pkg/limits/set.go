package limits

import (
	"math"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/money"
)

// Usage is what requests used, or may use at worst.
type Usage struct {
	Spend        money.Nanos
	InputTokens  int64
	OutputTokens int64
	Requests     int64
}

// Of is the usage a limit of metric m counts: TOKENS limits count input and
// output tokens together. Negative fields count as 0, so a bad caller cannot
// give money back.
func (u Usage) Of(m eventsv1.Metric) int64 {
	switch m {
	case eventsv1.Metric_METRIC_SPEND:
		return max(int64(u.Spend), 0)
	case eventsv1.Metric_METRIC_TOKENS:
		return satAdd(max(u.InputTokens, 0), max(u.OutputTokens, 0))
	case eventsv1.Metric_METRIC_REQUESTS:
		return max(u.Requests, 0)
	}
	return 0
}

// Set is all limits of one key, with their states and what the requests in
// flight have reserved. It is not safe for concurrent use: callers serialize
// the operations on one key.
type Set struct {
	// gen counts the Reconfigures that added a limit, so that Settle does
	// not release a reservation from a limit added after it was made.
	gen    uint64
	limits []limit // ordered by ID.index
}

type limit struct {
	rule     Rule
	state    State
	reserved int64
	added    uint64 // the gen in which the limit was added
	idx      int
}

// Reservation is what one request reserved, per limit. It is a value, so
// Reserve and Settle allocate nothing; settle each one exactly once.
type Reservation struct {
	gen  uint64
	held [numIDs]int64
}

// Held is what the reservation holds on limit id.
func (r Reservation) Held(id ID) int64 {
	i, ok := id.index()
	if !ok {
		return 0
	}
	return r.held[i]
}

// Denial says why Reserve refused a request and when to try again.
type Denial struct {
	// Limit is the limit that refused; when several did, the one that
	// frees up last.
	Limit Rule
	// Left is what Limit had left after the reservations in flight: ≤ 0.
	Left int64
	// RetryAfter is how long until Limit has something left, assuming the
	// requests in flight spend what they reserved, in whole seconds and at
	// least 1 s (for Retry-After). It is 0 when Never is set.
	RetryAfter time.Duration
	// Never is set when waiting cannot help: the limit's amount is 0.
	Never bool
}

// NewSet returns the limits of a key that took effect at now, each started
// by Rule.NewState. Limits with an unknown metric or interval are ignored,
// and so is a second limit with the same metric and interval (keys.Validate
// refuses both). loc is the key's time zone for calendar windows; nil means
// UTC.
func NewSet(limits []*eventsv1.Limit, loc *time.Location, now time.Time) *Set {
	s := &Set{}
	s.Reconfigure(limits, loc, now)
	return s
}

// NewKeySet is the Set of a key created at created: every limit starts full
// (a rolling bucket at its amount, a calendar window with nothing used).
// Tollgate's choice where DESIGN.md is silent: a new key is usable at once;
// available_immediately governs limits raised or added to an existing key
// (Reconfigure), where it decides whether the change is spendable now.
func NewKeySet(limits []*eventsv1.Limit, loc *time.Location, created time.Time) *Set {
	s := NewSet(limits, loc, created)
	for i := range s.limits {
		l := &s.limits[i]
		if l.rule.rolling() {
			l.state = State{Level: l.rule.Amount, At: created.Round(0)}
		}
	}
	return s
}

// Reconfigure replaces the key's limits with limits at now. A limit that is
// new starts by Rule.NewState, one that changed follows Rule.Reconfigure and
// one that is gone disappears with its reservations. Reservations of requests
// in flight stay on the limits that remain.
func (s *Set) Reconfigure(limits []*eventsv1.Limit, loc *time.Location, now time.Time) {
	var rules [numIDs]Rule
	var set [numIDs]bool
	n := 0
	for _, l := range limits {
		r, ok := RuleOf(l, loc)
		if i, _ := r.index(); ok && !set[i] {
			rules[i], set[i] = r, true
			n++
		}
	}
	next := make([]limit, 0, n)
	old := s.limits
	added := false
	for i, r := range rules {
		if !set[i] {
			continue
		}
		for len(old) > 0 && old[0].idx < i {
			old = old[1:]
		}
		if len(old) > 0 && old[0].idx == i {
			l := old[0]
			l.state = r.Reconfigure(&l.rule, l.state, now)
			l.rule = r
			next = append(next, l)
			continue
		}
		next = append(next, limit{rule: r, state: r.NewState(now), added: s.gen + 1, idx: i})
		added = true
	}
	if added {
		s.gen++
	}
	s.limits = next
}

// Reserve admits a request at now if every limit has something left after
// the reservations in flight, and then reserves on each limit the request's
// worst case capped at what is left (one request on REQUESTS limits, whatever
// worst.Requests says). It reserves on all limits or on none: a refused
// request gets a Denial and changes nothing.
func (s *Set) Reserve(worst Usage, now time.Time) (Reservation, *Denial) {
	worst.Requests = 1
	var left [numIDs]int64
	refused := false
	for i := range s.limits {
		l := &s.limits[i]
		left[i] = satSub(l.rule.Available(l.state, now), l.reserved)
		refused = refused || left[i] <= 0
	}
	if refused {
		return Reservation{}, s.deny(&left, now)
	}
	r := Reservation{gen: s.gen}
	for i := range s.limits {
		l := &s.limits[i]
		held := min(worst.Of(l.rule.Metric), left[i])
		l.reserved += held // held ≤ left ≤ MaxInt64 − reserved
		r.held[l.idx] = held
	}
	return r, nil
}

// deny explains a refusal, given what each limit has left.
func (s *Set) deny(left *[numIDs]int64, now time.Time) *Denial {
	var d Denial
	found := false
	for i := range s.limits {
		if left[i] > 0 {
			continue
		}
		l := &s.limits[i]
		wait, never := l.rule.retryAfter(l.state, l.reserved, now)
		if !found || (never && !d.Never) || (!d.Never && wait > d.RetryAfter) {
			d = Denial{Limit: l.rule, Left: left[i], RetryAfter: wait, Never: never}
			found = true
		}
	}
	return &d
}

// Settle ends a request admitted by Reserve at now: it releases r and debits
// actual, which may be more or less than was reserved (a limit then ends
// below zero by at most what the request cost beyond its reservation). It
// debits one request on REQUESTS limits, whatever actual.Requests says.
// Settle also ends a request that failed or was cut off: actual is then what
// it used before it ended.
func (s *Set) Settle(r Reservation, actual Usage, now time.Time) {
	actual.Requests = 1
	s.Release(r)
	s.Debit(actual, now)
}

// Release ends a request admitted by Reserve without debiting it: for a
// request whose usage is in the states already (an authoritative balance
// that folded it arrived before the request was settled).
func (s *Set) Release(r Reservation) {
	for i := range s.limits {
		l := &s.limits[i]
		if l.added <= r.gen {
			l.reserved = max(l.reserved-r.held[l.idx], 0)
		}
	}
}

// DebitLimit is Debit on limit id alone (nothing if the set has no such
// limit).
func (s *Set) DebitLimit(id ID, u Usage, now time.Time) {
	if l := s.find(id); l != nil {
		l.state = l.rule.Debit(l.state, u.Of(l.rule.Metric), now)
	}
}

// Debit charges usage that reserved nothing here: usage events folded by
// metering, or by an edge the spend of its own not yet in the authoritative
// state. It counts u.Requests requests.
func (s *Set) Debit(u Usage, now time.Time) {
	for i := range s.limits {
		l := &s.limits[i]
		l.state = l.rule.Debit(l.state, u.Of(l.rule.Metric), now)
	}
}

// State returns limit id's state, for metering to store it.
func (s *Set) State(id ID) (State, bool) {
	if l := s.find(id); l != nil {
		return l.state, true
	}
	return State{}, false
}

// SetState replaces limit id's state, e.g. with the authoritative one from
// metering, keeping its reservations. It reports false when the key has no
// such limit.
func (s *Set) SetState(id ID, st State) bool {
	l := s.find(id)
	if l == nil {
		return false
	}
	l.state = st
	return true
}

func (s *Set) find(id ID) *limit {
	i, ok := id.index()
	for j := range s.limits {
		if ok && s.limits[j].idx == i {
			return &s.limits[j]
		}
	}
	return nil
}

// Status reports every limit at now, by metric (SPEND, TOKENS, REQUESTS) and
// then interval (MINUTE to MONTH).
func (s *Set) Status(now time.Time) []LimitStatus {
	out := make([]LimitStatus, len(s.limits))
	for i := range s.limits {
		l := &s.limits[i]
		out[i] = l.rule.Status(l.state, l.reserved, now)
	}
	return out
}

// Tightest reports the limit of metric m with the least Remaining at now
// (the later ResetAt on a tie), for the x-ratelimit-*-<metric> headers,
// which have room for one limit per metric. ok is false when the key has no
// limit of that metric.
func (s *Set) Tightest(m eventsv1.Metric, now time.Time) (st LimitStatus, ok bool) {
	for i := range s.limits {
		l := &s.limits[i]
		if l.rule.Metric != m {
			continue
		}
		c := l.rule.Status(l.state, l.reserved, now)
		if !ok || c.Remaining < st.Remaining || (c.Remaining == st.Remaining && c.ResetAt.After(st.ResetAt)) {
			st, ok = c, true
		}
	}
	return st, ok
}

// LimitStatus is one limit as a balance report and the x-ratelimit-* headers
// show it. Amounts are in the limit's metric.
type LimitStatus struct {
	Rule
	// State is the limit's state, for metering to store or publish.
	State State
	// Used is, for a calendar limit, the usage in the current window; for a
	// rolling one, Amount − Available (what has not refilled yet).
	Used int64
	// Available is what is left before reservations; it may be negative.
	Available int64
	// Reserved is what requests in flight hold.
	Reserved int64
	// Remaining is max(0, Available − Reserved): x-ratelimit-remaining.
	Remaining int64
	// ResetAt is when a rolling limit is full again if nothing more is used
	// (now if it is full; the zero time if it never will be, with an amount
	// of 0 and a negative level) or when a calendar window ends.
	ResetAt time.Time
}

// Status reports the limit with state st and reserved held by requests in
// flight.
func (r *Rule) Status(st State, reserved int64, now time.Time) LimitStatus {
	ls := LimitStatus{Rule: *r, State: st, Available: r.Available(st, now), Reserved: reserved}
	ls.Remaining = max(satSub(ls.Available, reserved), 0)
	if r.rolling() {
		ls.Used = satSub(r.Amount, ls.Available)
		ls.ResetAt, _ = r.refillTime(st, r.Amount, now)
	} else {
		ls.Used = r.used(st, now)
		ls.ResetAt = r.windowEnd(later(now, st.At))
	}
	return ls
}

// retryAfter is how long until a refused limit has something left after
// reserved, in whole seconds and at least one; never is set when waiting
// cannot help. A rolling limit aims at reserved+1 (capped at Amount, as a
// bucket holds no more), which assumes the requests in flight spend what they
// reserved; a calendar limit waits for its next window.
func (r *Rule) retryAfter(st State, reserved int64, now time.Time) (wait time.Duration, never bool) {
	if r.Amount == 0 {
		return 0, true
	}
	var at time.Time
	if r.rolling() {
		var ok bool
		if at, ok = r.refillTime(st, min(satAdd(reserved, 1), r.Amount), now); !ok {
			return 0, true
		}
	} else {
		at = r.windowEnd(later(now, st.At))
	}
	wait = at.Sub(now)
	if wait > math.MaxInt64-time.Second {
		return math.MaxInt64 / time.Second * time.Second, false
	}
	return max((wait+time.Second-1)/time.Second*time.Second, time.Second), false
}
