package sink

import (
	"testing"
	"time"
)

// New events (above their pair's watermark) are stored without a look-up;
// after a restart, the watermarks read back from ClickHouse send copies of
// stored events to the look-up, which drops them; events that arrive after
// later ones of their pair (a spool replayed late) are looked up, found
// new, and stored.
func TestSinkLooksUpOnlyBelowTheWatermarks(t *testing.T) {
	natsURL, dsn, f := newEnv(t)
	ctx := ctxFor(t, 2*time.Minute)
	cfg := testConfig(natsURL, dsn)
	conn := openCH(t, dsn)

	first := f.make("edge-a", 3000, base)
	s := startSink(t, cfg)
	if err := f.publish(ctx, first, true); err != nil {
		t.Fatal(err)
	}
	waitStored(t, conn, f.wantTotals(), time.Minute)
	if st := s.srv.Sink().Stats(); st.LookedUp.Load() != 0 || st.Events.Load() != 3000 {
		t.Errorf("first run: %d events looked up, %d stored; want 0 and 3000", st.LookedUp.Load(), st.Events.Load())
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}

	s = startSink(t, cfg)
	copies := first[1000:1500]
	if err := f.publish(ctx, copies, false); err != nil { // no message id: the stream keeps them
		t.Fatal(err)
	}
	if err := f.publish(ctx, f.make("edge-a", 1000, base), true); err != nil {
		t.Fatal(err)
	}
	waitStored(t, conn, f.wantTotals(), time.Minute)
	st := s.srv.Sink().Stats()
	for deadline := time.Now().Add(10 * time.Second); st.Events.Load()+st.Duplicates.Load() < 1500 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if st.Events.Load() != 1000 || st.Duplicates.Load() != 500 || st.LookedUp.Load() != 500 {
		t.Errorf("second run: %d stored, %d duplicates, %d looked up; want 1000, 500, 500",
			st.Events.Load(), st.Duplicates.Load(), st.LookedUp.Load())
	}

	// Out of order: the later half of 400 events first, then the earlier.
	late := f.make("edge-a", 400, base)
	if err := f.publish(ctx, late[200:], true); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); st.Events.Load() < 1200 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if err := f.publish(ctx, late[:200], true); err != nil {
		t.Fatal(err)
	}
	waitStored(t, conn, f.wantTotals(), time.Minute)
	// An earlier event is below its pair's mark if the later half has
	// an event of its partition.
	later := map[uint32]bool{}
	for _, e := range late[200:] {
		later[e.GetPartition()] = true
	}
	below := 0
	for _, e := range late[:200] {
		if later[e.GetPartition()] {
			below++
		}
	}
	if below == 0 {
		t.Fatal("no event below a mark: the test tests nothing")
	}
	if st.Events.Load() != 1400 || st.Duplicates.Load() != 500 || st.LookedUp.Load() != uint64(500+below) {
		t.Errorf("out of order: %d stored, %d duplicates, %d looked up; want 1400, 500, %d",
			st.Events.Load(), st.Duplicates.Load(), st.LookedUp.Load(), 500+below)
	}
}
