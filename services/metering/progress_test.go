package metering

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/testenv"
	"github.com/tollgate/tollgate/services/metering/internal/fold"
	"github.com/tollgate/tollgate/services/metering/internal/store"
)

func TestFoldedProgressCarriesRecentEdges(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	at := func(ago time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(-ago)) }
	earlier := []*eventsv1.EdgeProgress{
		{EdgeInstance: "a", Watermark: 3, At: at(30 * time.Minute)}, // in the batch again: the batch's wins
		{EdgeInstance: "b", Watermark: 7, Above: []uint64{9}, At: at(59 * time.Minute)},
		{EdgeInstance: "old", Watermark: 1, At: at(61 * time.Minute)}, // older than an hour: dropped
		{EdgeInstance: "undated", Watermark: 1},                       // written before entries were dated
	}
	progress := map[store.EdgePart]*fold.Progress{
		{Edge: "a", Partition: 2}: {Watermark: 5},
		{Edge: "c", Partition: 2}: {Watermark: 2},
		{Edge: "d", Partition: 3}: {Watermark: 4}, // another partition: not this key's
	}
	got := foldedProgress(earlier, progress, 2, now)
	want := []struct {
		edge      string
		watermark uint64
		at        time.Time
	}{{"a", 5, now}, {"b", 7, now.Add(-59 * time.Minute)}, {"c", 2, now}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i, w := range want {
		if g := got[i]; g.GetEdgeInstance() != w.edge || g.GetWatermark() != w.watermark || !g.GetAt().AsTime().Equal(w.at) {
			t.Errorf("entry %d: %v, want %+v", i, g, w)
		}
	}
}

// A balance folded from one edge's events still names the other edges that
// spent on the key recently: an edge that missed the balance naming it would
// otherwise subtract its folded spend again.
func TestBalanceNamesEveryRecentEdgeOfTheKey(t *testing.T) {
	_, nc := testenv.NATS(t)
	r := newRig(t, nc.ConnectedUrl())
	r.start(nil)
	k := r.key()
	now := time.Now()
	r.publish(r.events("edge-a", k, 3, 1000, now))
	r.waitRequests(k.GetId(), 3)
	r.publish(r.events("edge-c", k, 2, 1000, now.Add(time.Second)))
	kb := r.waitRequests(k.GetId(), 5)
	marks := map[string]uint64{}
	for _, f := range kb.GetFolded() {
		marks[f.GetEdgeInstance()] = f.GetWatermark()
	}
	if len(marks) != 2 || marks["edge-a"] != 3 || marks["edge-c"] != 2 {
		t.Fatalf("the balance after edge-c's events names %v, want edge-a at 3 and edge-c at 2", marks)
	}
}
