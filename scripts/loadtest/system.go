package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/catalog"
	"github.com/tollgate/tollgate/pkg/config"
	"github.com/tollgate/tollgate/pkg/h1"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/mockllm"
	"github.com/tollgate/tollgate/pkg/sysmon"
	"github.com/tollgate/tollgate/services/edge"
)

// ---- the system under test ----------------------------------------------

// system is NATS, the mock and the edge, wherever they run.
type system struct {
	natsURL, mockURL, edgeURL, proxyURL string
	secret                              string
	procs                               map[string]*child // by role; empty in process
	stealKnown                          bool              // /proc/stat has steal time
	stop                                func()
}

const pepperLen = 32

// openStep measures every target at rate, in o.rounds rounds that take the
// targets in turn (direct, proxy, edge, direct, ...), so that a slow spell
// of the machine falls on all of them alike rather than on whichever ran
// then. Each round has its own warm-up; a target's rounds are then pooled.
func (g *generator) openStep(ctx context.Context, targets []string, streamed bool, rate int) ([]*result, error) {
	o := g.o
	rounds := max(o.rounds, 1)
	dur := o.duration / time.Duration(rounds)
	warm := o.warmup
	if rounds > 1 {
		warm = max(o.warmup/time.Duration(rounds), 500*time.Millisecond)
	}
	pooled := map[string]*result{}
	for round := range rounds {
		for _, target := range targets {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			logf("open loop: %s %s at %d req/s for %v (+%v warm-up), round %d of %d", modeName(streamed), target, rate, dur, warm, round+1, rounds)
			res := g.openLoop(ctx, target, streamed, rate, warm, dur)
			logf("  %s", res.summary())
			if p := pooled[target]; p != nil {
				p.merge(res)
			} else {
				pooled[target] = &result{perSec: rate, target: target, streamed: streamed, cpu: cpuTimes{}, calls: callCounts{}}
				pooled[target].merge(res)
			}
		}
	}
	out := make([]*result, 0, len(targets))
	for _, target := range targets {
		out = append(out, pooled[target])
	}
	return out, nil
}

func run(ctx context.Context, o options) error {
	sys, err := start(ctx, o)
	if err != nil {
		return err
	}
	defer sys.stop()

	m := machine()
	fmt.Printf("## Edge load test, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Printf("Machine: %s. Load average before: %s.\n", m, loadAvg())
	where := "NATS, the mock, the proxy and the edge each in a child process; the load generator in this one"
	if o.inProcess {
		where = "NATS, the mock, the proxy, the edge and the load generator in one process"
	}
	if o.pin {
		fmt.Printf("Processes: %s, pinned with taskset: the edge alone on CPU %d, the generator, the mock and NATS on the others\n"+
			"(other programs on the machine are not pinned and may run anywhere).\n", where, runtime.NumCPU()-1)
	} else {
		fmt.Printf("Processes: %s. **All of them share the same %d CPUs** (and whatever else runs on the machine), so the\n"+
			"edge's numbers include competing with the generator and the mock for them.\n", where, runtime.NumCPU())
	}
	fmt.Printf("Load generator's client: %s; the mock's server: %s.\n", o.client, o.mockServer)
	if !o.inProcess {
		fmt.Printf("Go's monitor thread (sysmon) kept awake (GODEBUG schedtrace, package sysmon): edge %s, proxy %s; generator %s, mock %s; NATS %s.\n",
			sys.sysmonAwake("edge"), sys.sysmonAwake("proxy"), yesNo(sysmon.Awake(os.Getenv("GODEBUG"))), sys.sysmonAwake("mock"), sys.sysmonAwake("nats"))
	} else {
		fmt.Printf("Go's monitor thread (sysmon) kept awake in the one process (-stand-ins-awake): %s.\n", yesNo(sysmon.Awake(os.Getenv("GODEBUG"))))
	}
	fmt.Printf("Requests: chat, max_tokens %d; streams cut into %d pieces (X-Mock-Chunks), include_usage %v; mock delay %v, between stream events %v; key with limits: %v.\n\n",
		o.maxTokens, o.chunks, o.includeUsage, o.mockDelay, o.chunkDelay, o.edgeLimits)

	modes := []bool{}
	if o.plain {
		modes = append(modes, false)
	}
	if o.stream {
		modes = append(modes, true)
	}
	gen, err := newGenerator(o, sys)
	if err != nil {
		return err
	}
	targets := []string{"direct", "edge"}
	if o.proxy {
		targets = []string{"direct", "proxy", "edge"}
	}
	if !o.skipOpen {
		for _, streamed := range modes {
			var rows []*result
			for _, rate := range o.rates {
				step, err := gen.openStep(ctx, targets, streamed, rate)
				if err != nil {
					return err
				}
				rows = append(rows, step...)
			}
			printOpen(streamed, rows, sys)
		}
	}
	if !o.skipClosed {
		for _, streamed := range modes {
			var rows []closedRow
			for _, target := range targets {
				best := 0.0
				worse := 0
				for _, n := range o.concurrency {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					logf("closed loop: %s %s with %d workers for %v", modeName(streamed), target, n, o.closedDur)
					res := gen.closedLoop(ctx, target, streamed, n)
					logf("  %s", res.summary())
					rows = append(rows, closedRow{target: target, workers: n, res: res})
					if res.rate() > best*1.03 {
						best, worse = max(best, res.rate()), 0
					} else if worse++; worse == 2 {
						break // two steps without 3 % more: saturated
					}
				}
			}
			printClosed(streamed, rows, targets, sys)
		}
	}
	fmt.Printf("Load average after: %s.\n", loadAvg())
	return nil
}

func modeName(streamed bool) string {
	if streamed {
		return "stream"
	}
	return "plain"
}

// start brings the system up, in process or as children.
func start(ctx context.Context, o options) (*system, error) {
	pepper := make([]byte, pepperLen)
	rand.Read(pepper)
	pep := hex.EncodeToString(pepper)
	sys := &system{procs: map[string]*child{}}
	_, sys.stealKnown = stealCPU()
	var cleanups []func()
	sys.stop = func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	ok := false
	defer func() {
		if !ok {
			sys.stop()
		}
	}()
	if o.inProcess {
		natsURL, stopNATS, err := startNATS()
		if err != nil {
			return nil, err
		}
		cleanups = append(cleanups, stopNATS)
		mockURL, stopMock, err := startMock(o.mockServer)
		if err != nil {
			return nil, err
		}
		cleanups = append(cleanups, stopMock)
		proxyURL, stopProxy, err := startProxy(o.proxyKind + " " + mockURL)
		if err != nil {
			return nil, err
		}
		cleanups = append(cleanups, stopProxy)
		sys.proxyURL = proxyURL
		secret, err := seed(ctx, natsURL, pep, mockURL, o.edgeLimits)
		if err != nil {
			return nil, err
		}
		cfg, err := edgeConfig()
		if err != nil {
			return nil, err
		}
		edgeURL, stopEdge, err := startEdge(cfg, natsURL, pep)
		if err != nil {
			return nil, err
		}
		cleanups = append(cleanups, stopEdge)
		sys.natsURL, sys.mockURL, sys.edgeURL, sys.secret = natsURL, mockURL, edgeURL, secret
		ok = true
		return sys, nil
	}
	env := []string{}
	if o.childProcs > 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(o.childProcs))
	}
	lifetime := o.maxTotalTime + time.Minute
	cpus := map[string]string{}
	if o.pin {
		n := runtime.NumCPU()
		if n < 2 {
			return nil, errors.New("-pin needs 2 CPUs or more")
		}
		rest := "0"
		if n > 2 {
			rest = "0-" + strconv.Itoa(n-2)
		}
		cpus = map[string]string{"edge": strconv.Itoa(n - 1), "proxy": strconv.Itoa(n - 1), "mock": rest, "nats": rest}
		// This process (the generator) and all its threads.
		if out, err := exec.Command("taskset", "-a", "-c", "-p", rest, strconv.Itoa(os.Getpid())).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("taskset: %v: %s", err, out)
		}
	}
	roles := []string{"nats", "mock", "edge"}
	if o.proxy {
		roles = append(roles, "proxy")
	}
	for _, role := range roles {
		arg := ""
		switch role {
		case "mock":
			arg = o.mockServer
		case "proxy":
			arg = o.proxyKind + " " + sys.mockURL
		case "edge":
			secret, err := seed(ctx, sys.natsURL, pep, sys.mockURL, o.edgeLimits)
			if err != nil {
				return nil, err
			}
			sys.secret = secret
			arg = sys.natsURL
		}
		roleEnv := append(slices.Clip(env), "TOLLGATE_PEPPER="+pep)
		if role == "edge" || role == "proxy" {
			if o.hopProcs > 0 {
				roleEnv = append(roleEnv, "GOMAXPROCS="+strconv.Itoa(o.hopProcs))
			}
			// The edge reads it as its setting; the proxy follows it so
			// that "the edge beyond the proxy" compares like with like.
			roleEnv = append(roleEnv, "TOLLGATE_EDGE_SYSMON_AWAKE="+strconv.FormatBool(o.sysmonAwake))
		}
		if role == "edge" {
			roleEnv = append(roleEnv, o.edgeEnv...)
		}
		if path := map[string]string{"edge": o.edgeProfile, "mock": o.mockProfile, "nats": o.natsProfile}[role]; path != "" {
			roleEnv = append(roleEnv, "TOLLGATE_LOADTEST_CPUPROFILE="+path)
		}
		if o.natsProcs > 0 && role == "nats" {
			roleEnv = append(roleEnv, "GOMAXPROCS="+strconv.Itoa(o.natsProcs))
		}
		awake := role == "mock" && o.standInsWake || role == "nats" && o.natsAwake
		c, err := startChild(ctx, role, arg, roleEnv, awake, lifetime, cpus[role])
		if err != nil {
			return nil, err
		}
		cleanups = append(cleanups, c.stop)
		sys.procs[role] = c
		switch role {
		case "nats":
			sys.natsURL = c.url
		case "mock":
			sys.mockURL = c.url
		case "edge":
			sys.edgeURL = c.url
		case "proxy":
			sys.proxyURL = c.url
		}
	}
	ok = true
	return sys, nil
}

// sysmonAwake says whether a child process runs with GODEBUG keeping sysmon
// awake, read from the environment it was (re-)executed with.
func (s *system) sysmonAwake(role string) string {
	c := s.procs[role]
	if c == nil {
		return "(not running)"
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", c.cmd.Process.Pid))
	if err != nil {
		return "(unknown: " + err.Error() + ")"
	}
	for kv := range strings.SplitSeq(string(env), "\x00") {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			return yesNo(sysmon.Awake(v))
		}
	}
	return "no"
}

func yesNo(b bool) string { return map[bool]string{true: "yes", false: "no"}[b] }

func startNATS() (string, func(), error) {
	dir, err := os.MkdirTemp("", "tollgate-loadtest-nats-")
	if err != nil {
		return "", nil, err
	}
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return ns.ClientURL(), func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		os.RemoveAll(dir)
	}, nil
}

// startMock serves the mock upstream with the HTTP server named by kind:
// h1 (pkg/h1's, by default: the mock stands in for a provider on other
// machines, so the less of the shared CPUs it takes, the nearer the edge's
// numbers come to that) or net/http.
func startMock(kind string) (string, func(), error) {
	mock, err := mockllm.New(mockllm.Options{})
	if err != nil {
		return "", nil, err
	}
	return serveHTTP(kind, mock)
}

// serveHTTP serves h on a loopback port with net/http's server or, for kind
// h1, pkg/h1's, and returns its URL and how to stop it.
func serveHTTP(kind string, h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var srv interface {
		Serve(net.Listener) error
		Close() error
	} = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	if kind == "h1" {
		srv = &h1.Server{Handler: h}
	}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// startProxy serves a minimal pass-through proxy to the upstream in arg
// ("<kind> <url>"): it reads the request, sends it on with a few headers,
// and copies the answer back (a stream read by read, flushed by
// h1.Coalesce's rule), as the edge does, but checks, meters and publishes
// nothing: the cost of a second HTTP hop on this machine. Its kind is
// net/http (net/http's server and Transport), h1 (pkg/h1's, as the edge:
// the difference to the edge is the edge's own work) or relay (no HTTP at
// all, see startRelay).
func startProxy(arg string) (string, func(), error) {
	kind, upstream, _ := strings.Cut(arg, " ")
	if kind == "relay" {
		return startRelay(strings.TrimPrefix(upstream, "http://"))
	}
	var client http.RoundTripper = &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	if kind == "h1" {
		client = h1.New(time.Minute, nil)
	}
	bufs := sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		req, err := http.NewRequestWithContext(r.Context(), r.Method, upstream+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		for _, name := range []string{"Content-Type", "Accept", "User-Agent", mockllm.HeaderChunks, mockllm.HeaderDelayMs, mockllm.HeaderChunkDelayMs} {
			if v := r.Header.Values(name); len(v) > 0 {
				req.Header[name] = v
			}
		}
		res, err := client.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		for name, v := range res.Header {
			if name != "Content-Length" && name != "Connection" {
				w.Header()[name] = v
			}
		}
		if !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
			data, err := io.ReadAll(res.Body)
			if err != nil {
				return
			}
			w.WriteHeader(res.StatusCode)
			w.Write(data) //nolint:errcheck // the client is gone
			return
		}
		w.WriteHeader(res.StatusCode)
		rc := http.NewResponseController(w)
		bp := bufs.Get().(*[]byte)
		defer bufs.Put(bp)
		flush := h1.NewCoalesce(res.Body) // as the edge does
		for {
			n, rerr := res.Body.Read(*bp)
			if n > 0 {
				if _, err := w.Write((*bp)[:n]); err != nil {
					return
				}
				flush.Wrote(n)
			}
			if rerr != nil {
				return // the last read goes out with the answer's end
			}
			if flush.FlushNow() {
				rc.Flush() //nolint:errcheck // as above
			}
		}
	})
	return serveHTTP(kind, h)
}

// edgeConfig is the edge's configuration as `tollgate edge` loads it from
// the environment: the defaults, then every TOLLGATE_* variable (so -edge-env
// TOLLGATE_EDGE_HTTP_SERVER=net/http and the like reach it). startEdge sets
// the addresses, the pepper and the spool.
func edgeConfig() (edge.Config, error) {
	cfg := edge.DefaultConfig()
	err := config.Bind(pflag.NewFlagSet("edge", pflag.ContinueOnError), &cfg).Load(nil, os.Environ())
	return cfg, err
}

func startEdge(cfg edge.Config, natsURL, pepper string) (string, func(), error) {
	dir, err := os.MkdirTemp("", "tollgate-loadtest-spool-")
	if err != nil {
		return "", nil, err
	}
	cfg.Listen = "127.0.0.1:0"
	cfg.NATSURL = natsURL
	cfg.Pepper = pepper
	cfg.SpoolDir = dir
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	s, err := edge.New(ctx, cfg, log)
	if err != nil {
		cancel()
		os.RemoveAll(dir)
		return "", nil, err
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	if err := s.WaitReady(rctx); err != nil {
		cancel()
		s.Close()
		return "", nil, err
	}
	return "http://" + s.Addr(), func() {
		cancel()
		select {
		case <-done:
		case <-time.After(40 * time.Second):
		}
		s.Close()
		os.RemoveAll(dir)
	}, nil
}

// seed puts the mock in the catalog and creates the key, as the admin
// would, and returns the key's secret.
func seed(ctx context.Context, natsURL, pepper, mockURL string, withLimits bool) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	store, err := catalog.Open(ctx, js, 1)
	if err != nil {
		return "", err
	}
	if err := store.PutService(ctx, &eventsv1.Service{Id: "loadtest/mock", Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: mockURL}, catalog.By("loadtest")); err != nil {
		return "", err
	}
	for _, m := range []*eventsv1.Model{
		{Name: "gpt-4o-mini", Service: "loadtest/mock", InputPricePerMillion: 15e7, OutputPricePerMillion: 6e8, MaxOutputTokens: 16384},
		{Name: "gpt-4o", Service: "loadtest/mock", InputPricePerMillion: 25e8, OutputPricePerMillion: 1e10, MaxOutputTokens: 16384},
	} {
		if err := store.PutModel(ctx, m, "", catalog.By("loadtest"), catalog.Unconditional); err != nil {
			return "", err
		}
	}
	keyLog, err := bus.NewKeyLog(ctx, js, bus.StreamOptions{})
	if err != nil {
		return "", err
	}
	hasher, err := keys.NewHasher([]byte(pepper), "loadtest")
	if err != nil {
		return "", err
	}
	k := &eventsv1.Key{Account: "loadtest", Name: "load", Permissions: []eventsv1.Permission{eventsv1.Permission_PERMISSION_PREDICT}}
	if withLimits {
		// Four limits far from being reached, and a model filter: every
		// check runs on every request, none refuses.
		k.Limits = []*eventsv1.Limit{
			{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: 1e18, Window: eventsv1.Window_WINDOW_ROLLING},
			{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_MONTH, Amount: 1e18, Window: eventsv1.Window_WINDOW_CALENDAR},
			{Metric: eventsv1.Metric_METRIC_TOKENS, Interval: eventsv1.Interval_INTERVAL_MINUTE, Amount: 1e15, Window: eventsv1.Window_WINDOW_ROLLING},
			{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_MINUTE, Amount: 1e12, Window: eventsv1.Window_WINDOW_ROLLING},
		}
		k.Models = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED, Names: []string{"gpt-4o-mini", "gpt-4o"}}
	}
	ev, secret, err := keys.Create(time.Now(), "loadtest", hasher, k, "lt_")
	if err != nil {
		return "", err
	}
	if _, err := keyLog.Append(ctx, ev, 0); err != nil {
		return "", err
	}
	return secret, nil
}

// startRelay is the -proxy-kind relay stand-in for the minimal proxy: it copies bytes
// between each client connection and a connection of its own to addr, with
// no HTTP at all. What it adds is what the operating system and Go's
// scheduler charge for a second hop on this machine, the floor under any
// proxy's added latency.
func startRelay(addr string) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				u, err := net.Dial("tcp", addr)
				if err != nil {
					c.Close()
					return
				}
				go func() { io.Copy(u, c); u.Close() }()
				io.Copy(c, u)
				c.Close()
			}()
		}
	}()
	return "http://" + ln.Addr().String(), func() { ln.Close() }, nil
}
