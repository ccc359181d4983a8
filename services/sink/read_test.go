package sink

import (
	"context"
	"testing"
	"time"

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

func seqs(msgs []jetstream.Msg) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = streamSeq(m)
	}
	return out
}

// Deliveries lost at the end of the traffic (they reached the consumer's
// pull after the reader gave up on it) are noticed without a later message
// to show the gap, and read again.
func TestReaderRecoversDeliveriesLostAtTheTail(t *testing.T) {
	_, r := newTestReader(t, 10)
	ctx := ctxFor(t, time.Minute)
	got, err := r.fetch(ctx, 7, time.Second)
	if err != nil || len(got) != 7 {
		t.Fatalf("first fetch: %v, %v", seqs(got), err)
	}
	// Someone else takes the last three deliveries of the reader's
	// consumer, as a pull that expired on our side would lose them.
	stolen, err := r.cons.Fetch(3, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for range stolen.Messages() {
	}
	var rest []jetstream.Msg
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
	_, r := newTestReader(t, 10)
	ctx := ctxFor(t, time.Minute)
	if got, err := r.fetch(ctx, 2, time.Second); err != nil || len(got) != 2 {
		t.Fatalf("first fetch: %v, %v", seqs(got), err)
	}
	stolen, err := r.cons.Fetch(1, jetstream.FetchMaxWait(time.Second)) // message 3
	if err != nil {
		t.Fatal(err)
	}
	for range stolen.Messages() {
	}
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
	if err := s.stream.DeleteConsumer(context.Background(), r.cons.CachedInfo().Name); err != nil {
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
