// Package fold is metering's pure core: it folds usage events into a key's
// balances (one limits.State per limit), totals and alerts, recognising
// every event it has seen before. No I/O and no clock: the PostgreSQL
// adapter loads the state, calls Apply, and stores the result in one
// transaction, so the same events give the same numbers live and in a
// rebuild.
package fold

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/limits"
	"github.com/tollgate/tollgate/pkg/money"
)

// Version is a key's limit configuration from one key event on.
type Version struct {
	Rev        uint64 // KEYS stream sequence of the event
	At         time.Time
	Created    time.Time
	Limits     []*eventsv1.Limit
	Loc        *time.Location
	Thresholds []uint32 // parts per million
	Account    string
}

// History is a key's versions, oldest first.
type History []Version

// At is the version in force at t: the latest whose event happened at or
// before t (the first version if t is earlier than all of them).
func (h History) At(t time.Time) (Version, bool) {
	if len(h) == 0 {
		return Version{}, false
	}
	i := sort.Search(len(h), func(i int) bool { return h[i].At.After(t) })
	if i == 0 {
		return h[0], true
	}
	return h[i-1], true
}

// ByRev finds the version with a revision.
func (h History) ByRev(rev uint64) (Version, bool) {
	for _, v := range h {
		if v.Rev == rev {
			return v, true
		}
	}
	return Version{}, false
}

// Mark remembers which alerts a limit has raised in its current window, so
// that a fold raises each at most once and a repeated fold raises none.
type Mark struct {
	// Window identifies the window: a calendar window's start, or for a
	// rolling limit the number of times it re-armed (refilled above the
	// thresholds it had crossed).
	Window    int64
	Threshold uint32 // highest threshold alerted, ppm; 0 none
	Exhausted bool
}

// Balance is a key's folded state.
type Balance struct {
	KeyID     string
	ConfigRev uint64
	States    map[limits.ID]limits.State
	Marks     map[limits.ID]Mark
	Requests  int64
	Input     int64
	Output    int64
	Cost      int64
	// Folded is the edges' progress published with the key's last balance,
	// carried into the next ones (store.ToProto, worker).
	Folded []*eventsv1.EdgeProgress
}

// NewBalance is the state of a key nothing was folded for.
func NewBalance(keyID string) *Balance {
	return &Balance{KeyID: keyID, States: map[limits.ID]limits.State{}, Marks: map[limits.ID]Mark{}}
}

// Alert is raised when a limit crosses one of the key's thresholds or is
// exhausted. Its ID is derived from what it is about, so a repeated fold
// raises the same ID (and the notifier deduplicates by it).
type Alert struct {
	ID        string
	KeyID     string
	Account   string
	Limit     limits.Rule
	Threshold uint32 // ppm; 0 for exhausted
	Exhausted bool
	Used      int64
	Amount    int64
	At        time.Time
}

// Apply folds one event into b, using the key's history, and returns the
// alerts it raises. The caller has checked the event is new (Progress).
func Apply(b *Balance, h History, ev *eventsv1.UsageEvent) []Alert {
	t := ev.GetOccurredAt().AsTime()
	b.Requests++
	b.Input += ev.GetInputTokens()
	b.Output += ev.GetOutputTokens()
	b.Cost += ev.GetCost()
	v, ok := h.At(t)
	if !ok {
		return nil // a key metering has never heard of: totals only
	}
	set := b.set(h, v)
	before := set.Status(t)
	set.Debit(limits.Usage{Spend: money.Nanos(ev.GetCost()), InputTokens: ev.GetInputTokens(),
		OutputTokens: ev.GetOutputTokens(), Requests: 1}, t)
	after := set.Status(t)
	b.store(set, after)
	return b.alerts(v, before, after, t)
}

// set rebuilds the limits.Set of b and brings it to version v, applying
// every key change between the version b was folded with and v, in order,
// each at its own time (available_immediately decides at the change). It
// never goes back: an event older than the configuration b already has is
// folded under that configuration, as pkg/limits charges late usage to the
// current state.
func (b *Balance) set(h History, v Version) *limits.Set {
	var s *limits.Set
	if b.ConfigRev == 0 {
		first := h[0]
		s = limits.NewKeySet(first.Limits, first.Loc, first.Created)
		b.ConfigRev = first.Rev
	} else {
		cur, ok := h.ByRev(b.ConfigRev)
		if !ok {
			cur = v
		}
		s = limits.NewSet(cur.Limits, cur.Loc, cur.At)
		for id, st := range b.States {
			s.SetState(id, st)
		}
	}
	for _, next := range h {
		if next.Rev > b.ConfigRev && next.Rev <= v.Rev {
			prev, _ := h.ByRev(b.ConfigRev)
			b.resetMarks(prev, next)
			s.Reconfigure(next.Limits, next.Loc, next.At)
			b.ConfigRev = next.Rev
		}
	}
	return s
}

// resetMarks starts new alert windows for limits that a key change added or
// moved between rolling and calendar windows (their old windows mean
// something else afterwards) and forgets those it removed. The new window is numbered from the key
// revision (shifted above any calendar window start), so its alert ids
// never repeat an earlier window's.
func (b *Balance) resetMarks(prev, next Version) {
	window := func(ls []*eventsv1.Limit) map[limits.ID]eventsv1.Window {
		m := map[limits.ID]eventsv1.Window{}
		for _, l := range ls {
			w := l.GetWindow()
			if w == eventsv1.Window_WINDOW_UNSPECIFIED {
				w = eventsv1.Window_WINDOW_ROLLING
			}
			m[limits.ID{Metric: l.GetMetric(), Interval: l.GetInterval()}] = w
		}
		return m
	}
	before, after := window(prev.Limits), window(next.Limits)
	for id, w := range before {
		if _, kept := after[id]; !kept {
			delete(b.Marks, id)
		} else if after[id] != w {
			b.Marks[id] = Mark{Window: int64(next.Rev) << 32}
		}
	}
	// A limit added (or added back) starts a window of its own revision, so
	// its alert ids never repeat those of an earlier limit with the same id,
	// whether or not its old mark was stored.
	for id := range after {
		if _, had := before[id]; !had {
			b.Marks[id] = Mark{Window: int64(next.Rev) << 32}
		}
	}
}

func (b *Balance) store(s *limits.Set, st []limits.LimitStatus) {
	clear(b.States)
	for _, ls := range st {
		b.States[ls.ID] = ls.State
	}
}

// alerts compares each limit's use before and after an event with the key's
// thresholds. A threshold alerts once per window: a calendar limit's window
// is the calendar window; a rolling limit re-arms a threshold (and
// exhaustion) only after refilling below it, which starts a new window for
// the alert ids.
func (b *Balance) alerts(v Version, before, after []limits.LimitStatus, t time.Time) []Alert {
	var out []Alert
	prev := map[limits.ID]limits.LimitStatus{}
	for _, ls := range before {
		prev[ls.ID] = ls
	}
	for _, ls := range after {
		if ls.Amount <= 0 {
			continue
		}
		m := b.Marks[ls.ID]
		if ls.Window == eventsv1.Window_WINDOW_CALENDAR {
			if start := ls.State.At.Unix(); start != m.Window {
				m = Mark{Window: start}
			}
		} else if p, ok := prev[ls.ID]; ok {
			m = rearm(m, p, v.Thresholds)
		}
		used := ls.Amount - ls.Available
		for _, th := range v.Thresholds {
			if th > m.Threshold && used >= thresholdAmount(ls.Amount, th) {
				m.Threshold = th
				out = append(out, b.alert(v, ls, th, false, used, t, m.Window))
			}
		}
		if ls.Available <= 0 && !m.Exhausted {
			m.Exhausted = true
			out = append(out, b.alert(v, ls, 0, true, used, t, m.Window))
		}
		b.Marks[ls.ID] = m
	}
	return out
}

// rearm lowers a rolling limit's alerted threshold to the highest one its
// use (before the event, refills included) still reaches, and clears
// exhaustion once something is available again; either moves the window.
func rearm(m Mark, before limits.LimitStatus, thresholds []uint32) Mark {
	used := before.Amount - before.Available
	if m.Threshold > 0 && used < thresholdAmount(before.Amount, m.Threshold) {
		var still uint32
		for _, th := range thresholds {
			if th < m.Threshold && th > still && used >= thresholdAmount(before.Amount, th) {
				still = th
			}
		}
		m.Threshold = still
		m.Window++
	}
	if m.Exhausted && before.Available > 0 {
		m.Exhausted = false
		m.Window++
	}
	return m
}

func thresholdAmount(amount int64, ppm uint32) int64 {
	n, _ := money.MulDivCeil(amount, int64(ppm), 1_000_000)
	return n
}

func (b *Balance) alert(v Version, ls limits.LimitStatus, th uint32, exhausted bool, used int64, t time.Time, window int64) Alert {
	kind := fmt.Sprintf("threshold-%d", th)
	if exhausted {
		kind = "exhausted"
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%s|%d|%d|%s|%d", b.KeyID, ls.Metric, ls.Interval, kind, window))
	return Alert{ID: hex.EncodeToString(sum[:12]), KeyID: b.KeyID, Account: v.Account, Limit: ls.Rule,
		Threshold: th, Exhausted: exhausted, Used: used, Amount: ls.Amount, At: t}
}
