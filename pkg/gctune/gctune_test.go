package gctune

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

const mb = 1 << 20

func TestPercent(t *testing.T) {
	for _, tc := range []struct {
		live, min uint64
		want      int
	}{
		{live: 2 * mb, min: 64 * mb, want: 1600},         // the heap minimum: 4 MB × 16 = 64
		{live: 0, min: 64 * mb, want: 1600},              // nothing live yet: the same
		{live: 5 * mb, min: 64 * mb, want: 1200},         // 5 × (1 + 11.8) = 64
		{live: 31 * mb, min: 64 * mb, want: 125},         // 31 × 2 = 62 is short
		{live: 32 * mb, min: 64 * mb, want: 100},         // Go's default reaches it
		{live: 100 * mb, min: 64 * mb, want: 100},        // a large heap is left alone
		{live: 10 * mb, min: 0, want: 100},               // no minimum
		{live: 9 * mb, min: 10 * mb, want: 100},          // 18 ≥ 10
		{live: 3 * mb, min: 7 * mb, want: 150},           // 3 × 2.5 = 7.5 comes before 4 MB × 1.75 = 7
		{live: 1 * mb, min: 100_000 * mb, want: maxGOGC}, // capped
	} {
		got := Percent(tc.live, tc.min)
		if got != tc.want {
			t.Errorf("Percent(%d, %d) = %d, want %d", tc.live, tc.min, got, tc.want)
		}
		// The runtime's goal reaches the minimum, unless capped.
		goal := max(tc.live+tc.live*uint64(got)/100, runtimeHeapMinimum*uint64(got)/100)
		if got < maxGOGC && goal < tc.min {
			t.Errorf("Percent(%d, %d) = %d: goal %d under the minimum", tc.live, tc.min, got, goal)
		}
		// And not by much when the minimum is what sets it.
		if got > baseGOGC && goal > tc.min+tc.min/4 {
			t.Errorf("Percent(%d, %d) = %d: goal %d, far over the minimum", tc.live, tc.min, got, goal)
		}
	}
}

func gogc(t *testing.T) int64 {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Fatal("no /gc/gogc:percent metric")
	}
	return int64(s[0].Value.Uint64())
}

// MinHeap raises the target while the live heap is under the minimum, and
// restores Go's default when it stops.
func TestMinHeapRaisesAndRestores(t *testing.T) {
	orig := gogc(t)
	t.Cleanup(func() { debug.SetGCPercent(int(orig)) })
	t.Setenv("GOGC", "") // unset for MinHeap, whatever this test run was given
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { MinHeap(ctx, 1<<40, time.Millisecond); close(done) }()
	for deadline := time.Now().Add(5 * time.Second); gogc(t) != maxGOGC; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("target %d after 5 s, want %d for a 1 TiB minimum", gogc(t), maxGOGC)
		}
	}
	// The heap goal the runtime reports is the minimum's (capped).
	goal := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(goal)
	if g := goal[0].Value.Uint64(); g < runtimeHeapMinimum*maxGOGC/100 {
		t.Errorf("heap goal %d MB, want at least %d MB", g>>20, runtimeHeapMinimum*maxGOGC/100>>20)
	}
	cancel()
	<-done
	if p := gogc(t); p != baseGOGC {
		t.Errorf("after MinHeap stopped the target is %d, want %d", p, baseGOGC)
	}
}

// An operator's GOGC wins: MinHeap does nothing.
func TestMinHeapLeavesGOGCAlone(t *testing.T) {
	orig := gogc(t)
	t.Setenv("GOGC", "150")
	done := make(chan struct{})
	go func() { MinHeap(context.Background(), 1<<40, time.Millisecond); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("MinHeap runs although GOGC is set")
	}
	if p := gogc(t); p != orig {
		t.Errorf("target %d, want %d untouched", p, orig)
	}
}
