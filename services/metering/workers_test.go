package metering

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/testenv"
)

// Two workers (--worker-count 2) share the partitions: each folds only the
// partitions it owns (p % 2 == index), together they fold every key, and no
// event counts twice.
func TestTwoWorkersSharePartitions(t *testing.T) {
	t.Parallel()
	_, nc := testenv.NATS(t)
	r := newRig(t, nc.ConnectedUrl())
	rng := rand.New(rand.NewPCG(8, 8))
	ks := r.keysOverPartitions(16, faultDay.Add(-time.Hour), faultLimits()...)
	edges := []*edgeSim{newEdge("edge-a", r.parts), newEdge("edge-b", r.parts), newEdge("edge-c", r.parts)}
	byOwner := [2][]*eventsv1.Key{}
	for _, k := range ks {
		p := bus.Partition(k.GetId(), r.parts)
		byOwner[p%2] = append(byOwner[p%2], k)
	}
	worker := func(i int) Config {
		c := r.config()
		c.WorkerCount, c.WorkerIndex = 2, i
		return c
	}
	if got := worker(0).owned(); !slices.Equal(got, []int{0, 2}) {
		t.Fatalf("worker 0 owns %v", got)
	}
	ctx := ctxT(t)
	perPartition := map[int]int{}
	send := func(l *ledger, n int) {
		t.Helper()
		evs := steadyStream(rng, ks, edges, n)
		for _, ev := range evs {
			perPartition[int(ev.GetPartition())]++
		}
		if err := r.publishOnce(ctx, evs); err != nil {
			t.Fatal(err)
		}
		l.add(evs...)
	}

	// Worker 0 alone folds the keys of partitions 0 and 2 and nothing else.
	all := newLedger(ks...)
	send(all, 4000)
	stop0 := r.runWorker(worker(0))
	r.waitExact(only(all, byOwner[0]), 30*time.Second, true)
	r.requireUntouched(byOwner[1])
	for _, p := range []int{1, 3} {
		if pos := r.position(p); pos != 0 {
			t.Errorf("worker 0 folded partition %d (up to stream sequence %d)", p, pos)
		}
	}

	// Worker 1 joins and folds the rest; then both fold new events.
	stop1 := r.runWorker(worker(1))
	r.waitExact(all, 30*time.Second, true)
	send(all, 4000)
	r.waitExact(all, 30*time.Second, true)

	// Worker 1 alone: only its partitions move on.
	stop0()
	positions := map[int]uint64{}
	for p := range r.parts {
		positions[p] = r.position(p)
	}
	before, err := r.balances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send(all, 2000)
	r.waitExact(only(all, byOwner[1]), 30*time.Second, true)
	after, err := r.balances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range byOwner[0] {
		if after[k.GetId()].GetRequests() != before[k.GetId()].GetRequests() {
			t.Errorf("worker 1 folded key %s of partition %d", k.GetId(), bus.Partition(k.GetId(), r.parts))
		}
	}
	for _, p := range []int{0, 2} {
		if pos := r.position(p); pos != positions[p] {
			t.Errorf("partition %d moved from stream sequence %d to %d with only worker 1 running", p, positions[p], pos)
		}
	}
	stop1()

	// Both again: everything exact, and every partition has a position.
	r.runWorker(worker(0))
	r.runWorker(worker(1))
	r.waitExact(all, 30*time.Second, true)
	for p := range r.parts {
		if r.position(p) == 0 {
			t.Fatalf("partition %d has no position after its events were folded", p)
		}
	}
}

// only is the part of l for keys ks.
func only(l *ledger, ks []*eventsv1.Key) *ledger {
	out := newLedger()
	snap := l.snapshot()
	for _, k := range ks {
		t := snap[k.GetId()]
		out.keys[k.GetId()] = &t
	}
	return out
}

// requireUntouched checks that no key of ks has a balance yet.
func (r *rig) requireUntouched(ks []*eventsv1.Key) {
	r.t.Helper()
	time.Sleep(300 * time.Millisecond) // a stray fold would land by now
	bals, err := r.balances(ctxT(r.t))
	if err != nil {
		r.t.Fatal(err)
	}
	for _, k := range ks {
		if kb := bals[k.GetId()]; kb != nil {
			r.t.Errorf("key %s of partition %d, which another worker owns, was folded (%d requests)",
				k.GetId(), bus.Partition(k.GetId(), r.parts), kb.GetRequests())
		}
	}
}
