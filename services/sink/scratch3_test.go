package sink

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/testenv"
)

func TestScratchFetchRate(t *testing.T) {
	_, nc := testenv.NATS(t)
	f := newFeed(t, nc)
	ctx := ctxFor(t, 5*time.Minute)
	const events = 500_000
	for i := 0; i < events; i += 10_000 {
		if err := f.publish(ctx, f.make(fmt.Sprintf("edge-%d", i%7), 10_000, base), true); err != nil {
			t.Fatal(err)
		}
	}
	stream, _ := f.js.Stream(ctx, bus.UsageStream)
	for _, ack := range []jetstream.AckPolicy{jetstream.AckNonePolicy, jetstream.AckAllPolicy} {
		cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: fmt.Sprint("d", ack), AckPolicy: ack, MaxAckPending: -1})
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{1000, 10000} {
			began := time.Now()
			n := 0
			for n < events/2 {
				b, err := cons.Fetch(size, jetstream.FetchMaxWait(time.Second))
				if err != nil {
					t.Fatal(err)
				}
				var last jetstream.Msg
				for m := range b.Messages() {
					n++
					last = m
				}
				if ack == jetstream.AckAllPolicy && last != nil {
					last.Ack()
				}
			}
			t.Logf("ack %v fetch %d: %.0f/s", ack, size, float64(n)/time.Since(began).Seconds())
		}
	}
}
