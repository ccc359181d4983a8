package sink

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tollgate/tollgate/pkg/testenv"
)

func newTestReader(t *testing.T, n int) (*Sink, *reader) {
	t.Helper()
	_, nc := testenv.NATS(t)
	f := newFeed(t, nc)
	ctx := ctxFor(t, time.Minute)
	if err := f.publish(ctx, f.make("edge-a", n, base), true); err != nil {
		t.Fatal(err)
	}
	s, err := newSink(ctx, testConfig(nc.ConnectedUrl(), "clickhouse://unused"), f.js, testLog())
	if err != nil {
		t.Fatal(err)
	}
	return s, s.newReader(1)
}

func seqs(msgs []*nats.Msg) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = streamSeq(m)
	}
	return out
}

// steal takes the next n deliveries of the reader's consumer with a pull of
// another client, as if the reader had lost them.
func steal(t *testing.T, s *Sink, r *reader, n int) {
	t.Helper()
	cons, err := s.stream.Consumer(ctxFor(t, 5*time.Second), r.cons)
	if err != nil {
		t.Fatal(err)
	}
	stolen, err := cons.Fetch(n, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for range stolen.Messages() {
		got++
	}
	if got != n {
		t.Fatalf("stole %d deliveries, want %d", got, n)
	}
}

// Deliveries lost at the end of the traffic (delivered, but dropped on the
// way: the subscription's pending limit) are noticed without a later message
// to show the gap, and read again.
func TestReaderRecoversDeliveriesLostAtTheTail(t *testing.T) {
	s, r := newTestReader(t, 10)
	ctx := ctxFor(t, time.Minute)
	got, err := r.fetch(ctx, 7, time.Second)
	if err != nil || len(got) != 7 {
		t.Fatalf("first fetch: %v, %v", seqs(got), err)
	}
	// Someone else takes the last three deliveries of the reader's
	// consumer, as a pull that expired on our side would lose them.
	steal(t, s, r, 3)
	var rest []*nats.Msg
	for range 3 {
		more, err := r.fetch(ctx, 10, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		rest = append(rest, more...)
	}
	if s := seqs(rest); len(s) != 3 || s[0] != 8 || s[2] != 10 {
		t.Errorf("after the lost deliveries the reader got %v, want 8, 9, 10", s)
	}
}

// A gap in the consumer's deliveries (one lost in the middle) makes the
// reader start again after the last message it returned.
func TestReaderRecoversAGap(t *testing.T) {
	s, r := newTestReader(t, 10)
	ctx := ctxFor(t, time.Minute)
	if got, err := r.fetch(ctx, 2, time.Second); err != nil || len(got) != 2 {
		t.Fatalf("first fetch: %v, %v", seqs(got), err)
	}
	steal(t, s, r, 1) // message 3
	var all []uint64
	for len(all) < 8 {
		got, err := r.fetch(ctx, 10, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, seqs(got)...)
		if ctx.Err() != nil {
			break
		}
	}
	for i, s := range all {
		if s != uint64(i+3) {
			t.Fatalf("reader got %v, want 3 to 10 in order", all)
		}
	}
}

// A consumer the server dropped while the sink was not pulling (ClickHouse
// away for longer than the inactivity limit) is replaced.
func TestReaderReplacesADroppedConsumer(t *testing.T) {
	s, r := newTestReader(t, 5)
	ctx := ctxFor(t, time.Minute)
	if got, err := r.fetch(ctx, 2, time.Second); err != nil || len(got) != 2 {
		t.Fatalf("first fetch: %v, %v", seqs(got), err)
	}
	if err := s.stream.DeleteConsumer(context.Background(), r.cons); err != nil {
		t.Fatal(err)
	}
	var all []uint64
	for range 5 {
		got, _ := r.fetch(ctx, 10, 200*time.Millisecond) // the first may fail: the consumer is gone
		all = append(all, seqs(got)...)
	}
	if len(all) != 3 || all[0] != 3 {
		t.Errorf("after the consumer was dropped the reader got %v, want 3, 4, 5", all)
	}
}
