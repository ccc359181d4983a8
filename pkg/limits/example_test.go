package limits_test

import (
	"fmt"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/limits"
	"github.com/tollgate/tollgate/pkg/money"
)

// An edge keeps a Set per key, reserves before a request goes upstream and
// settles when the answer ends; the x-ratelimit-* headers come from Tightest.
func Example_edge() {
	created := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC) // the key event's time
	set := limits.NewSet([]*eventsv1.Limit{
		{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY,
			Amount: int64(240 * money.Dollar), Window: eventsv1.Window_WINDOW_ROLLING, AvailableImmediately: true},
		{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_MINUTE,
			Amount: 60, Window: eventsv1.Window_WINDOW_ROLLING, AvailableImmediately: true},
	}, time.UTC, created)

	now := created.Add(3 * time.Hour)
	// The worst case: the prompt's tokens, max_tokens, priced.
	res, denied := set.Reserve(limits.Usage{Spend: 2 * money.Dollar, InputTokens: 1200, OutputTokens: 4096}, now)
	if denied != nil {
		fmt.Printf("429 Retry-After: %.0f\n", denied.RetryAfter.Seconds())
		return
	}
	// ... the request goes upstream; when the answer ends, however it ends:
	set.Settle(res, limits.Usage{Spend: 25 * money.Cent, InputTokens: 1200, OutputTokens: 310}, now)

	if ls, ok := set.Tightest(eventsv1.Metric_METRIC_REQUESTS, now); ok {
		fmt.Printf("x-ratelimit-limit-requests: %d\nx-ratelimit-remaining-requests: %d\nx-ratelimit-reset-requests: %v\n",
			ls.Amount, ls.Remaining, ls.ResetAt.Sub(now))
	}

	// A balance from metering (BALANCES) replaces the local state; the edge
	// then charges again what it spent that the balance does not include yet.
	spendDay := limits.ID{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY}
	set.SetState(spendDay, limits.State{Level: int64(200 * money.Dollar), At: now})
	set.Debit(limits.Usage{Spend: 25 * money.Cent, Requests: 1}, now)
	ls, _ := set.Tightest(eventsv1.Metric_METRIC_SPEND, now)
	fmt.Println("spend remaining:", money.Nanos(ls.Remaining))
	// Output:
	// x-ratelimit-limit-requests: 60
	// x-ratelimit-remaining-requests: 59
	// x-ratelimit-reset-requests: 1s
	// spend remaining: 199.75
}

// Metering folds usage events, at the times they happened, into one State
// per limit that it keeps in PostgreSQL.
func Example_metering() {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	added := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC) // the key event that added the limit
	rule, _ := limits.RuleOf(&eventsv1.Limit{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY,
		Amount: int64(10 * money.Dollar), Window: eventsv1.Window_WINDOW_CALENDAR}, berlin)
	st := rule.NewState(added) // a missing row is the zero State, which has nothing used too

	events := []struct {
		at   time.Time
		cost money.Nanos
	}{
		{time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), 3 * money.Dollar},
		{time.Date(2026, 3, 2, 22, 59, 0, 0, time.UTC), 4 * money.Dollar}, // 23:59 in Berlin
		{time.Date(2026, 3, 2, 23, 1, 0, 0, time.UTC), 50 * money.Cent},   // the next day there
	}
	for _, ev := range events {
		st = rule.Debit(st, limits.Usage{Spend: ev.cost}.Of(rule.Metric), ev.at)
	}
	now := time.Date(2026, 3, 2, 23, 30, 0, 0, time.UTC)
	ls := rule.Status(st, 0, now)
	fmt.Println("window from", st.At.UTC(), "used", money.Nanos(ls.Used), "available", money.Nanos(ls.Available), "resets", ls.ResetAt.UTC())
	// Output:
	// window from 2026-03-02 23:00:00 +0000 UTC used 0.5 available 9.5 resets 2026-03-03 23:00:00 +0000 UTC
}
