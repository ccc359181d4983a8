// Command loadtest measures the latency the edge adds and its throughput on
// this machine. It starts, on loopback only, an embedded NATS, the mock
// upstream (pkg/mockllm) and an edge with one key (four limits and a model
// filter, as a real key) and a catalog that points at the mock; then, for
// plain and streamed chat requests:
//
//  1. open loop: at each fixed rate, for a fixed time, requests go out on a
//     schedule whatever the answers do, first to the mock directly, then
//     through a minimal pass-through proxy (what a bare second HTTP hop
//     costs here; -proxy=false skips it), then through the edge; latency is
//     measured from each request's scheduled send time (no coordinated
//     omission) to the last byte of its answer;
//  2. closed loop: N workers send back to back, N doubling until the
//     throughput stops growing: the most each target serves here.
//
// It prints markdown tables. By default NATS, the mock, the proxy and the
// edge each run in a child process of their own (this program re-executed),
// so that the load generator's garbage and scheduling stay out of the edge's
// process and each process's CPU time can be read; -inprocess runs them all
// here.
//
//	go run ./scripts/loadtest                      # the whole run, about 10 minutes
//	go run ./scripts/loadtest -rates 2000 -duration 20s -stream=false
//
// Everything stops by itself: requests are bounded in number and time, and
// the children exit when this process does.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/catalog"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/mockllm"
	"github.com/tollgate/tollgate/services/edge"
)

type options struct {
	rates        []int
	duration     time.Duration
	warmup       time.Duration
	plain        bool
	stream       bool
	chunks       int
	maxTokens    int
	mockDelay    time.Duration
	chunkDelay   time.Duration
	includeUsage bool
	concurrency  []int
	closedDur    time.Duration
	maxInflight  int
	timeout      time.Duration
	inProcess    bool
	childProcs   int
	edgeLimits   bool
	skipOpen     bool
	skipClosed   bool
	maxTotalTime time.Duration
	edgeProfile  string
	pin          bool
	proxy        bool
}

func main() {
	var o options
	var rates, conc string
	child := flag.String("child", "", "internal: run as the nats, mock, proxy or edge child process")
	childArg := flag.String("child-arg", "", "internal: the child's argument")
	flag.StringVar(&rates, "rates", "500,1000,2000,4000", "open-loop rates in requests per second, comma-separated")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per open-loop step")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured time at the step's rate before each open-loop step")
	flag.BoolVar(&o.plain, "plain", true, "measure plain (buffered) chat requests")
	flag.BoolVar(&o.stream, "stream", true, "measure streamed chat requests")
	flag.IntVar(&o.chunks, "chunks", 16, "pieces the mock cuts a streamed reply into (X-Mock-Chunks); the stream has 3 or 4 events more")
	flag.IntVar(&o.maxTokens, "max-tokens", 64, "max_tokens of each request (the mock's reply length)")
	flag.DurationVar(&o.mockDelay, "mock-delay", 0, "time the mock waits before answering (X-Mock-Delay-Ms), to hold requests in flight")
	flag.DurationVar(&o.chunkDelay, "chunk-delay", 0, "time the mock waits between the events of a stream (X-Mock-Chunk-Delay-Ms), as a model generating tokens")
	flag.BoolVar(&o.includeUsage, "include-usage", false, "streamed requests ask for usage (stream_options.include_usage); without it the edge asks upstream for it and removes it, so its upstream sends one event more than the mock called directly")
	flag.StringVar(&conc, "concurrency", "1,2,4,8,16,32,64,128", "closed-loop worker counts, tried in order until the throughput stops growing")
	flag.DurationVar(&o.closedDur, "closed-duration", 5*time.Second, "measured time per closed-loop step (after 1 s unmeasured)")
	flag.IntVar(&o.maxInflight, "max-inflight", 5000, "open loop: requests in flight at most; a request due beyond it is counted as dropped")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Second, "per-request timeout")
	flag.BoolVar(&o.inProcess, "inprocess", false, "run NATS, the mock, the proxy and the edge in this process instead of child processes")
	flag.IntVar(&o.childProcs, "child-gomaxprocs", 0, "GOMAXPROCS of the child processes (0: Go's default, the CPUs available)")
	flag.BoolVar(&o.edgeLimits, "key-limits", true, "give the key four limits and a model filter (the edge checks them all on every request)")
	flag.BoolVar(&o.skipOpen, "skip-open", false, "skip the open-loop steps")
	flag.BoolVar(&o.skipClosed, "skip-closed", false, "skip the closed-loop search for the maximum throughput")
	flag.DurationVar(&o.maxTotalTime, "max-total", 30*time.Minute, "stop everything after this long, whatever is left")
	flag.BoolVar(&o.proxy, "proxy", true, "also measure a minimal pass-through proxy (no checks, no metering) in front of the mock: what any proxy hop costs here")
	flag.BoolVar(&o.pin, "pin", false, "with taskset, pin the edge (and the minimal proxy) to the last CPU and the generator, the mock and NATS to the others (not with -inprocess)")
	flag.StringVar(&o.edgeProfile, "edge-cpuprofile", "", "write a CPU profile of the edge child process to this file (not with -inprocess)")
	flag.Parse()

	if *child != "" {
		if err := runChild(*child, *childArg); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest child:", err)
			os.Exit(1)
		}
		return
	}
	var err error
	if o.rates, err = ints(rates); err != nil {
		fail("-rates: %v", err)
	}
	if o.concurrency, err = ints(conc); err != nil {
		fail("-concurrency: %v", err)
	}
	if !o.plain && !o.stream {
		fail("nothing to do: -plain=false and -stream=false")
	}
	if o.inProcess && (o.pin || o.edgeProfile != "") {
		fail("-pin and -edge-cpuprofile need the child processes: drop -inprocess")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.maxTotalTime)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadtest: "+format+"\n", args...)
	os.Exit(1)
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive whole number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// ---- the system under test ----------------------------------------------

// system is NATS, the mock and the edge, wherever they run.
type system struct {
	natsURL, mockURL, edgeURL, proxyURL string
	secret                              string
	procs                               map[string]*child // by role; empty in process
	stop                                func()
}

const pepperLen = 32

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
	fmt.Printf("Requests: chat, max_tokens %d; streams cut into %d pieces (X-Mock-Chunks), include_usage %v; mock delay %v, between stream events %v; key with limits: %v.\n\n",
		o.maxTokens, o.chunks, o.includeUsage, o.mockDelay, o.chunkDelay, o.edgeLimits)

	modes := []bool{}
	if o.plain {
		modes = append(modes, false)
	}
	if o.stream {
		modes = append(modes, true)
	}
	gen := newGenerator(o, sys)
	targets := []string{"direct", "edge"}
	if o.proxy {
		targets = []string{"direct", "proxy", "edge"}
	}
	if !o.skipOpen {
		for _, streamed := range modes {
			var rows []*result
			for _, rate := range o.rates {
				for _, target := range targets {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					logf("open loop: %s %s at %d req/s for %v (+%v warm-up)", modeName(streamed), target, rate, o.duration, o.warmup)
					res := gen.openLoop(ctx, target, streamed, rate)
					logf("  %s", res.summary())
					rows = append(rows, res)
				}
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
		mockURL, stopMock, err := startMock()
		if err != nil {
			return nil, err
		}
		cleanups = append(cleanups, stopMock)
		proxyURL, stopProxy, err := startProxy(mockURL)
		if err != nil {
			return nil, err
		}
		cleanups = append(cleanups, stopProxy)
		sys.proxyURL = proxyURL
		secret, err := seed(ctx, natsURL, pep, mockURL, o.edgeLimits)
		if err != nil {
			return nil, err
		}
		edgeURL, stopEdge, err := startEdge(natsURL, pep)
		if err != nil {
			return nil, err
		}
		cleanups = append(cleanups, stopEdge)
		sys.natsURL, sys.mockURL, sys.edgeURL, sys.secret = natsURL, mockURL, edgeURL, secret
		ok = true
		return sys, nil
	}
	env := []string{}
	if o.edgeProfile != "" {
		env = append(env, "TOLLGATE_LOADTEST_EDGE_CPUPROFILE="+o.edgeProfile)
	}
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
		case "proxy":
			arg = sys.mockURL
		case "edge":
			secret, err := seed(ctx, sys.natsURL, pep, sys.mockURL, o.edgeLimits)
			if err != nil {
				return nil, err
			}
			sys.secret = secret
			arg = sys.natsURL
		}
		c, err := startChild(ctx, role, arg, append(env, "TOLLGATE_PEPPER="+pep), lifetime, cpus[role])
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

func startMock() (string, func(), error) {
	mock, err := mockllm.New(mockllm.Options{})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: mock, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// startProxy serves a minimal pass-through proxy to upstream: it reads the
// request, sends it on with a few headers, and copies the answer back (a
// stream read by read, each flushed), as the edge does, but checks, meters
// and publishes nothing. It is the floor under what the edge can add: the
// cost of a second HTTP hop on this machine.
func startProxy(upstream string) (string, func(), error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
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
		res, err := client.Do(req)
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
		for {
			n, rerr := res.Body.Read(*bp)
			if n > 0 {
				if _, err := w.Write((*bp)[:n]); err != nil {
					return
				}
				rc.Flush() //nolint:errcheck // as above
			}
			if rerr != nil {
				return
			}
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

func startEdge(natsURL, pepper string) (string, func(), error) {
	dir, err := os.MkdirTemp("", "tollgate-loadtest-spool-")
	if err != nil {
		return "", nil, err
	}
	cfg := edge.DefaultConfig()
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
	if err := store.PutService(ctx, &eventsv1.Service{Id: "loadtest/mock", Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: mockURL}); err != nil {
		return "", err
	}
	for _, m := range []*eventsv1.Model{
		{Name: "gpt-4o-mini", Service: "loadtest/mock", InputPricePerMillion: 15e7, OutputPricePerMillion: 6e8, MaxOutputTokens: 16384},
		{Name: "gpt-4o", Service: "loadtest/mock", InputPricePerMillion: 25e8, OutputPricePerMillion: 1e10, MaxOutputTokens: 16384},
	} {
		if err := store.PutModel(ctx, m); err != nil {
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

// ---- child processes ----------------------------------------------------

type child struct {
	role  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	url   string
	done  chan struct{}
}

// startChild re-executes this program as a child of the given role and
// waits for its "READY <url>" line. The child exits when its stdin closes
// (this process ended, whichever way) or after lifetime.
func startChild(ctx context.Context, role, arg string, env []string, lifetime time.Duration, cpus string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{exe, "-child", role, "-child-arg", arg, "-max-total", lifetime.String()}
	if cpus != "" {
		args = append([]string{"taskset", "-c", cpus}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{role: role, cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() { cmd.Wait(); close(c.done) }() //nolint:errcheck // the exit is seen through done
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if url, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
				ready <- url
			}
		}
	}()
	select {
	case c.url = <-ready:
		return c, nil
	case <-c.done:
		return nil, fmt.Errorf("child %s exited before it was ready", role)
	case <-time.After(60 * time.Second):
		c.stop()
		return nil, fmt.Errorf("child %s not ready after 60 s", role)
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	}
}

// stop asks the child to exit (stdin closed), then kills it if it does not.
func (c *child) stop() {
	c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(45 * time.Second):
		c.cmd.Process.Kill() //nolint:errcheck // it may have just exited
		<-c.done
	}
}

func runChild(role, arg string) error {
	var url string
	var stop func()
	var err error
	switch role {
	case "nats":
		url, stop, err = startNATS()
	case "mock":
		url, stop, err = startMock()
	case "proxy":
		url, stop, err = startProxy(arg)
	case "edge":
		if path := os.Getenv("TOLLGATE_LOADTEST_EDGE_CPUPROFILE"); path != "" {
			f, err := os.Create(path)
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
		url, stop, err = startEdge(arg, os.Getenv("TOLLGATE_PEPPER"))
	default:
		return fmt.Errorf("unknown child role %q", role)
	}
	if err != nil {
		return err
	}
	fmt.Printf("READY %s\n", url)
	lifetime, _ := time.ParseDuration(flag.Lookup("max-total").Value.String())
	eof := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(eof) }() //nolint:errcheck // EOF or error: the parent is gone
	select {
	case <-eof:
	case <-time.After(lifetime):
	}
	stop()
	return nil
}

// ---- CPU accounting -----------------------------------------------------

// cpuTimes is the CPU time (user and system) used so far by each process.
type cpuTimes map[string]time.Duration

func (s *system) cpu() cpuTimes {
	t := cpuTimes{"generator": selfCPU()}
	for role, c := range s.procs {
		if d, ok := procCPU(c.cmd.Process.Pid); ok {
			t[role] = d
		}
	}
	return t
}

func (a cpuTimes) sub(b cpuTimes) cpuTimes {
	out := cpuTimes{}
	for k, v := range a {
		out[k] = v - b[k]
	}
	return out
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU reads utime and stime of a process (all its threads) from
// /proc/<pid>/stat, in clock ticks of 10 ms (USER_HZ is 100 on Linux).
func procCPU(pid int) (time.Duration, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 { // fields 3..15 of stat(5): utime is 14, stime 15
		return 0, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+s) * 10 * time.Millisecond, true
}

func machine() string {
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), GOMAXPROCS %d, %s %s/%s", runtime.NumCPU(), model, runtime.GOMAXPROCS(0),
		runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// ---- load generation ----------------------------------------------------

type generator struct {
	o       options
	sys     *system
	clients map[string]*http.Client
	bodies  map[bool][]byte
}

func newGenerator(o options, sys *system) *generator {
	g := &generator{o: o, sys: sys, clients: map[string]*http.Client{}, bodies: map[bool][]byte{}}
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
	return g
}

var readBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// sample is one request's outcome. Times are from its scheduled send time.
type sample struct {
	late      time.Duration // actual send - scheduled
	firstByte time.Duration // first byte of the body (streams: the first event)
	total     time.Duration // last byte
	err       error
}

// do sends one request and reads the whole answer.
func (g *generator) do(ctx context.Context, target string, streamed bool, scheduled time.Time) sample {
	var s sample
	url := map[string]string{"direct": g.sys.mockURL, "proxy": g.sys.proxyURL, "edge": g.sys.edgeURL}[target]
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(g.bodies[streamed]))
	if err != nil {
		s.err = err
		return s
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+g.sys.secret) // the mock ignores it
	req.Header.Set("User-Agent", "tollgate-loadtest")
	if streamed {
		req.Header.Set(mockllm.HeaderChunks, strconv.Itoa(g.o.chunks))
	}
	if g.o.mockDelay > 0 {
		req.Header.Set(mockllm.HeaderDelayMs, strconv.FormatInt(g.o.mockDelay.Milliseconds(), 10))
	}
	if streamed && g.o.chunkDelay > 0 {
		req.Header.Set(mockllm.HeaderChunkDelayMs, strconv.FormatInt(g.o.chunkDelay.Milliseconds(), 10))
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
	sorted   map[string][]time.Duration
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

// openLoop sends at rate for the warm-up and the duration, each request on
// its schedule, and keeps the samples of the measured part.
func (g *generator) openLoop(ctx context.Context, target string, streamed bool, rate int) *result {
	warm := int(float64(rate) * g.o.warmup.Seconds())
	total := warm + int(float64(rate)*g.o.duration.Seconds())
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
			measureStart, cpu0 = scheduled, g.sys.cpu()
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
		go func() {
			defer wg.Done()
			defer inflight.Add(-1)
			s := g.do(ctx, target, streamed, scheduled)
			if measured {
				mu.Lock()
				res.samples = append(res.samples, s)
				res.lastDone = time.Now()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.cpu = g.sys.cpu().sub(cpu0)
	// The achieved rate is the answers over the time from the first
	// measured send to the last answer: below the target when the system
	// falls behind.
	res.elapsed = max(g.o.duration, res.lastDone.Sub(measureStart))
	return res
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
			for ctx.Err() == nil {
				now := time.Now()
				if !now.Before(end) {
					break
				}
				s := g.do(ctx, target, streamed, now)
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

// ---- reports --------------------------------------------------------------

type closedRow struct {
	target  string
	workers int
	res     *result
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64)
}

func signedMS(d time.Duration) string {
	s := ms(d)
	if d >= 0 {
		s = "+" + s
	}
	return s
}

// perReq is a process's CPU time per measured request, in microseconds.
func perReq(r *result, role string) string {
	d, ok := r.cpu[role]
	n := float64(len(r.samples))
	if !ok || n <= 0 {
		return "–"
	}
	return strconv.FormatFloat(float64(d.Microseconds())/n, 'f', 0, 64)
}

var targetNames = map[string]string{"direct": "mock directly", "proxy": "minimal proxy", "edge": "**edge**"}

func printOpen(streamed bool, rows []*result, sys *system) {
	what := "plain chat (buffered answer)"
	if streamed {
		what = "streamed chat (SSE)"
	}
	fmt.Printf("### Open loop: %s\n\n", what)
	fmt.Println("Latency in ms from each request's scheduled send time to the last byte of its answer; \"added\" is the")
	fmt.Println("percentile minus the same percentile of the mock called directly in the same step.")
	fmt.Println()
	fmt.Println("| rate (req/s) | target | achieved | p50 | p90 | p99 | max | added p50 | added p99 | errors |")
	fmt.Println("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	direct := map[int]*result{}
	for _, r := range rows {
		if r.target == "direct" {
			direct[r.perSec] = r
		}
	}
	for _, r := range rows {
		added50, added99 := "", ""
		if d := direct[r.perSec]; d != nil && r.target != "direct" {
			added50, added99 = signedMS(r.q("total", .5)-d.q("total", .5)), signedMS(r.q("total", .99)-d.q("total", .99))
			if r.target == "edge" {
				added50, added99 = "**"+added50+"**", "**"+added99+"**"
			}
		}
		fmt.Printf("| %d | %s | %.0f | %s | %s | %s | %s | %s | %s | %d |\n", r.perSec, targetNames[r.target], r.rate(),
			ms(r.q("total", .5)), ms(r.q("total", .9)), ms(r.q("total", .99)), ms(r.q("total", 1)), added50, added99, r.errors())
	}
	fmt.Println()
	fmt.Println("The generator's own lateness (actual send − scheduled, ms) and CPU time per request (µs) of each process:")
	fmt.Println()
	header := "| rate | target | late p50 | late p99 |"
	sep := "|---:|---|---:|---:|"
	if streamed {
		header += " first byte p50 | first byte p99 |"
		sep += "---:|---:|"
	}
	roles := []string{"generator"}
	if len(sys.procs) > 0 {
		roles = append(roles, "mock", "proxy", "edge", "nats")
	}
	for _, role := range roles {
		header += " CPU " + role + " |"
		sep += "---:|"
	}
	fmt.Println(header)
	fmt.Println(sep)
	for _, r := range rows {
		line := fmt.Sprintf("| %d | %s | %s | %s |", r.perSec, r.target, ms(r.q("late", .5)), ms(r.q("late", .99)))
		if streamed {
			line += fmt.Sprintf(" %s | %s |", ms(r.q("first", .5)), ms(r.q("first", .99)))
		}
		for _, role := range roles {
			line += " " + perReq(r, role) + " |"
		}
		fmt.Println(line)
	}
	fmt.Println()
	for _, r := range rows {
		if e := r.firstError(); e != "" {
			fmt.Printf("Errors at %d req/s (%s): %d; first: %s\n", r.perSec, r.target, r.errors(), e)
		}
	}
	fmt.Println()
}

func printClosed(streamed bool, rows []closedRow, targets []string, sys *system) {
	fmt.Printf("### Closed loop: %s, workers sending back to back\n\n", map[bool]string{false: "plain chat", true: "streamed chat"}[streamed])
	fmt.Println("| target | workers | req/s | p50 ms | p99 ms | errors | CPU µs/req generator | mock | proxy | edge | nats |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	best := map[string]closedRow{}
	for _, r := range rows {
		fmt.Printf("| %s | %d | %.0f | %s | %s | %d | %s | %s | %s | %s | %s |\n", targetNames[r.target], r.workers, r.res.rate(),
			ms(r.res.q("total", .5)), ms(r.res.q("total", .99)), r.res.errors(),
			perReq(r.res, "generator"), perReq(r.res, "mock"), perReq(r.res, "proxy"), perReq(r.res, "edge"), perReq(r.res, "nats"))
		if r.res.rate() > best[r.target].res.rateOr0() {
			best[r.target] = r
		}
	}
	fmt.Println()
	for _, target := range targets {
		b, ok := best[target]
		if !ok {
			continue
		}
		fmt.Printf("Maximum, %s: **%.0f req/s** with %d workers (p50 %s ms, p99 %s ms).", targetNames[target], b.res.rate(), b.workers,
			ms(b.res.q("total", .5)), ms(b.res.q("total", .99)))
		if target == "edge" && len(sys.procs) > 0 {
			if d, ok := b.res.cpu["edge"]; ok && len(b.res.samples) > 0 {
				if per := d / time.Duration(len(b.res.samples)); per > 0 {
					fmt.Printf(" The edge process used %v of CPU per request there: alone on %d CPUs, at that cost, it would serve about %.0f req/s.",
						per.Round(time.Microsecond), runtime.NumCPU(), float64(runtime.NumCPU())*float64(time.Second)/float64(per))
				}
			}
		}
		fmt.Println()
	}
	fmt.Println()
}

func (r *result) rateOr0() float64 {
	if r == nil {
		return 0
	}
	return r.rate()
}
