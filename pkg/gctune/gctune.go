// Package gctune keeps the garbage collector of a process with a small live
// heap from running many times a second.
//
// Go starts a collection when the heap has grown by GOGC percent over what
// the last one found live (with a floor of 4 MB). A process whose live heap
// is a few megabytes but which allocates tens of megabytes a second, as the
// edge does at a few thousand requests a second, then collects five to ten
// times a second; each collection takes a share of the CPUs for a
// millisecond or two, and the requests that meet one wait: on two CPUs that
// was the edge's p99 (BENCHMARKS.md). MinHeap raises the collector's target
// while the live heap is small, so that the heap may grow to a minimum size
// between collections, and lowers it back to Go's default as the live heap
// grows: the heap goal is about max(minimum, live × 2).
// It is the effect of a "ballast" allocation without the allocation.
package gctune

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// baseGOGC is the target MinHeap returns to as the live heap grows: Go's
// default. MinHeap does nothing when GOGC is set in the environment.
const baseGOGC = 100

// maxGOGC bounds the target: a 400 MB heap minimum.
const maxGOGC = 10_000

// liveHeap is the runtime metric of the heap found live by the last
// collection.
const liveHeap = "/gc/heap/live:bytes"

// MinHeap keeps the heap goal at minHeap bytes at least, checking the live
// heap every interval, until ctx ends; then it restores GOGC. It returns at
// once, doing nothing, when minHeap is 0 or GOGC is set in the environment
// (the operator's choice wins). It is meant for a process that runs one
// service: the collector's target is the whole process's.
func MinHeap(ctx context.Context, minHeap uint64, interval time.Duration) {
	if minHeap == 0 || os.Getenv("GOGC") != "" {
		return
	}
	sample := []metrics.Sample{{Name: liveHeap}}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	current := baseGOGC
	defer func() { debug.SetGCPercent(baseGOGC) }()
	for {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			if p := Percent(sample[0].Value.Uint64(), minHeap); p != current {
				debug.SetGCPercent(p)
				current = p
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// runtimeHeapMinimum is the Go runtime's smallest heap goal at GOGC=100;
// it scales with GOGC (4 MB at 100, 40 MB at 1000).
const runtimeHeapMinimum = 4 << 20

// Percent is the collector target that puts the heap goal at minHeap, or a
// little above, for a live heap of live bytes: GOGC's default when that
// reaches it already. The runtime's goal is the larger of live × (1 +
// percent/100) and its heap minimum, which scales with the target (4 MB ×
// percent/100), so the target is the smaller of the two that reach minHeap
// each on its own; rounded up to a step of 25, so that small changes of the
// live heap leave it be; at most maxGOGC.
func Percent(live, minHeap uint64) int {
	if live+live*baseGOGC/100 >= minHeap {
		return baseGOGC
	}
	// The heap minimum alone: 4 MB × p/100 >= minHeap.
	p := ceilDiv(100*minHeap, runtimeHeapMinimum)
	// The live heap's growth alone: live × (1 + p/100) >= minHeap.
	if live > 0 {
		p = min(p, ceilDiv(100*(minHeap-live), live))
	}
	p = ceilDiv(p, 25) * 25
	return int(max(min(p, maxGOGC), baseGOGC))
}

func ceilDiv(a, b uint64) uint64 { return (a + b - 1) / b }
