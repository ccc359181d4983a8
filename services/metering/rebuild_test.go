package metering

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/testenv"
)

// The live fold runs over usage events with a key update in the middle;
// a rebuild from the streams gives the same balances (limit states, alert
// marks and totals). After the live balances of one key are damaged, as a
// faulty run would leave them, the rebuild reports that key and only it.
func TestRebuildMatchesLiveAndFindsADamagedKey(t *testing.T) {
	t.Parallel()
	_, nc := testenv.NATS(t)
	r := newRig(t, nc.ConnectedUrl())
	ctx := ctxT(t)
	rng := rand.New(rand.NewPCG(9, 9))
	const dollar = int64(1e9)
	spendDay := func(amount int64, w eventsv1.Window, now bool) *eventsv1.Limit {
		return &eventsv1.Limit{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: amount, Window: w, AvailableImmediately: now}
	}
	created := faultDay.Add(-time.Hour)
	a := r.keyCreated(created, spendDay(100*dollar, eventsv1.Window_WINDOW_ROLLING, true),
		&eventsv1.Limit{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_MINUTE, Amount: 100, Window: eventsv1.Window_WINDOW_ROLLING})
	b := r.keyCreated(created, spendDay(50*dollar, eventsv1.Window_WINDOW_CALENDAR, false))
	c := r.keyCreated(created, &eventsv1.Limit{Metric: eventsv1.Metric_METRIC_TOKENS, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: 500_000, Window: eventsv1.Window_WINDOW_ROLLING})
	ks := []*eventsv1.Key{a, b, c}
	edges := []*edgeSim{newEdge("edge-a", r.parts), newEdge("edge-b", r.parts)}
	l := newLedger(ks...)
	events := func(from time.Time, n int) []*eventsv1.UsageEvent {
		out := make([]*eventsv1.UsageEvent, n)
		for i := range out {
			out[i] = edges[rng.IntN(2)].event(ks[rng.IntN(3)], from.Add(time.Duration(i)*100*time.Millisecond),
				rng.Int64N(dollar), rng.Int64N(2000), rng.Int64N(500))
		}
		return out
	}

	stop := r.runWorker(r.config())
	before := events(faultDay, 600) // a minute of use: key a's rolling limit runs out
	if err := r.publishOnce(ctx, before); err != nil {
		t.Fatal(err)
	}
	l.add(before...)
	r.waitExact(l, 30*time.Second, false)
	// An hour later the key is raised (available at once) and given a
	// token limit that starts empty; key c's limit becomes calendar.
	a = r.updateLimits(a, faultDay.Add(time.Hour), spendDay(200*dollar, eventsv1.Window_WINDOW_ROLLING, true),
		&eventsv1.Limit{Metric: eventsv1.Metric_METRIC_TOKENS, Interval: eventsv1.Interval_INTERVAL_HOUR, Amount: 100_000, Window: eventsv1.Window_WINDOW_ROLLING})
	c = r.updateLimits(c, faultDay.Add(90*time.Minute), &eventsv1.Limit{Metric: eventsv1.Metric_METRIC_TOKENS,
		Interval: eventsv1.Interval_INTERVAL_DAY, Amount: 500_000, Window: eventsv1.Window_WINDOW_CALENDAR})
	after := events(faultDay.Add(2*time.Hour), 600)
	if err := r.publishOnce(ctx, after); err != nil {
		t.Fatal(err)
	}
	l.add(after...)
	r.waitExact(l, 30*time.Second, false)
	stop()
	if kb := r.balance(a.GetId()); kb.GetConfigRev() == 0 || len(kb.GetLimits()) != 2 {
		t.Fatalf("key a was not folded with its update: %v", kb)
	}
	if kb := r.balance(b.GetId()); calendarSpendDayUsed(kb) != l.snapshot()[b.GetId()].cost {
		t.Fatalf("key b's calendar spend used %d, sent %d", calendarSpendDayUsed(kb), l.snapshot()[b.GetId()].cost)
	}

	var out bytes.Buffer
	rep, err := Rebuild(ctx, r.config(), quiet, &out)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Differences) != 0 || rep.Keys != 3 || rep.Events != 1200 {
		t.Fatalf("rebuild after a clean run: %d keys from %d events, differences:\n%s", rep.Keys, rep.Events, strings.Join(rep.Differences, "\n"))
	}
	if !strings.Contains(out.String(), "no differences") {
		t.Errorf("rebuild printed %q", out.String())
	}

	// A faulty run: key b's balance counts one nano-dollar too many.
	kb := r.balance(b.GetId())
	kb.Cost++
	kb.GetLimits()[0].Used++
	data, err := proto.Marshal(kb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.pool.Exec(ctx, `UPDATE metering_balances SET balance = $2, cost = $3 WHERE key_id = $1`, b.GetId(), data, kb.GetCost()); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	rep, err = Rebuild(ctx, r.config(), quiet, &out)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Differences) != 1 || !strings.HasPrefix(rep.Differences[0], b.GetId()+":") {
		t.Fatalf("rebuild after damaging key %s reports:\n%s", b.GetId(), strings.Join(rep.Differences, "\n"))
	}
	if !strings.Contains(out.String(), "difference: "+b.GetId()) {
		t.Errorf("rebuild printed %q", out.String())
	}
}
