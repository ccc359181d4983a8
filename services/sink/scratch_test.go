package sink

import (
	"fmt"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pkg/testenv"
)

func TestScratchReadRate(t *testing.T) {
	_, nc := testenv.NATS(t)
	f := newFeed(t, nc)
	ctx := ctxFor(t, 5*time.Minute)
	const events = 500_000
	for i := 0; i < events; i += 10_000 {
		if err := f.publish(ctx, f.make(fmt.Sprintf("edge-%d", i%7), 10_000, base), true); err != nil {
			t.Fatal(err)
		}
	}
	s, err := newSink(ctx, testConfig(nc.ConnectedUrl(), ""), f.js, nil, testLog())
	if err != nil {
		t.Fatal(err)
	}
	s.cfg.BatchSize = 50000
	it, err := s.open(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	n := 0
	var dec time.Duration
	for n < events {
		msgs, err := s.collect(ctx, it)
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		b := s.decode(msgs)
		dec += time.Since(t0)
		n += len(b.events)
	}
	t.Logf("read+decode %.0f/s, decode alone %.0f/s", events/time.Since(began).Seconds(), events/dec.Seconds())
}
