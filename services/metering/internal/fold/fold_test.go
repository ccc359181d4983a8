package fold_test

import (
	"reflect"
	"slices"
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

// t0 is a Monday noon in UTC; the test keys are created then.
var t0 = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

var (
	spendDay      = limits.ID{Metric: spend, Interval: day}
	spendMonth    = limits.ID{Metric: spend, Interval: month}
	tokensDay     = limits.ID{Metric: tokens, Interval: day}
	requestsMin   = limits.ID{Metric: requests, Interval: minute}
	halfAndEighty = []uint32{500_000, 800_000}
)

func lim(m eventsv1.Metric, iv eventsv1.Interval, amount int64, w eventsv1.Window, now bool) *eventsv1.Limit {
	return &eventsv1.Limit{Metric: m, Interval: iv, Amount: amount, Window: w, AvailableImmediately: now}
}

// version is a key configuration taking effect at at (the key is created at t0).
func version(rev uint64, at time.Time, ls ...*eventsv1.Limit) fold.Version {
	return fold.Version{Rev: rev, At: at, Created: t0, Limits: ls, Loc: time.UTC, Thresholds: halfAndEighty, Account: "acme"}
}

func usage(seq uint64, at time.Time, cost, in, out int64) *eventsv1.UsageEvent {
	return &eventsv1.UsageEvent{EdgeInstance: "edge-a", Partition: 1, Sequence: seq, KeyId: "k1", Account: "acme",
		OccurredAt: timestamppb.New(at), Cost: cost, InputTokens: in, OutputTokens: out, Status: 200}
}

func TestProgress(t *testing.T) {
	for _, tt := range []struct {
		name      string
		add       []uint64
		fresh     []bool // what each Add reports
		watermark uint64
		above     []uint64
	}{
		{"in order", []uint64{1, 2, 3, 4, 5}, []bool{true, true, true, true, true}, 5, nil},
		{"out of order", []uint64{3, 1, 2}, []bool{true, true, true}, 3, nil},
		{"a gap stays above the watermark", []uint64{1, 3, 5}, []bool{true, true, true}, 1, []uint64{3, 5}},
		{"duplicates below and above the watermark", []uint64{1, 2, 1, 4, 4, 2}, []bool{true, true, false, true, false, false}, 2, []uint64{4}},
		{"filling the gaps compacts into the watermark", []uint64{2, 4, 6, 3, 5, 1}, []bool{true, true, true, true, true, true}, 6, nil},
		{"compaction stops at the next gap", []uint64{5, 3, 2, 9, 1}, []bool{true, true, true, true, true}, 3, []uint64{5, 9}},
		{"a redelivered batch after compaction", []uint64{1, 2, 3, 1, 2, 3}, []bool{true, true, true, false, false, false}, 3, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var p fold.Progress
			var got []bool
			for _, s := range tt.add {
				got = append(got, p.Add(s))
			}
			if !slices.Equal(got, tt.fresh) {
				t.Errorf("Add reported %v, want %v", got, tt.fresh)
			}
			if p.Watermark != tt.watermark || !slices.Equal(p.Above, tt.above) {
				t.Errorf("progress %d %v, want %d %v", p.Watermark, p.Above, tt.watermark, tt.above)
			}
			for _, s := range tt.add {
				if !p.Seen(s) {
					t.Errorf("Seen(%d) = false after Add", s)
				}
			}
			if p.Seen(100) {
				t.Error("Seen(100) = true, never added")
			}
		})
	}
}

// step is one usage event folded at t0+at, and what its limits have
// available right after it (only the limits named).
type step struct {
	at        time.Duration
	cost      int64
	in, out   int64
	available map[limits.ID]int64
	used      map[limits.ID]int64 // calendar limits: usage in the current window
}

func TestApplyLimits(t *testing.T) {
	for _, tt := range []struct {
		name    string
		history fold.History
		steps   []step
	}{
		{
			name:    "rolling $240/day fully spent has $5 after 30 minutes and $10 after an hour",
			history: fold.History{version(1, t0, lim(spend, day, 240*dollar, rolling, false))},
			steps: []step{
				{at: time.Minute, cost: 240 * dollar, available: map[limits.ID]int64{spendDay: 0}},
				{at: 31 * time.Minute, available: map[limits.ID]int64{spendDay: 5 * dollar}},
				{at: 61 * time.Minute, cost: dollar, available: map[limits.ID]int64{spendDay: 9 * dollar}},
			},
		},
		{
			name:    "calendar day resets at midnight UTC",
			history: fold.History{version(1, t0, lim(spend, day, 10*dollar, calendar, false))},
			steps: []step{
				{at: 11 * time.Hour, cost: 6 * dollar, used: map[limits.ID]int64{spendDay: 6 * dollar}},
				{at: 12*time.Hour - time.Nanosecond, cost: 3 * dollar, used: map[limits.ID]int64{spendDay: 9 * dollar},
					available: map[limits.ID]int64{spendDay: dollar}},
				{at: 12 * time.Hour, cost: 2 * dollar, used: map[limits.ID]int64{spendDay: 2 * dollar},
					available: map[limits.ID]int64{spendDay: 8 * dollar}},
			},
		},
		{
			name: "calendar month resets at the key's local month boundary",
			history: fold.History{func() fold.Version {
				v := version(1, t0, lim(spend, month, 100*dollar, calendar, false))
				v.Loc, _ = time.LoadLocation("Europe/Berlin")
				return v
			}()},
			steps: []step{
				// 2026-03-31 21:00 UTC is 23:00 in Berlin (CEST): still March.
				{at: 29*24*time.Hour + 9*time.Hour, cost: 5 * dollar, used: map[limits.ID]int64{spendMonth: 5 * dollar}},
				// 22:30 UTC is 00:30 on 1 April in Berlin: a new month.
				{at: 29*24*time.Hour + 10*time.Hour + 30*time.Minute, cost: 2 * dollar, used: map[limits.ID]int64{spendMonth: 2 * dollar}},
			},
		},
		{
			name: "a token limit counts input plus output; a request limit counts requests",
			history: fold.History{version(1, t0, lim(tokens, day, 1000, rolling, false), lim(requests, minute, 10, rolling, false),
				lim(spend, day, 10*dollar, calendar, false))},
			steps: []step{
				{at: time.Second, in: 100, out: 50, available: map[limits.ID]int64{tokensDay: 850, requestsMin: 9}},
				{at: time.Second, in: 600, out: 300, cost: dollar, available: map[limits.ID]int64{tokensDay: -50, requestsMin: 8, spendDay: 9 * dollar}},
			},
		},
		{
			// At t0+2h the bucket, empty since t0+1h, holds ⌊$100·1h/24h⌋;
			// raised with available_immediately the $100 difference is
			// added, and then it refills at $200 a day.
			name: "raising a rolling limit with available_immediately adds the difference at the update's time",
			history: fold.History{version(1, t0, lim(spend, day, 100*dollar, rolling, true)),
				version(2, t0.Add(2*time.Hour), lim(spend, day, 200*dollar, rolling, true))},
			steps: []step{
				{at: time.Hour, cost: 100 * dollar, available: map[limits.ID]int64{spendDay: 0}},
				{at: 3 * time.Hour, available: map[limits.ID]int64{spendDay: 4_166_666_666 + 100*dollar + 8_333_333_333}},
			},
		},
		{
			name: "raising a rolling limit without available_immediately leaves what is available, refilling at the new rate",
			history: fold.History{version(1, t0, lim(spend, day, 100*dollar, rolling, false)),
				version(2, t0.Add(2*time.Hour), lim(spend, day, 200*dollar, rolling, false))},
			steps: []step{
				{at: time.Hour, cost: 100 * dollar, available: map[limits.ID]int64{spendDay: 0}},
				{at: 3 * time.Hour, available: map[limits.ID]int64{spendDay: 4_166_666_666 + 8_333_333_333}},
			},
		},
		{
			name: "lowering a rolling limit caps what is available",
			history: fold.History{version(1, t0, lim(spend, day, 100*dollar, rolling, true)),
				version(2, t0.Add(2*time.Hour), lim(spend, day, 50*dollar, rolling, true))},
			steps: []step{
				{at: time.Hour, cost: 10 * dollar, available: map[limits.ID]int64{spendDay: 90 * dollar}},
				{at: 3 * time.Hour, cost: dollar, available: map[limits.ID]int64{spendDay: 49 * dollar}},
			},
		},
		{
			name: "a limit added without available_immediately starts empty at the update's time",
			history: fold.History{version(1, t0, lim(spend, day, 100*dollar, rolling, true)),
				version(2, t0.Add(2*time.Hour), lim(spend, day, 100*dollar, rolling, true), lim(requests, minute, 10, rolling, false))},
			steps: []step{
				{at: time.Hour, cost: dollar},
				{at: 2*time.Hour + 30*time.Second, available: map[limits.ID]int64{requestsMin: 4}},
			},
		},
		{
			name: "a limit added with available_immediately starts full",
			history: fold.History{version(1, t0, lim(spend, day, 100*dollar, rolling, true)),
				version(2, t0.Add(2*time.Hour), lim(spend, day, 100*dollar, rolling, true), lim(requests, minute, 10, rolling, true))},
			steps: []step{
				{at: time.Hour, cost: dollar},
				{at: 2*time.Hour + 30*time.Second, available: map[limits.ID]int64{requestsMin: 9}},
			},
		},
		{
			// The balance must not depend on whether an event happened to be
			// folded before the update: the key had $100 (full) when it was
			// raised to $200 without available_immediately, so it keeps
			// $100 and refills from there at $200 a day.
			name: "a key updated before its first event: available_immediately applies at the update's time",
			history: fold.History{version(1, t0, lim(spend, day, 100*dollar, rolling, false)),
				version(2, t0.Add(time.Hour), lim(spend, day, 200*dollar, rolling, false))},
			steps: []step{
				{at: 2 * time.Hour, available: map[limits.ID]int64{spendDay: 100*dollar + 8_333_333_333}},
			},
		},
		{
			// Versions are applied in order, each at its own time: lowered
			// to $10 at t0+1h (capping ⌊$100·50min/24h⌋ = 3.472… under $10),
			// raised back to $100 without available_immediately at t0+2h
			// (what is available stays), then an hour at $100 a day.
			name: "two updates between events each apply",
			history: fold.History{version(1, t0, lim(spend, day, 100*dollar, rolling, true)),
				version(2, t0.Add(time.Hour), lim(spend, day, 10*dollar, rolling, true)),
				version(3, t0.Add(2*time.Hour), lim(spend, day, 100*dollar, rolling, false))},
			steps: []step{
				{at: 10 * time.Minute, cost: 100 * dollar},
				{at: 3 * time.Hour, available: map[limits.ID]int64{spendDay: 3_472_222_222 + 416_666_666 + 4_166_666_666}},
			},
		},
		{
			// An event from before the update that is folded after a later
			// one (a replayed spool) is charged to the current state; it
			// must not take the key back to its old configuration, which
			// would then apply the raise (and its available_immediately
			// difference) a second time.
			name: "an event older than the key's update folded after a newer one",
			history: fold.History{version(1, t0, lim(spend, day, 100*dollar, rolling, true)),
				version(2, t0.Add(time.Hour), lim(spend, day, 200*dollar, rolling, true))},
			steps: []step{
				{at: 10 * time.Minute, cost: 100 * dollar, available: map[limits.ID]int64{spendDay: 0}},
				{at: 2 * time.Hour, available: map[limits.ID]int64{spendDay: 3_472_222_222 + 100*dollar + 8_333_333_333}},
				{at: 30 * time.Minute, cost: dollar},
				{at: 3 * time.Hour, available: map[limits.ID]int64{spendDay: 3_472_222_222 + 99*dollar + 16_666_666_666}},
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := fold.NewBalance("k1")
			for i, s := range tt.steps {
				at := t0.Add(s.at)
				fold.Apply(b, tt.history, usage(uint64(i+1), at, s.cost, s.in, s.out))
				rules := rulesAt(tt.history, at)
				for id, want := range s.available {
					r, ok := rules[id]
					if !ok {
						t.Fatalf("step %d: the key has no limit %v", i, id)
					}
					if got := r.Available(b.States[id], at); got != want {
						t.Errorf("step %d (t0+%v): %v available %d, want %d (state %+v)", i, s.at, id, got, want, b.States[id])
					}
				}
				for id, want := range s.used {
					r := rules[id]
					if got := r.Status(b.States[id], 0, at).Used; got != want {
						t.Errorf("step %d (t0+%v): %v used %d, want %d", i, s.at, id, got, want)
					}
				}
			}
		})
	}
}

// rulesAt is the rules of the latest version at or before t.
func rulesAt(h fold.History, t time.Time) map[limits.ID]limits.Rule {
	v, _ := h.At(t)
	out := map[limits.ID]limits.Rule{}
	for _, l := range v.Limits {
		r, _ := limits.RuleOf(l, v.Loc)
		out[r.ID] = r
	}
	return out
}

func TestApplyTotals(t *testing.T) {
	h := fold.History{version(1, t0, lim(spend, day, 100*dollar, rolling, true))}
	b := fold.NewBalance("k1")
	fold.Apply(b, h, usage(1, t0.Add(time.Second), 7, 100, 20))
	fold.Apply(b, h, usage(2, t0.Add(2*time.Second), 0, 0, 0))
	fold.Apply(b, h, usage(3, t0.Add(time.Millisecond), 5*dollar, 1, 2)) // out of order
	if b.Requests != 3 || b.Input != 101 || b.Output != 22 || b.Cost != 5*dollar+7 {
		t.Fatalf("totals %d requests, %d in, %d out, cost %d", b.Requests, b.Input, b.Output, b.Cost)
	}
	if b.ConfigRev != 1 {
		t.Errorf("config rev %d, want 1", b.ConfigRev)
	}

	// A key metering has no history for still counts in the totals.
	unknown := fold.NewBalance("k2")
	if alerts := fold.Apply(unknown, nil, usage(1, t0, 3*dollar, 10, 10)); len(alerts) != 0 {
		t.Errorf("alerts for an unknown key: %v", alerts)
	}
	if unknown.Requests != 1 || unknown.Cost != 3*dollar || len(unknown.States) != 0 {
		t.Errorf("unknown key: %+v", unknown)
	}
}

// alertStep is one event and the alerts it must raise, as "threshold ppm"
// or 0 for exhausted.
type alertStep struct {
	at   time.Duration
	cost int64
	want []uint32 // thresholds alerted; 0 means exhausted
}

func kinds(as []fold.Alert) []uint32 {
	out := []uint32{}
	for _, a := range as {
		if a.Exhausted {
			out = append(out, 0)
		} else {
			out = append(out, a.Threshold)
		}
	}
	return out
}

func foldAlerts(t *testing.T, h fold.History, steps []alertStep) [][]fold.Alert {
	t.Helper()
	b := fold.NewBalance("k1")
	var out [][]fold.Alert
	for i, s := range steps {
		as := fold.Apply(b, h, usage(uint64(i+1), t0.Add(s.at), s.cost, 0, 0))
		if s.want != nil && !slices.Equal(kinds(as), s.want) {
			t.Errorf("step %d (t0+%v, $%d): alerts %v, want %v", i, s.at, s.cost/dollar, kinds(as), s.want)
		}
		out = append(out, as)
	}
	return out
}

func TestApplyAlerts(t *testing.T) {
	calendarDay := fold.History{version(1, t0, lim(spend, day, 100*dollar, calendar, false))}
	none := []uint32{}

	t.Run("thresholds 0.5 and 0.8 give two alerts with distinct deterministic ids", func(t *testing.T) {
		steps := []alertStep{
			{at: time.Minute, cost: 60 * dollar, want: []uint32{500_000}},
			{at: 2 * time.Minute, cost: 25 * dollar, want: []uint32{800_000}},
			{at: 3 * time.Minute, cost: 5 * dollar, want: none},
		}
		first := foldAlerts(t, calendarDay, steps)
		if t.Failed() {
			return
		}
		a, b := first[0][0], first[1][0]
		if a.ID == "" || a.ID == b.ID {
			t.Fatalf("alert ids %q and %q: want distinct, non-empty", a.ID, b.ID)
		}
		if a.KeyID != "k1" || a.Account != "acme" || a.Limit.ID != spendDay || a.Amount != 100*dollar || a.Used != 60*dollar || !a.At.Equal(t0.Add(time.Minute)) {
			t.Errorf("alert %+v", a)
		}
		// The same events folded again from the same state: the same alerts.
		again := foldAlerts(t, calendarDay, steps)
		if !reflect.DeepEqual(first, again) {
			t.Errorf("a repeated fold raised %+v, the first %+v", again, first)
		}
		// Another key's alerts have other ids.
		other := fold.NewBalance("k2")
		if as := fold.Apply(other, calendarDay, usage(1, t0.Add(time.Minute), 60*dollar, 0, 0)); len(as) != 1 || as[0].ID == a.ID {
			t.Errorf("key k2's alert %+v has k1's id", as)
		}
	})

	t.Run("a new calendar window re-arms with new ids", func(t *testing.T) {
		got := foldAlerts(t, calendarDay, []alertStep{
			{at: time.Minute, cost: 60 * dollar, want: []uint32{500_000}},
			{at: 2 * time.Minute, cost: 30 * dollar, want: []uint32{800_000}},
			{at: 13 * time.Hour, cost: 60 * dollar, want: []uint32{500_000}}, // the next day
			{at: 14 * time.Hour, cost: 30 * dollar, want: []uint32{800_000}},
		})
		if t.Failed() {
			return
		}
		if got[0][0].ID == got[2][0].ID || got[1][0].ID == got[3][0].ID {
			t.Errorf("the next day's alerts reuse the first day's ids: %v %v", got[0][0].ID, got[1][0].ID)
		}
	})

	t.Run("exhaustion alerts once per window", func(t *testing.T) {
		got := foldAlerts(t, calendarDay, []alertStep{
			{at: time.Minute, cost: 100 * dollar, want: []uint32{500_000, 800_000, 0}},
			{at: 2 * time.Minute, cost: dollar, want: none},
			{at: 3 * time.Minute, cost: 5 * dollar, want: none},
			{at: 13 * time.Hour, cost: 101 * dollar, want: []uint32{500_000, 800_000, 0}},
		})
		if t.Failed() {
			return
		}
		if got[0][2].ID == got[3][2].ID {
			t.Errorf("the next day's exhaustion reuses the id %s", got[0][2].ID)
		}
	})

	t.Run("a rolling limit re-arms a threshold only when it refills above it", func(t *testing.T) {
		rollingDay := fold.History{version(1, t0, lim(spend, day, 100*dollar, rolling, false))}
		got := foldAlerts(t, rollingDay, []alertStep{
			{at: time.Minute, cost: 60 * dollar, want: []uint32{500_000}},
			{at: 2 * time.Minute, cost: 25 * dollar, want: []uint32{800_000}}, // ~84.93 used
			// 2.4 hours refill $10: ~75.93 used after the event, under 0.8
			// but never under 0.5, so 0.5 must not alert again.
			{at: 2*time.Minute + 144*time.Minute, cost: dollar},
			{at: 2*time.Minute + 145*time.Minute, cost: 5 * dollar},
			// A day later the bucket is full again: everything re-armed.
			{at: 26 * time.Hour, cost: 60 * dollar, want: []uint32{500_000}},
		})
		for i := 2; i <= 3; i++ {
			if slices.Contains(kinds(got[i]), 500_000) {
				t.Errorf("step %d: 0.5 alerted again although the limit never refilled under 0.5 used: %+v", i, got[i])
			}
		}
		if len(got[4]) == 1 && got[4][0].ID == got[0][0].ID {
			t.Errorf("the re-armed 0.5 alert reuses the first one's id %s", got[0][0].ID)
		}
	})
}

// A limit removed and added back later is a new limit: its alerts must not
// reuse the ids of the old one's (the outbox and the notifier would drop
// them as repeats), and the fold must give the same result whether or not
// the balance was stored and loaded between the two changes, as it is at
// every batch boundary (a rebuild splits batches differently).
func TestApplyAlertsOfALimitAddedBack(t *testing.T) {
	h := fold.History{
		version(1, t0, lim(spend, day, 100*dollar, rolling, true)),
		version(2, t0.Add(time.Hour), lim(requests, minute, 100, rolling, true)),
		version(3, t0.Add(3*time.Hour), lim(spend, day, 100*dollar, rolling, true), lim(requests, minute, 100, rolling, true)),
	}
	run := func(roundTrip bool) (*fold.Balance, []fold.Alert) {
		b := fold.NewBalance("k1")
		var all []fold.Alert
		all = append(all, fold.Apply(b, h, usage(1, t0.Add(time.Minute), 60*dollar, 0, 0))...)
		all = append(all, fold.Apply(b, h, usage(2, t0.Add(2*time.Hour), dollar, 0, 0))...)
		if roundTrip {
			data, err := proto.Marshal(store.ToProto(b, "acme", 1, t0))
			if err != nil {
				t.Fatal(err)
			}
			kb := new(eventsv1.KeyBalance)
			if err := proto.Unmarshal(data, kb); err != nil {
				t.Fatal(err)
			}
			b = store.FromProto(kb)
		}
		all = append(all, fold.Apply(b, h, usage(3, t0.Add(4*time.Hour), 60*dollar, 0, 0))...)
		return b, all
	}
	for _, roundTrip := range []bool{false, true} {
		_, as := run(roundTrip)
		if len(as) != 2 || as[0].Threshold != 500_000 || as[1].Threshold != 500_000 {
			t.Fatalf("round trip %v: alerts %+v, want 0.5 before the removal and 0.5 after the limit is back", roundTrip, as)
		}
		if as[0].ID == as[1].ID {
			t.Errorf("round trip %v: the limit added back alerts with the old limit's id %s", roundTrip, as[0].ID)
		}
	}
	b1, as1 := run(false)
	b2, as2 := run(true)
	if !reflect.DeepEqual(alertIDsOf(as1), alertIDsOf(as2)) || !reflect.DeepEqual(b1.Marks, b2.Marks) {
		t.Errorf("a store round trip between the changes changes the fold: alerts %v vs %v, marks %+v vs %+v",
			alertIDsOf(as1), alertIDsOf(as2), b1.Marks, b2.Marks)
	}
}

func alertIDsOf(as []fold.Alert) []string {
	out := []string{}
	for _, a := range as {
		out = append(out, a.ID)
	}
	return out
}
