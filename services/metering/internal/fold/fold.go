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

// set rebuilds the limits.Set of b for version v, reconfiguring from the
// version b was folded with when the key changed since.
func (b *Balance) set(h History, v Version) *limits.Set {
	if b.ConfigRev == 0 {
		s := limits.NewKeySet(v.Limits, v.Loc, v.Created)
		b.ConfigRev = v.Rev
		return s
	}
	old, ok := h.ByRev(b.ConfigRev)
	if !ok {
		old = v
	}
	s := limits.NewSet(old.Limits, old.Loc, v.At)
	for id, st := range b.States {
		s.SetState(id, st)
	}
	if old.Rev != v.Rev {
		s.Reconfigure(v.Limits, v.Loc, v.At)
		b.ConfigRev = v.Rev
	}
	return s
}

func (b *Balance) store(s *limits.Set, st []limits.LimitStatus) {
	clear(b.States)
	for _, ls := range st {
		b.States[ls.ID] = ls.State
	}
}

// alerts compares each limit's use before and after an event with the key's
// thresholds.
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
		window := windowOf(ls, m, prev[ls.ID])
		if window != m.Window {
			m = Mark{Window: window}
		}
		used := ls.Amount - ls.Available
		for _, th := range v.Thresholds {
			need, _ := money.MulDivCeil(ls.Amount, int64(th), 1_000_000)
			if used >= need && th > m.Threshold {
				m.Threshold = th
				out = append(out, b.alert(v, ls, th, false, used, t, window))
			}
		}
		if ls.Available <= 0 && !m.Exhausted {
			m.Exhausted = true
			out = append(out, b.alert(v, ls, 0, true, used, t, window))
		}
		b.Marks[ls.ID] = m
	}
	// Keep one threshold alert per limit and event: the highest crossed.
	return out
}

// windowOf identifies a limit's alert window. Calendar: the window start.
// Rolling: the mark's window, moved on when the limit refilled below the
// lowest threshold it had alerted (re-armed) before this event.
func windowOf(ls limits.LimitStatus, m Mark, before limits.LimitStatus) int64 {
	if ls.Window == eventsv1.Window_WINDOW_CALENDAR {
		return ls.State.At.Unix()
	}
	if m.Threshold == 0 && !m.Exhausted {
		return m.Window
	}
	need, _ := money.MulDivCeil(ls.Amount, int64(m.Threshold), 1_000_000)
	if m.Exhausted && m.Threshold == 0 {
		need = ls.Amount
	}
	if usedBefore := before.Amount - before.Available; usedBefore < need && before.Amount > 0 {
		return m.Window + 1
	}
	return m.Window
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
