package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tollgate/tollgate/pkg/mockllm"
)

// ---- load generation ----------------------------------------------------

type generator struct {
	o       options
	sys     *system
	urls    map[string]string // by target; "" for one not started
	clients map[string]*http.Client
	raw     map[string]*rawClient // -client raw: used instead of clients
	bodies  map[bool][]byte
}

func newGenerator(o options, sys *system) (*generator, error) {
	g := &generator{o: o, sys: sys, clients: map[string]*http.Client{}, bodies: map[bool][]byte{},
		urls: map[string]string{"direct": sys.mockURL, "proxy": sys.proxyURL, "edge": sys.edgeURL}}
	for _, target := range []string{"direct", "proxy", "edge"} {
		g.clients[target] = &http.Client{Timeout: o.timeout, Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        20000,
			MaxIdleConnsPerHost: 20000,
			IdleConnTimeout:     2 * time.Minute,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
			WriteBufferSize:     16 << 10,
			ReadBufferSize:      16 << 10,
		}}
	}
	base := `{"model":"gpt-4o-mini","messages":[` +
		`{"role":"system","content":"You are a helpful assistant for an online shop. Answer in two sentences at most and never invent prices."},` +
		`{"role":"user","content":"Do you ship to Portugal?"},` +
		`{"role":"assistant","content":"Yes, we ship to every country in the European Union within five working days."},` +
		`{"role":"user","content":"And how much does shipping cost for an order of two books?"}` +
		`],"temperature":0.2,"max_tokens":` + strconv.Itoa(o.maxTokens)
	g.bodies[false] = []byte(base + `}`)
	g.bodies[true] = []byte(base + `,"stream":true}`)
	if o.includeUsage {
		g.bodies[true] = []byte(base + `,"stream":true,"stream_options":{"include_usage":true}}`)
	}
	if o.client == "raw" {
		g.raw = map[string]*rawClient{}
		for target, url := range g.urls {
			if url == "" {
				continue
			}
			cl, err := newRawClient(url, g.bodies, g.headers)
			if err != nil {
				return nil, err
			}
			g.raw[target] = cl
		}
	}
	return g, nil
}

// headers are the request's headers besides Host and Content-Length.
func (g *generator) headers(streamed bool) [][2]string {
	h := [][2]string{
		{"Content-Type", "application/json"},
		{"Authorization", "Bearer " + g.sys.secret}, // the mock ignores it
		{"User-Agent", "tollgate-loadtest"},
	}
	if streamed {
		h = append(h, [2]string{mockllm.HeaderChunks, strconv.Itoa(g.o.chunks)})
	}
	if g.o.mockDelay > 0 {
		h = append(h, [2]string{mockllm.HeaderDelayMs, strconv.FormatInt(g.o.mockDelay.Milliseconds(), 10)})
	}
	if streamed && g.o.chunkDelay > 0 {
		h = append(h, [2]string{mockllm.HeaderChunkDelayMs, strconv.FormatInt(g.o.chunkDelay.Milliseconds(), 10)})
	}
	return h
}

var readBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// sample is one request's outcome. Times are from its scheduled send time.
type sample struct {
	late      time.Duration // actual send - scheduled
	firstByte time.Duration // first byte of the body (streams: the first event)
	total     time.Duration // last byte
	size      int64         // the body's bytes (raw client only)
	err       error
}

// do sends one request and reads the whole answer.
func (g *generator) do(ctx context.Context, target string, streamed bool, scheduled time.Time) sample {
	var s sample
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.urls[target]+"/v1/chat/completions", bytes.NewReader(g.bodies[streamed]))
	if err != nil {
		s.err = err
		return s
	}
	for _, h := range g.headers(streamed) {
		req.Header.Set(h[0], h[1])
	}
	s.late = time.Since(scheduled)
	res, err := g.clients[target].Do(req)
	if err != nil {
		s.err = err
		s.total = time.Since(scheduled)
		return s
	}
	defer res.Body.Close()
	bufp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bufp)
	buf := *bufp
	var tailBuf [128]byte
	tail := tailBuf[:0] // the last bytes of the answer, to check how a stream ended
	keep := func(p []byte) {
		tail = append(tail, p[max(0, len(p)-64):]...)
		if len(tail) > 64 {
			tail = append(tail[:0], tail[len(tail)-64:]...)
		}
	}
	n, rerr := res.Body.Read(buf)
	s.firstByte = time.Since(scheduled)
	read := n
	keep(buf[:n])
	for rerr == nil {
		n, rerr = res.Body.Read(buf)
		read += n
		keep(buf[:n])
	}
	s.total = time.Since(scheduled)
	switch {
	case rerr != io.EOF:
		s.err = rerr
	case res.StatusCode != http.StatusOK:
		s.err = fmt.Errorf("status %d", res.StatusCode)
	case streamed && !bytes.HasSuffix(tail, []byte("data: [DONE]\n\n")):
		s.err = errors.New("stream did not end with [DONE]")
	case read == 0:
		s.err = errors.New("empty answer")
	}
	return s
}

// result is a step's samples.
type result struct {
	perSec   int // the open loop's target rate
	target   string
	streamed bool
	samples  []sample
	dropped  int
	elapsed  time.Duration
	lastDone time.Time
	cpu      cpuTimes
	calls    callCounts // open loop only
	sorted   map[string][]time.Duration
	// rounds are the parts of an open-loop step measured in turn with the
	// other targets (-rounds); the samples above are theirs together.
	rounds []*result
}

func (r *result) errors() int {
	n := r.dropped
	for _, s := range r.samples {
		if s.err != nil {
			n++
		}
	}
	return n
}

func (r *result) firstError() string {
	for _, s := range r.samples {
		if s.err != nil {
			return s.err.Error()
		}
	}
	if r.dropped > 0 {
		return fmt.Sprintf("%d dropped: more than -max-inflight in flight", r.dropped)
	}
	return ""
}

func (r *result) rate() float64 {
	ok := 0
	for _, s := range r.samples {
		if s.err == nil {
			ok++
		}
	}
	return float64(ok) / r.elapsed.Seconds()
}

// q is the q-quantile of a measure of the successful requests: "total",
// "first" or "late".
func (r *result) q(measure string, q float64) time.Duration {
	if r.sorted == nil {
		r.sorted = map[string][]time.Duration{}
	}
	d, ok := r.sorted[measure]
	if !ok {
		for _, s := range r.samples {
			if s.err != nil {
				continue
			}
			switch measure {
			case "total":
				d = append(d, s.total)
			case "first":
				d = append(d, s.firstByte)
			case "late":
				d = append(d, s.late)
			}
		}
		slices.Sort(d)
		r.sorted[measure] = d
	}
	if len(d) == 0 {
		return 0
	}
	i := int(q*float64(len(d))+0.999999) - 1
	return d[min(max(i, 0), len(d)-1)]
}

func (r *result) summary() string {
	s := fmt.Sprintf("%.0f req/s, p50 %v p90 %v p99 %v max %v, errors %d",
		r.rate(), ms(r.q("total", .5)), ms(r.q("total", .9)), ms(r.q("total", .99)), ms(r.q("total", 1)), r.errors())
	if e := r.firstError(); e != "" {
		s += " (" + e + ")"
	}
	return s
}

// openLoop sends at rate for warmup and then duration, each request on its
// schedule, and keeps the samples of the measured part.
func (g *generator) openLoop(ctx context.Context, target string, streamed bool, rate int, warmup, duration time.Duration) *result {
	warm := int(float64(rate) * warmup.Seconds())
	total := warm + int(float64(rate)*duration.Seconds())
	interval := time.Second / time.Duration(rate)
	res := &result{perSec: rate, target: target, streamed: streamed, samples: make([]sample, 0, total-warm)}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var inflight atomic.Int64
	// The pacer sleeps in nanosleep on a thread of its own: Go's timers
	// wake a sleeping program no more often than every millisecond, which
	// would send requests in bursts and add up to 1 ms to every latency.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := time.Now().Add(5 * time.Millisecond)
	var measureStart time.Time
	var cpu0 cpuTimes
	var calls0 callCounts
	for i := range total {
		if ctx.Err() != nil {
			break
		}
		scheduled := start.Add(time.Duration(i) * interval)
		if d := time.Until(scheduled); d > 0 {
			ts := syscall.NsecToTimespec(d.Nanoseconds())
			syscall.Nanosleep(&ts, nil) //nolint:errcheck // an early wake is caught up below
		}
		if i == warm {
			measureStart, cpu0, calls0 = scheduled, g.sys.cpu(), g.sys.calls()
		}
		measured := i >= warm
		if inflight.Load() >= int64(g.o.maxInflight) {
			if measured {
				res.dropped++
			}
			continue
		}
		inflight.Add(1)
		wg.Add(1)
		done := func(s sample) {
			if measured {
				mu.Lock()
				res.samples = append(res.samples, s)
				res.lastDone = time.Now()
				mu.Unlock()
			}
			inflight.Add(-1)
			wg.Done()
		}
		if cl := g.raw[target]; cl != nil {
			cl.send(streamed, scheduled, done)
			continue
		}
		go func() { done(g.do(ctx, target, streamed, scheduled)) }()
	}
	if cl := g.raw[target]; cl != nil {
		// The raw client has no per-request timeout: answers still out
		// -timeout after the last send fail when their connections close.
		waited := make(chan struct{})
		go func() { wg.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(g.o.timeout):
			cl.closeAll()
		case <-ctx.Done():
			cl.closeAll()
		}
	}
	wg.Wait()
	res.cpu = g.sys.cpu().sub(cpu0)
	res.calls = g.sys.calls().sub(calls0)
	// The achieved rate is the answers over the time from the first
	// measured send to the last answer: below the target when the system
	// falls behind.
	res.elapsed = max(duration, res.lastDone.Sub(measureStart))
	return res
}

// merge adds the samples, time and CPU of another round of the same step.
func (r *result) merge(o *result) {
	r.samples = append(r.samples, o.samples...)
	r.dropped += o.dropped
	r.elapsed += o.elapsed
	if o.lastDone.After(r.lastDone) {
		r.lastDone = o.lastDone
	}
	for k, v := range o.cpu {
		r.cpu[k] += v
	}
	for k, v := range o.calls {
		sum := r.calls[k]
		r.calls[k] = [2]int64{sum[0] + v[0], sum[1] + v[1]}
	}
	r.rounds = append(r.rounds, o)
	r.sorted = nil
}

// rawRoundTrip sends one request on the closed-loop worker's connection
// *rc, dialling it first if need be (its answers must come by end+timeout).
func (g *generator) rawRoundTrip(cl *rawClient, rc **rawConn, streamed bool, now, end time.Time) sample {
	if *rc == nil {
		c, err := cl.dial()
		if err != nil {
			return sample{total: time.Since(now), err: err}
		}
		c.c.SetDeadline(end.Add(g.o.timeout)) //nolint:errcheck // a fresh connection
		*rc = c
	}
	s, ok := (*rc).roundTrip(streamed, now)
	if !ok {
		*rc = nil
	}
	return s
}

// closedLoop runs n workers that each send a request as soon as their last
// one is answered, for a second unmeasured and then closedDur.
func (g *generator) closedLoop(ctx context.Context, target string, streamed bool, n int) *result {
	res := &result{target: target, streamed: streamed}
	var mu sync.Mutex
	var wg sync.WaitGroup
	measureFrom := time.Now().Add(time.Second)
	end := measureFrom.Add(g.o.closedDur)
	cpu0 := make(chan cpuTimes, 1)
	snap := time.AfterFunc(time.Until(measureFrom), func() { cpu0 <- g.sys.cpu() })
	defer snap.Stop()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []sample
			var rc *rawConn // -client raw: this worker's connection
			defer func() {
				if rc != nil {
					rc.close()
				}
			}()
			for ctx.Err() == nil {
				now := time.Now()
				if !now.Before(end) {
					break
				}
				var s sample
				if cl := g.raw[target]; cl != nil {
					s = g.rawRoundTrip(cl, &rc, streamed, now, end)
				} else {
					s = g.do(ctx, target, streamed, now)
				}
				if now.After(measureFrom) {
					mine = append(mine, s)
				}
				if s.err != nil {
					time.Sleep(10 * time.Millisecond) // do not spin on a broken target
				}
			}
			mu.Lock()
			res.samples = append(res.samples, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(measureFrom)
	select {
	case c := <-cpu0:
		res.cpu = g.sys.cpu().sub(c)
	default:
	}
	return res
}
