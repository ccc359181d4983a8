package limits_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/limits"
	"github.com/tollgate/tollgate/pkg/money"
)

// TestAgainstReference runs random sequences of reservations, settlements,
// debits, reconfigurations and time steps through a Set and through ref, a
// naive model written from DESIGN.md: exact rational levels advanced at every
// time step, calendar windows told apart by their formatted local dates. The
// Set must agree exactly: what it has available is the model's rounded down,
// however time was split between operations.
func TestAgainstReference(t *testing.T) {
	sequences, steps := 3000, 80
	if testing.Short() {
		sequences = 300
	}
	zones := []*time.Location{time.UTC, mustLoad(t, "Europe/Berlin"), mustLoad(t, "America/New_York"),
		mustLoad(t, "Asia/Kolkata"), mustLoad(t, "Australia/Lord_Howe")}
	var admitted, refused, never int
	defer func() { t.Logf("%d requests admitted, %d refused (%d for ever)", admitted, refused, never) }()
	for seq := range sequences {
		rng := rand.New(rand.NewPCG(20260302, uint64(seq)))
		loc := zones[rng.IntN(len(zones))]
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.Int64N(int64(365 * 24 * time.Hour))))
		ls := randomLimits(rng)
		s := limits.NewSet(ls, loc, now)
		m := newRef(loc)
		m.reconfigure(ls, now)
		var flight []inFlight
		var log []string
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("sequence %d (%v):\n  %s\n%s", seq, loc, fmt.Sprintf(format, args...), lastLines(log, 12))
		}
		for range steps {
			switch op := rng.IntN(10); {
			case op < 3: // time passes; the model is advanced, the Set is not
				now = now.Add(randomStep(rng))
				m.advance(now)
				log = append(log, fmt.Sprintf("%v: step", now))
			case op < 6:
				worst := randomUsage(rng)
				r, d := s.Reserve(worst, now)
				want, wantD := m.reserve(worst, now)
				log = append(log, fmt.Sprintf("%v: reserve %+v -> %+v", now, worst, d))
				switch {
				case (d == nil) != (wantD == nil):
					fail("Reserve denial %+v, model %+v", d, wantD)
				case d != nil && (d.Limit.ID != wantD.Limit.ID || d.RetryAfter != wantD.RetryAfter || d.Never != wantD.Never || d.Left != wantD.Left):
					fail("Reserve denial %+v, model %+v", d, wantD)
				case d != nil:
					refused++
					if d.Never {
						never++
					}
				default:
					admitted++
					for i, h := range want.held {
						if got := r.Held(idOf(i)); got != h {
							fail("held %d on %v, model %d", got, idOf(i), h)
						}
					}
					flight = append(flight, inFlight{r, want})
				}
			case op < 8 && len(flight) > 0:
				i := rng.IntN(len(flight))
				f := flight[i]
				flight = append(flight[:i], flight[i+1:]...)
				actual := randomUsage(rng)
				s.Settle(f.r, actual, now)
				m.settle(f.ref, actual, now)
				log = append(log, fmt.Sprintf("%v: settle %+v", now, actual))
			case op < 9:
				u := randomUsage(rng)
				s.Debit(u, now)
				m.debit(u, now)
				log = append(log, fmt.Sprintf("%v: debit %+v", now, u))
			default:
				ls = mutateLimits(rng, ls)
				s.Reconfigure(ls, loc, now)
				m.reconfigure(ls, now)
				log = append(log, fmt.Sprintf("%v: reconfigure %v", now, ls))
			}
			if msg := m.check(s, now); msg != "" {
				fail("%s", msg)
			}
		}
	}
}

type inFlight struct {
	r   limits.Reservation
	ref refReservation
}

func lastLines(log []string, n int) string {
	out := ""
	for _, l := range log[max(len(log)-n, 0):] {
		out += "  " + l + "\n"
	}
	return out
}

func idOf(i int) limits.ID {
	return limits.ID{Metric: eventsv1.Metric(i/4 + 1), Interval: eventsv1.Interval(i%4 + 1)}
}

func randomStep(rng *rand.Rand) time.Duration {
	switch rng.IntN(5) {
	case 0:
		return 0
	case 1:
		return time.Duration(rng.Int64N(int64(time.Second)))
	case 2:
		return time.Duration(rng.Int64N(int64(time.Minute)))
	case 3:
		return time.Duration(rng.Int64N(int64(3 * time.Hour)))
	default:
		return time.Duration(rng.Int64N(int64(40 * 24 * time.Hour)))
	}
}

func randomUsage(rng *rand.Rand) limits.Usage {
	return limits.Usage{
		Spend:        money.Nanos(rng.Int64N(30 * dollar)),
		InputTokens:  rng.Int64N(3000),
		OutputTokens: rng.Int64N(3000),
		Requests:     rng.Int64N(3),
	}
}

// randomAmount is a limit's amount in units of its metric, now and then 0.
func randomAmount(rng *rand.Rand, m eventsv1.Metric) int64 {
	if rng.IntN(20) == 0 {
		return 0
	}
	switch m {
	case spend:
		return 1 + rng.Int64N(200*dollar)
	case tokens:
		return 1 + rng.Int64N(50_000)
	default:
		return 1 + rng.Int64N(100)
	}
}

func randomLimit(rng *rand.Rand, i int) *eventsv1.Limit {
	id := idOf(i)
	l := &eventsv1.Limit{Metric: id.Metric, Interval: id.Interval, Amount: randomAmount(rng, id.Metric), Window: rolling}
	if (id.Interval == day || id.Interval == month) && rng.IntN(2) == 0 {
		l.Window = calendar
	} else {
		l.AvailableImmediately = rng.IntN(2) == 0
	}
	return l
}

func randomLimits(rng *rand.Rand) []*eventsv1.Limit {
	var ls []*eventsv1.Limit
	for _, i := range rng.Perm(12)[:rng.IntN(5)] {
		ls = append(ls, randomLimit(rng, i))
	}
	return ls
}

// mutateLimits changes, adds or removes one limit, or replaces them all.
func mutateLimits(rng *rand.Rand, ls []*eventsv1.Limit) []*eventsv1.Limit {
	out := make([]*eventsv1.Limit, 0, len(ls)+1)
	for _, l := range ls {
		out = append(out, lim(l.Metric, l.Interval, l.Amount, l.Window, l.AvailableImmediately))
	}
	switch op := rng.IntN(6); {
	case op == 0:
		return randomLimits(rng)
	case op == 1 && len(out) > 0:
		i := rng.IntN(len(out))
		return append(out[:i], out[i+1:]...)
	case op == 2:
		return append(out, randomLimit(rng, rng.IntN(12))) // a duplicate is ignored by both
	case len(out) > 0:
		l := out[rng.IntN(len(out))]
		switch rng.IntN(4) {
		case 0, 1:
			l.Amount = randomAmount(rng, l.Metric)
		case 2:
			l.AvailableImmediately = !l.AvailableImmediately && l.Window == rolling
		default:
			if l.Interval == day || l.Interval == month {
				l.Window, l.AvailableImmediately = rolling+calendar-l.Window, false
			}
		}
	}
	return out
}
