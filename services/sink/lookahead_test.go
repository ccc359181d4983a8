package sink

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pkg/usagestore"
)

// A copy of an event that follows it closely in the stream (published again
// without a message id, as a spool replayed after the de-duplication window)
// falls in the batch after the original's: it is looked up while the
// original's batch is still being written, so ClickHouse does not have the
// original yet, and only the checker's memory of the batch in flight drops
// the copy.
func TestSinkDropsCopiesOfTheBatchInFlight(t *testing.T) {
	natsURL, dsn, f := newEnv(t)
	ctx := ctxFor(t, 2*time.Minute)
	const batch, rounds = 200, 12
	// The stream: each round's events, then their copies, a batch each.
	for range rounds {
		evs := f.make("edge-a", batch, base)
		if err := f.publish(ctx, evs, true); err != nil {
			t.Fatal(err)
		}
		if err := f.publish(ctx, evs, false); err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig(natsURL, dsn)
	cfg.BatchSize = batch
	cfg.FlushInterval = time.Second // the stream is full: every batch fills
	// Each insert starts a little late, so that the next batch's look-up
	// surely runs before the original lands.
	s := startSinkWith(t, cfg, sinkOptions{fault: func(step string) error {
		if step == "recorded" {
			time.Sleep(30 * time.Millisecond)
		}
		return nil
	}})
	waitStored(t, openCH(t, dsn), f.wantTotals(), time.Minute)
	st := s.srv.Sink().Stats()
	for deadline := time.Now().Add(10 * time.Second); st.Batches.Load() < 2*rounds && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	// 2*rounds full batches: every batch of copies follows its originals'.
	if st.Batches.Load() != 2*rounds || st.Events.Load() != batch*rounds || st.Duplicates.Load() != batch*rounds {
		t.Errorf("stats: %d batches, %d events, %d duplicates; want %d, %d and %d",
			st.Batches.Load(), st.Events.Load(), st.Duplicates.Load(), 2*rounds, batch*rounds, batch*rounds)
	}
	if err := s.stop(); err != nil {
		t.Fatalf("sink stopped with %v", err)
	}
}

// inFlight.has is exactly "is among the events", batch after batch.
func TestInFlightIsExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	edges := []string{"edge-a", "edge-b", "edge-c", "stream:USAGE", ""}
	partitions := []uint32{0, 1, 2, 3, 15, 254, 255, 256, 1 << 31, 1<<32 - 1}
	id := func() usagestore.ID {
		return usagestore.ID{Edge: edges[rng.IntN(len(edges))], Partition: partitions[rng.IntN(len(partitions))], Seq: uint64(rng.IntN(300))}
	}
	var f inFlight
	for round := range 200 {
		want := map[usagestore.ID]bool{}
		var evs []usagestore.Event
		for range rng.IntN(100) {
			i := id()
			if !want[i] {
				want[i] = true
				evs = append(evs, usagestore.Event{EdgeInstance: i.Edge, Partition: i.Partition, Sequence: i.Seq})
			}
		}
		f.reset(evs)
		for range 500 {
			i := id()
			if got := f.has(i); got != want[i] {
				t.Fatalf("round %d: has(%+v) = %v, want %v", round, i, got, want[i])
			}
		}
		for i := range want {
			if !f.has(i) {
				t.Fatalf("round %d: has(%+v) = false for an event in flight", round, i)
			}
		}
	}
	f.reset(nil)
	if f.has(usagestore.ID{Edge: "edge-a"}) {
		t.Error("has an event with nothing in flight")
	}
}
