package usagepub

import (
	"errors"
	"io/fs"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

// testEvents returns n events of instance with sequences from first on.
func testEvents(instance string, first uint64, n int) []*eventsv1.UsageEvent {
	evs := make([]*eventsv1.UsageEvent, n)
	for i := range evs {
		evs[i] = &eventsv1.UsageEvent{EdgeInstance: instance, Sequence: first + uint64(i), KeyId: "k", Account: "a"}
		evs[i].EventId = eventID(evs[i])
	}
	return evs
}

// spoolWith opens the spool of instance in dir holding its events 1 to n.
func spoolWith(t *testing.T, dir, instance string, n int) *spool {
	t.Helper()
	sp, err := openSpool(dir, instance)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.append(testEvents(instance, 1, n)); err != nil {
		t.Fatal(err)
	}
	return sp
}

// waitStored waits up to 10 s for the stream to hold n events of instance.
func waitStored(t *testing.T, js jetstream.JetStream, instance string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(streamSequences(t, js)[instance]) < n && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
}

// sequences lists the sequences of evs, in order.
func sequences(evs []*eventsv1.UsageEvent) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.GetSequence()
	}
	return out
}

func wantSequences(t *testing.T, what string, evs []*eventsv1.UsageEvent, first uint64, n int) {
	t.Helper()
	got := sequences(evs)
	if len(got) != n {
		t.Fatalf("%s holds sequences %v, want %d from %d", what, got, n, first)
	}
	for i, seq := range got {
		if seq != first+uint64(i) {
			t.Fatalf("%s holds sequences %v, want %d from %d", what, got, n, first)
		}
	}
}

// A spool opened on a file that already holds records knows it is not
// empty, and the publisher replays them.
func TestSpoolOpenedOnRecordsIsNotEmptyAndReplaysThem(t *testing.T) {
	nc, js, ctx := usageBus(t)
	dir := t.TempDir()
	first := spoolWith(t, dir, "edge-a", 10)
	first.close()

	again, err := openSpool(dir, "edge-a")
	if err != nil {
		t.Fatal(err)
	}
	if again.empty() || again.n.Load() != 10 {
		again.close()
		t.Fatalf("a spool opened on 10 records: empty %v, %d records", again.empty(), again.n.Load())
	}
	// The publisher of the process that owns edge-a.spool.
	p, err := New(nc, Config{SpoolDir: t.TempDir()}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	p.spool.close()
	p.spool = again
	stop, done := runPublisher(ctx, p)
	waitStored(t, js, "edge-a", 10)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := streamSequences(t, js)["edge-a"]; len(got) != 10 {
		t.Fatalf("replayed %d of the 10 records the spool was opened on", len(got))
	}
}

// A spool whose last record was torn (the edge died mid-write) is opened
// without it, and what is appended next is read back whole.
func TestSpoolOpenedAfterATornWriteAppendsAfterTheLastWholeRecord(t *testing.T) {
	dir := t.TempDir()
	first := spoolWith(t, dir, "edge-a", 3)
	if _, err := first.f.Write([]byte{50, 1, 2, 3}); err != nil { // 50 bytes announced, 3 written
		t.Fatal(err)
	}
	first.close()

	again, err := openSpool(dir, "edge-a")
	if err != nil {
		t.Fatal(err)
	}
	defer again.close()
	if again.n.Load() != 3 {
		t.Fatalf("opened with %d records, want the 3 whole ones", again.n.Load())
	}
	if err := again.append(testEvents("edge-a", 4, 2)); err != nil {
		t.Fatal(err)
	}
	evs, err := again.events()
	if err != nil {
		t.Fatal(err)
	}
	wantSequences(t, "the spool", evs, 1, 5)
}

// Two edges share a spool dir: the live spool of one is no orphan to the
// other, which adopts it once its process is gone (its spool closed).
func TestLiveSpoolOfAnotherEdgeIsNotAdopted(t *testing.T) {
	dir := t.TempDir()
	other := spoolWith(t, dir, "edge-b", 3)
	own, err := openSpool(dir, "edge-a")
	if err != nil {
		t.Fatal(err)
	}
	defer own.close()
	p := &Publisher{spool: own, log: quiet}
	if err := p.adoptOrphans(); err != nil {
		t.Fatal(err)
	}
	if !own.empty() {
		t.Fatalf("adopted %d events of another edge's live spool", own.n.Load())
	}
	// The other edge goes on spooling, into the file it has.
	if err := other.append(testEvents("edge-b", 4, 2)); err != nil {
		t.Fatal(err)
	}
	evs, err := readAll(other.path)
	if err != nil {
		t.Fatal(err)
	}
	wantSequences(t, "the other edge's spool", evs, 1, 5)

	other.close()
	if err := p.adoptOrphans(); err != nil {
		t.Fatal(err)
	}
	evs, err = own.events()
	if err != nil {
		t.Fatal(err)
	}
	wantSequences(t, "the spool after adopting the closed one", evs, 1, 5)
	if _, err := os.Stat(other.path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the adopted spool is still there: %v", err)
	}
}

// Edges that start together adopt an orphan once between them, not once each.
func TestOrphanIsAdoptedOnceByEdgesStartingTogether(t *testing.T) {
	for round := range 20 {
		dir := t.TempDir()
		orphan := spoolWith(t, dir, "edge-old", 2000)
		orphan.close()
		var edges [3]*Publisher
		for i := range edges {
			sp, err := openSpool(dir, "edge-"+string(rune('a'+i)))
			if err != nil {
				t.Fatal(err)
			}
			defer sp.close()
			edges[i] = &Publisher{spool: sp, log: quiet}
		}
		var wg sync.WaitGroup
		errs := make([]error, len(edges))
		for i, p := range edges {
			wg.Go(func() { errs[i] = p.adoptOrphans() })
		}
		wg.Wait()
		total := 0
		for i, p := range edges {
			if errs[i] != nil {
				t.Errorf("round %d: edge %d: %v", round, i, errs[i])
			}
			total += int(p.spool.n.Load())
		}
		if total != 2000 {
			t.Fatalf("round %d: the edges adopted %d events of an orphan of 2000", round, total)
		}
	}
}
