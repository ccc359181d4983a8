package sink

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/testenv"
)

func TestScratchConsumeRate(t *testing.T) {
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
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"tollgate.usage.>"}})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan jetstream.Msg, 50000)
	began := time.Now()
	cc, err := cons.Consume(func(m jetstream.Msg) { ch <- m }, jetstream.PullMaxMessages(50000))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	s := &Sink{log: testLog()}
	n := 0
	batch := make([]jetstream.Msg, 0, 50000)
	for n < events {
		batch = append(batch, <-ch)
		if len(batch) == 50000 || n+len(batch) == events {
			b := s.decode(batch)
			n += len(b.events)
			batch = batch[:0]
		}
	}
	t.Logf("consume+decode %.0f/s", events/time.Since(began).Seconds())
}
