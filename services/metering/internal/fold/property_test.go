package fold_test

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/limits"
	"github.com/tollgate/tollgate/pkg/money"
	"github.com/tollgate/tollgate/services/metering/internal/fold"
	"github.com/tollgate/tollgate/services/metering/internal/store"
)

// TestFoldAgainstReference folds random usage streams (a few keys and
// edges, random costs, times moving forward with small reorderings,
// duplicates and redelivered runs, and in one variant random key updates)
// through Progress and Apply in random batches, with every batch's state
// stored and loaded as the PostgreSQL adapter does (store.ToProto/FromProto),
// and compares the result with a reference written from DESIGN.md: the
// distinct events in the order they first arrived, their usage summed, and
// per key one limits.Set that starts as the key was created, takes every
// key update in order at the update's time once an event at or after that
// time arrives, and is debited with each event at its time.
//
// A second fold of the same stream, split into other batches and with
// other duplicates, must give identical balances and alerts (a rebuild
// equals the live fold), and no rolling limit's alert id may be raised
// twice by one fold (the outbox and the notifier would drop the second).
func TestFoldAgainstReference(t *testing.T) {
	cases := 1500
	if testing.Short() {
		cases = 200
	}
	for _, variant := range []struct {
		name    string
		updates bool
	}{{"fixed limits", false}, {"with key updates", true}} {
		t.Run(variant.name, func(t *testing.T) {
			var events, distinct, alerts, failed int
			var first string
			for c := range cases {
				rng := rand.New(rand.NewPCG(20260415, uint64(c)))
				sc := newScenario(rng, variant.updates)
				events += len(sc.delivery)
				distinct += len(sc.distinct)
				if msg := sc.check(rng); msg != "" {
					if failed == 0 {
						first = fmt.Sprintf("case %d (seed 20260415/%d):\n%s\n%s", c, c, msg, sc.describe())
					}
					failed++
				}
				alerts += sc.alerts
			}
			t.Logf("%d cases: %d deliveries of %d distinct events, %d alerts", cases, events, distinct, alerts)
			if failed > 0 {
				t.Fatalf("%d of %d cases differ from the reference; the first is %s", failed, cases, first)
			}
		})
	}
}

var zones = func() []*time.Location {
	out := []*time.Location{time.UTC}
	for _, n := range []string{"Europe/Berlin", "America/New_York"} {
		if l, err := time.LoadLocation(n); err == nil {
			out = append(out, l)
		}
	}
	return out
}()

type scenario struct {
	keys     []string
	hist     map[string]fold.History
	distinct []*eventsv1.UsageEvent // first arrivals, in order
	delivery []*eventsv1.UsageEvent // with duplicates
	alerts   int
}

func newScenario(rng *rand.Rand, updates bool) *scenario {
	sc := &scenario{hist: map[string]fold.History{}}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.Int64N(int64(300 * 24 * time.Hour))))
	nKeys, nEdges := 1+rng.IntN(3), 1+rng.IntN(3)
	for i := range nKeys {
		sc.keys = append(sc.keys, fmt.Sprintf("k%d", i))
	}

	// Events with times moving forward: a few at once, some minutes
	// apart, now and then hours (calendar days and rolling refills).
	n := 20 + rng.IntN(130)
	now := start.Add(time.Duration(rng.Int64N(int64(time.Hour))))
	seq := map[string]uint64{}
	evs := make([]*eventsv1.UsageEvent, 0, n)
	for range n {
		switch r := rng.IntN(20); {
		case r < 8:
			now = now.Add(time.Duration(rng.Int64N(int64(10 * time.Millisecond))))
		case r < 17:
			now = now.Add(time.Duration(rng.Int64N(int64(10 * time.Minute))))
		default:
			now = now.Add(time.Duration(rng.Int64N(int64(8 * time.Hour))))
		}
		k := rng.IntN(nKeys)
		edge := fmt.Sprintf("edge-%d", rng.IntN(nEdges))
		part := uint32(k % 2)
		ep := fmt.Sprintf("%s/%d", edge, part)
		seq[ep]++
		ev := &eventsv1.UsageEvent{EdgeInstance: edge, Partition: part, Sequence: seq[ep], KeyId: sc.keys[k], Account: "acme",
			OccurredAt: timestamppb.New(now), Status: 200}
		if rng.IntN(8) > 0 {
			ev.Cost = rng.Int64N(5 * dollar)
			ev.InputTokens, ev.OutputTokens = rng.Int64N(2000), rng.Int64N(500)
		}
		evs = append(evs, ev)
	}
	end := now

	// Small reorderings: an edge republishing a failed batch, two edges'
	// events interleaving late.
	for i := range evs {
		if rng.IntN(10) == 0 {
			j := min(len(evs)-1, i+1+rng.IntN(3))
			evs[i], evs[j] = evs[j], evs[i]
		}
	}
	sc.distinct = evs

	// Duplicates of single events and redelivered runs, always after the
	// first arrival.
	for i, ev := range evs {
		sc.delivery = append(sc.delivery, ev)
		switch r := rng.IntN(40); {
		case r < 4:
			sc.delivery = append(sc.delivery, evs[rng.IntN(i+1)])
		case r < 5:
			from := max(0, i-rng.IntN(20))
			sc.delivery = append(sc.delivery, evs[from:i+1]...)
		}
	}

	// Key configurations: created before the first event, updated at
	// random times in between (KEYS sequences grow with time).
	var rev uint64
	for _, id := range sc.keys {
		created := start
		rev++
		h := fold.History{randomVersion(rng, rev, created, created)}
		if updates {
			nUp := rng.IntN(4)
			times := make([]time.Time, nUp)
			for i := range times {
				times[i] = start.Add(time.Duration(rng.Int64N(int64(end.Sub(start)) + 1)))
			}
			sortTimes(times)
			for _, at := range times {
				rev++
				h = append(h, randomVersion(rng, rev, created, at))
			}
		}
		sc.hist[id] = h
	}
	return sc
}

func sortTimes(ts []time.Time) {
	for i := 1; i < len(ts); i++ {
		for j := i; j > 0 && ts[j].Before(ts[j-1]); j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
		}
	}
}

func randomVersion(rng *rand.Rand, rev uint64, created, at time.Time) fold.Version {
	var ls []*eventsv1.Limit
	used := map[limits.ID]bool{}
	for range 1 + rng.IntN(3) {
		m := eventsv1.Metric(1 + rng.IntN(3))
		iv := eventsv1.Interval(1 + rng.IntN(4))
		if used[limits.ID{Metric: m, Interval: iv}] {
			continue
		}
		used[limits.ID{Metric: m, Interval: iv}] = true
		w := rolling
		if iv >= day && rng.IntN(2) == 0 {
			w = calendar
		}
		var amount int64
		switch m {
		case spend:
			amount = 1 + rng.Int64N(100*dollar)
		case tokens:
			amount = 1000 + rng.Int64N(50_000)
		default:
			amount = 1 + rng.Int64N(200)
		}
		ls = append(ls, lim(m, iv, amount, w, rng.IntN(2) == 0))
	}
	return fold.Version{Rev: rev, At: at, Created: created, Limits: ls, Loc: zones[rng.IntN(len(zones))],
		Thresholds: halfAndEighty, Account: "acme"}
}

// check folds the scenario twice and compares; it returns what is wrong.
func (sc *scenario) check(rng *rand.Rand) string {
	got, alerts := sc.fold(rng, sc.delivery)
	sc.alerts = len(alerts)
	want := sc.reference()
	for _, id := range sc.keys {
		g, w := got[id], want[id]
		if g == nil {
			if w.requests != 0 {
				return fmt.Sprintf("key %s: no balance, want %d requests", id, w.requests)
			}
			continue
		}
		if g.Requests != w.requests || g.Input != w.input || g.Output != w.output || g.Cost != w.cost {
			return fmt.Sprintf("key %s: totals %d req %d in %d out cost %d; reference %d req %d in %d out cost %d",
				id, g.Requests, g.Input, g.Output, g.Cost, w.requests, w.input, w.output, w.cost)
		}
		if w.set == nil {
			continue
		}
		status := w.set.Status(w.last)
		if len(g.States) != len(status) {
			return fmt.Sprintf("key %s: %d limit states, reference %d (%v)", id, len(g.States), len(status), status)
		}
		for _, ls := range status {
			st, ok := g.States[ls.ID]
			if !ok {
				return fmt.Sprintf("key %s: no state for limit %v", id, ls.ID)
			}
			if st.Level != ls.State.Level || st.Used != ls.State.Used || !st.At.Equal(ls.State.At) {
				r := ls.Rule
				return fmt.Sprintf("key %s limit %v (%v, amount %d): state %+v (available %d at the last event), reference %+v (available %d)",
					id, ls.ID, r.Window, r.Amount, st, r.Available(st, w.last), ls.State, ls.Available)
			}
		}
	}
	// A calendar limit removed and added again in the same window alerts
	// again with the same id, which the notifier drops: once per window,
	// as designed. A rolling limit's windows must never repeat an id.
	seen := map[string]bool{}
	for _, a := range alerts {
		if a.Limit.Window == calendar {
			continue
		}
		if seen[a.ID] {
			return fmt.Sprintf("alert id %s raised twice in one fold (%+v)", a.ID, a)
		}
		seen[a.ID] = true
	}

	// Refold: other batches, other duplicates, same first arrivals.
	var redelivery []*eventsv1.UsageEvent
	for i, ev := range sc.distinct {
		redelivery = append(redelivery, ev)
		if rng.IntN(5) == 0 {
			redelivery = append(redelivery, sc.distinct[rng.IntN(i+1)])
		}
	}
	again, alerts2 := sc.fold(rng, redelivery)
	for _, id := range sc.keys {
		if !reflect.DeepEqual(normalize(got[id]), normalize(again[id])) {
			return fmt.Sprintf("key %s: a second fold in other batches gives %+v, the first %+v", id, again[id], got[id])
		}
	}
	if !reflect.DeepEqual(alertIDs(alerts), alertIDs(alerts2)) {
		return fmt.Sprintf("a second fold in other batches raised alerts %v, the first %v", alertIDs(alerts2), alertIDs(alerts))
	}
	return ""
}

func alertIDs(as []fold.Alert) []string {
	out := []string{}
	for _, a := range as {
		out = append(out, a.ID)
	}
	return out
}

// normalize makes a balance comparable with reflect.DeepEqual: times by
// their instant.
type snapshot struct {
	configRev                     uint64
	requests, input, output, cost int64
	states                        map[limits.ID][3]int64 // level, used, at
	marks                         map[limits.ID]fold.Mark
}

func normalize(b *fold.Balance) *snapshot {
	if b == nil {
		return nil
	}
	s := &snapshot{configRev: b.ConfigRev, requests: b.Requests, input: b.Input, output: b.Output, cost: b.Cost,
		states: map[limits.ID][3]int64{}, marks: map[limits.ID]fold.Mark{}}
	for id, st := range b.States {
		s.states[id] = [3]int64{st.Level, st.Used, st.At.UnixNano()}
		s.marks[id] = b.Marks[id]
	}
	return s
}

// fold runs delivery through Progress and Apply in random batches, storing
// progress and balances between batches as PostgreSQL would.
func (sc *scenario) fold(rng *rand.Rand, delivery []*eventsv1.UsageEvent) (map[string]*fold.Balance, []fold.Alert) {
	savedProgress := map[store.EdgePart]fold.Progress{}
	savedBalance := map[string][]byte{}
	var alerts []fold.Alert
	for len(delivery) > 0 {
		n := min(len(delivery), 1+rng.IntN(40))
		batch := delivery[:n]
		delivery = delivery[n:]

		progress := map[store.EdgePart]*fold.Progress{}
		bals := map[string]*fold.Balance{}
		for _, ev := range batch {
			ep := store.EdgePart{Edge: ev.GetEdgeInstance(), Partition: int32(ev.GetPartition())}
			p := progress[ep]
			if p == nil {
				saved := savedProgress[ep]
				p = &fold.Progress{Watermark: saved.Watermark, Above: append([]uint64(nil), saved.Above...)}
				progress[ep] = p
			}
			if !p.Add(ev.GetSequence()) {
				continue
			}
			b := bals[ev.GetKeyId()]
			if b == nil {
				b = fold.NewBalance(ev.GetKeyId())
				if data, ok := savedBalance[ev.GetKeyId()]; ok {
					kb := new(eventsv1.KeyBalance)
					if err := proto.Unmarshal(data, kb); err != nil {
						panic(err)
					}
					b = store.FromProto(kb)
				}
				bals[ev.GetKeyId()] = b
			}
			alerts = append(alerts, fold.Apply(b, sc.hist[ev.GetKeyId()], ev)...)
		}
		for ep, p := range progress {
			savedProgress[ep] = *p
		}
		for id, b := range bals {
			data, err := proto.Marshal(store.ToProto(b, "acme", 0, time.Unix(0, 0)))
			if err != nil {
				panic(err)
			}
			savedBalance[id] = data
		}
	}
	out := map[string]*fold.Balance{}
	for id, data := range savedBalance {
		kb := new(eventsv1.KeyBalance)
		if err := proto.Unmarshal(data, kb); err != nil {
			panic(err)
		}
		out[id] = store.FromProto(kb)
	}
	return out, alerts
}

type refKey struct {
	requests, input, output, cost int64
	set                           *limits.Set
	applied                       int // index in the history of the configuration in force
	last                          time.Time
}

// reference is the model: distinct events in order of first arrival.
func (sc *scenario) reference() map[string]*refKey {
	out := map[string]*refKey{}
	for _, id := range sc.keys {
		out[id] = &refKey{}
	}
	for _, ev := range sc.distinct {
		k := out[ev.GetKeyId()]
		h := sc.hist[ev.GetKeyId()]
		t := ev.GetOccurredAt().AsTime()
		k.requests++
		k.input += ev.GetInputTokens()
		k.output += ev.GetOutputTokens()
		k.cost += ev.GetCost()
		if k.set == nil {
			k.set = limits.NewKeySet(h[0].Limits, h[0].Loc, h[0].Created)
		}
		for k.applied+1 < len(h) && !h[k.applied+1].At.After(t) {
			k.applied++
			v := h[k.applied]
			k.set.Reconfigure(v.Limits, v.Loc, v.At)
		}
		k.set.Debit(limits.Usage{Spend: money.Nanos(ev.GetCost()), InputTokens: ev.GetInputTokens(),
			OutputTokens: ev.GetOutputTokens(), Requests: 1}, t)
		k.last = t
	}
	return out
}

func (sc *scenario) describe() string {
	var b strings.Builder
	for _, id := range sc.keys {
		fmt.Fprintf(&b, "key %s:\n", id)
		for _, v := range sc.hist[id] {
			fmt.Fprintf(&b, "  rev %d at %s (%v):", v.Rev, v.At.Format(time.RFC3339Nano), v.Loc)
			for _, l := range v.Limits {
				fmt.Fprintf(&b, " {%v %v %d %v now=%v}", l.GetMetric(), l.GetInterval(), l.GetAmount(), l.GetWindow(), l.GetAvailableImmediately())
			}
			b.WriteString("\n")
		}
		for _, ev := range sc.distinct {
			if ev.GetKeyId() == id {
				fmt.Fprintf(&b, "  event %s/%d#%d at %s cost %d tokens %d+%d\n", ev.GetEdgeInstance(), ev.GetPartition(), ev.GetSequence(),
					ev.GetOccurredAt().AsTime().Format(time.RFC3339Nano), ev.GetCost(), ev.GetInputTokens(), ev.GetOutputTokens())
			}
		}
	}
	return b.String()
}
