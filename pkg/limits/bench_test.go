package limits_test

import (
	"testing"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/limits"
	"github.com/tollgate/tollgate/pkg/money"
)

// BenchmarkReserveSettle is the edge's hot path for a key with four limits:
// one Reserve and one Settle per request.
func BenchmarkReserveSettle(b *testing.B) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		b.Fatal(err)
	}
	s := limits.NewSet([]*eventsv1.Limit{
		lim(spend, day, 1_000_000*dollar, rolling, true),
		lim(spend, month, 1_000_000*dollar, calendar, false),
		lim(tokens, minute, 1e12, rolling, true),
		lim(requests, minute, 1e12, rolling, true),
	}, berlin, t0)
	worst := limits.Usage{Spend: 2 * money.Dollar, InputTokens: 1200, OutputTokens: 4096}
	actual := limits.Usage{Spend: 25 * money.Cent, InputTokens: 1200, OutputTokens: 310}
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Millisecond)
		r, d := s.Reserve(worst, now)
		if d != nil {
			b.Fatalf("refused: %+v", d)
		}
		s.Settle(r, actual, now)
	}
}
