package edge

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/testenv"
)

// load sends requests from a few goroutines until stop is closed and counts
// the answers by status.
func load(t *testing.T, url, secret string, stop <-chan struct{}, onAnswer func(status int, at time.Time)) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, _ := do(t, url, "POST", "/v1/chat/completions", secret, chatBody)
				onAnswer(res.StatusCode, time.Now())
			}
		}()
	}
	return &wg
}

// A key revoked while two edges serve it under load stops working at both
// within one second.
func TestRevocationReachesEveryEdgeWithinASecond(t *testing.T) {
	w := newWorld(t)
	edges := []*testEdge{w.edge(nil), w.edge(nil)}
	secret, k := w.key(nil)
	for _, e := range edges {
		waitFor(t, "key at each edge", func() bool { return e.keys.Len() == 1 })
	}
	stop := make(chan struct{})
	var mu sync.Mutex
	lastOK := map[int]time.Time{}
	firstRevoked := map[int]time.Time{}
	var served atomic.Int64
	var groups []*sync.WaitGroup
	for i, e := range edges {
		groups = append(groups, load(t, e.url, secret, stop, func(status int, at time.Time) {
			mu.Lock()
			defer mu.Unlock()
			switch status {
			case 200:
				lastOK[i] = at
				served.Add(1)
			case 401:
				if firstRevoked[i].IsZero() {
					firstRevoked[i] = at
				}
			default:
				t.Errorf("edge %d: status %d", i, status)
			}
		}))
	}
	waitFor(t, "load on both edges", func() bool { return served.Load() > 100 })
	revokedAt := time.Now()
	w.change(k, func(cur *eventsv1.Key) (*eventsv1.KeyEvent, error) { return keys.Revoke(revokedAt, "t", cur) })
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	for _, g := range groups {
		g.Wait()
	}
	for i := range edges {
		if firstRevoked[i].IsZero() {
			t.Fatalf("edge %d still served the revoked key", i)
		}
		if d := lastOK[i].Sub(revokedAt); d > time.Second {
			t.Fatalf("edge %d served the key %v after it was revoked", i, d)
		}
		t.Logf("edge %d: last success %v after the revocation was appended, first refusal after %v", i,
			lastOK[i].Sub(revokedAt).Round(time.Millisecond), firstRevoked[i].Sub(revokedAt).Round(time.Millisecond))
	}
}

// The bus dies under load: the edge keeps serving (fail-open), spools the
// usage events, and after the bus is back every request has its event.
func TestBusOutageLosesNoUsageEvent(t *testing.T) {
	h := testenv.NATSRestartable(t)
	w := newWorldOn(t, h.URL())
	e := w.edge(nil)
	secret, _ := w.key(nil)
	waitFor(t, "key", func() bool { return e.keys.Len() == 1 })

	stop := make(chan struct{})
	var ok, failed atomic.Int64
	g := load(t, e.url, secret, stop, func(status int, _ time.Time) {
		if status == 200 {
			ok.Add(1)
		} else {
			failed.Add(1)
		}
	})
	waitFor(t, "load", func() bool { return ok.Load() > 200 })
	h.Shutdown()
	during := ok.Load()
	time.Sleep(700 * time.Millisecond)
	servedWhileDown := ok.Load() - during
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "more load after the bus is back", func() bool { return ok.Load() > during+servedWhileDown+200 })
	close(stop)
	g.Wait()
	if servedWhileDown == 0 {
		t.Fatal("the edge served nothing while the bus was down (fail-open expected)")
	}
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed", failed.Load())
	}
	total := ok.Load()
	waitFor(t, "every usage event in the stream", func() bool {
		pub, _ := e.usage.Stats()
		return int64(pub) >= total
	})
	evs := w.usageEvents()
	seen := map[uint64]bool{}
	for _, ev := range evs {
		seen[ev.GetSequence()] = true
	}
	for seq := uint64(1); seq <= uint64(total); seq++ {
		if !seen[seq] {
			t.Fatalf("usage event %d of %d is missing", seq, total)
		}
	}
	_, spooled := e.usage.Stats()
	t.Logf("%d requests, %d served while the bus was down, %d events spooled, %d stored (%d distinct)", total, servedWhileDown, spooled, len(evs), len(seen))
}
