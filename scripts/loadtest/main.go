// Command loadtest measures the latency the edge adds and its throughput on
// this machine. It starts, on loopback only, an embedded NATS, the mock
// upstream (pkg/mockllm) and an edge with one key (four limits and a model
// filter, as a real key) and a catalog that points at the mock; then, for
// plain and streamed chat requests:
//
//  1. open loop: at each fixed rate, for a fixed time, requests go out on a
//     schedule whatever the answers do, to the mock directly, through a
//     minimal pass-through proxy (what a bare second HTTP hop costs here;
//     -proxy=false skips it) and through the edge, in turn, in several
//     rounds (-rounds) so that the machine's slow spells fall on all three
//     alike; latency is measured from each request's scheduled send time
//     (no coordinated omission) to the last byte of its answer;
//  2. closed loop: N workers send back to back, N doubling until the
//     throughput stops growing: the most each target serves here.
//
// It prints markdown tables. By default NATS, the mock, the proxy and the
// edge each run in a child process of their own (this program re-executed),
// so that the load generator's garbage and scheduling stay out of the edge's
// process and each process's CPU time can be read; -inprocess runs them all
// here.
//
// Everything shares the machine's CPUs, so the generator and the mock, which
// stand in for clients and a provider on other machines, are kept lean: the
// generator writes pre-built requests straight onto keep-alive connections
// (rawclient.go; -client net/http for net/http's client, which costs twice
// the CPU) and the mock is served by pkg/h1 (-mock-server net/http).
//
//	go run ./scripts/loadtest                      # the whole run, about 10 minutes
//	go run ./scripts/loadtest -rates 2000 -duration 20s -stream=false
//
// Everything stops by itself: requests are bounded in number and time, and
// the children exit when this process does.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tollgate/tollgate/pkg/sysmon"
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
	hopProcs     int
	natsProcs    int
	sysmonAwake  bool
	standInsWake bool
	natsAwake    bool
	edgeEnv      []string
	edgeLimits   bool
	skipOpen     bool
	skipClosed   bool
	maxTotalTime time.Duration
	edgeProfile  string
	mockProfile  string
	natsProfile  string
	pin          bool
	proxy        bool
	proxyKind    string
	client       string
	mockServer   string
	rounds       int
}

func main() {
	var o options
	var rates, conc string
	child := flag.String("child", "", "internal: run as the nats, mock, proxy or edge child process")
	childArg := flag.String("child-arg", "", "internal: the child's argument")
	flag.StringVar(&rates, "rates", "500,1000,2000,4000", "open-loop rates in requests per second, comma-separated")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per open-loop step")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured time at the step's rate before each open-loop step (divided among the rounds, at least 0.5 s each)")
	flag.IntVar(&o.rounds, "rounds", 4, "open loop: measure each rate in this many rounds that take the targets in turn (the duration divided among them), so that the machine's slow spells fall on all targets alike")
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
	flag.IntVar(&o.hopProcs, "hop-gomaxprocs", 0, "GOMAXPROCS of the edge and the minimal proxy only (0: as the other children); wins over -child-gomaxprocs for them")
	flag.IntVar(&o.natsProcs, "nats-gomaxprocs", 0, "GOMAXPROCS of the NATS child only (0: as the other children): how much of the shared CPUs the bus may take at once")
	flag.BoolVar(&o.sysmonAwake, "sysmon-awake", true, "the edge and the minimal proxy start again with GODEBUG=schedtrace=2147483647, which keeps Go's monitor thread from deep sleep (the edge's default, --sysmon-awake; package sysmon); false: Go's default for both (not with -inprocess: there every part keeps Go's default)")
	flag.BoolVar(&o.standInsWake, "stand-ins-awake", true, "the load generator and the mock, which stand in for machines other than the edge's, run with sysmon kept awake as well, so that they take less of the shared CPUs (NATS, a part of the system, keeps Go's default as nats-server ships); with -inprocess it is the one process's setting")
	flag.BoolVar(&o.natsAwake, "nats-awake", false, "NATS runs with sysmon kept awake too (an operator's choice for nats-server, not ours: off by default)")
	flag.BoolVar(&o.edgeLimits, "key-limits", true, "give the key four limits and a model filter (the edge checks them all on every request)")
	flag.BoolVar(&o.skipOpen, "skip-open", false, "skip the open-loop steps")
	flag.BoolVar(&o.skipClosed, "skip-closed", false, "skip the closed-loop search for the maximum throughput")
	flag.DurationVar(&o.maxTotalTime, "max-total", 30*time.Minute, "stop everything after this long, whatever is left")
	flag.BoolVar(&o.proxy, "proxy", true, "also measure a minimal pass-through proxy (no checks, no metering) in front of the mock: what any proxy hop costs here")
	flag.StringVar(&o.proxyKind, "proxy-kind", "h1", "the minimal proxy: net/http (net/http's server and Transport), h1 (the edge's own HTTP/1.1 server and client: what the edge adds beyond its HTTP code), or relay (a raw TCP relay, bytes copied with no HTTP: what a second hop costs here before any HTTP handling)")
	flag.StringVar(&o.client, "client", "raw", "the load generator's HTTP client: raw (pre-built requests written straight onto keep-alive connections, one reader goroutine per connection: the least CPU taken from the processes measured) or net/http (net/http's Client, a goroutine per request)")
	flag.StringVar(&o.mockServer, "mock-server", "h1", "the mock upstream's HTTP server: h1 (pkg/h1's, the cheaper) or net/http")
	flag.BoolVar(&o.pin, "pin", false, "with taskset, pin the edge (and the minimal proxy) to the last CPU and the generator, the mock and NATS to the others (not with -inprocess)")
	flag.StringVar(&o.edgeProfile, "edge-cpuprofile", "", "write a CPU profile of the edge child process to this file (not with -inprocess)")
	flag.StringVar(&o.mockProfile, "mock-cpuprofile", "", "write a CPU profile of the mock child process to this file (not with -inprocess)")
	flag.StringVar(&o.natsProfile, "nats-cpuprofile", "", "write a CPU profile of the NATS child process to this file (not with -inprocess)")
	genProfile := flag.String("cpuprofile", "", "write a CPU profile of this process (the load generator) to this file")
	edgeEnv := flag.String("edge-env", "", "environment variables for the edge child only, comma-separated KEY=VALUE (e.g. GOGC=400)")
	flag.Parse()
	for _, kv := range strings.Split(*edgeEnv, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if !strings.Contains(kv, "=") {
			fail("-edge-env: %q is not KEY=VALUE", kv)
		}
		o.edgeEnv = append(o.edgeEnv, kv)
	}

	if *child == "" && o.standInsWake {
		// The generator starts over with sysmon awake, before anything
		// else; the mock inherits the setting (startChild).
		if err := sysmon.Reexec(); err != nil {
			fail("-stand-ins-awake: %v", err)
		}
	}
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
	switch o.proxyKind {
	case "net/http":
		targetNames["proxy"] = "minimal net/http proxy"
	case "h1":
		targetNames["proxy"] = "minimal h1 proxy"
	case "relay":
		targetNames["proxy"] = "raw TCP relay"
	default:
		fail("-proxy-kind: %q is not net/http, h1 or relay", o.proxyKind)
	}
	if o.client != "raw" && o.client != "net/http" {
		fail("-client: %q is not raw or net/http", o.client)
	}
	if o.mockServer != "h1" && o.mockServer != "net/http" {
		fail("-mock-server: %q is not h1 or net/http", o.mockServer)
	}
	if !o.plain && !o.stream {
		fail("nothing to do: -plain=false and -stream=false")
	}
	if o.inProcess && (o.pin || o.edgeProfile != "" || o.mockProfile != "" || o.natsProfile != "" || o.natsProcs > 0) {
		fail("-pin, -edge-cpuprofile, -mock-cpuprofile, -nats-cpuprofile and -nats-gomaxprocs need the child processes: drop -inprocess")
	}
	if *genProfile != "" {
		f, err := os.Create(*genProfile)
		if err != nil {
			fail("-cpuprofile: %v", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail("-cpuprofile: %v", err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
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
