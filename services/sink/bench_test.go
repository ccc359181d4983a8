package sink

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/tollgate/tollgate/pkg/testenv"
)

// benchBase is an ordinary hour: the events of a batch fall on one day.
var benchBase = time.Date(2025, 5, 14, 10, 0, 0, 0, time.UTC)

// BenchmarkSinkThroughput measures events per second from the USAGE stream
// into ClickHouse (usage_events and the hourly rollup), the
// batch size of the default configuration, with the stream filled first so
// the sink is never waiting for events. NATS runs in a process of its own,
// as in production (TOLLGATE_BENCH_NATS=embedded runs it in this one);
// TOLLGATE_BENCH_BATCH changes the batch size, TOLLGATE_BENCH_GC_PERCENT the
// sink's garbage collector target (Config.GCPercent), TOLLGATE_BENCH_CPUPROFILE
// writes a CPU profile of the sink's part. See BENCHMARKS.md.
//
//	go test -run '^$' -bench SinkThroughput -benchtime 1x ./services/sink/
func BenchmarkSinkThroughput(b *testing.B) {
	const events = 1_000_000
	for b.Loop() {
		nc := natsForBench(b)
		addr, db := testenv.ClickHouse(b)
		dsn := fmt.Sprintf("clickhouse://%s/%s", addr, db)
		f := newFeed(b, nc)
		ctx := ctxFor(b, 10*time.Minute)
		for i := 0; i < events; i += 10_000 {
			if err := f.publish(ctx, f.make(fmt.Sprintf("edge-%d", i%7), 10_000, benchBase), true); err != nil {
				b.Fatal(err)
			}
		}
		cfg := testConfig(nc.ConnectedUrl(), dsn)
		cfg.BatchSize = DefaultConfig().BatchSize
		if v, err := strconv.Atoi(os.Getenv("TOLLGATE_BENCH_BATCH")); err == nil && v > 0 {
			cfg.BatchSize = v
		}
		cfg.FlushInterval = DefaultConfig().FlushInterval
		cfg.GCPercent = DefaultConfig().GCPercent
		if v, err := strconv.Atoi(os.Getenv("TOLLGATE_BENCH_GC_PERCENT")); err == nil && v > 0 {
			cfg.GCPercent = v
		}
		conn := openCH(b, dsn)
		s := startSink(b, cfg) // connects and migrates before it returns
		// This process is the sink's, as `tollgate sink` sets it up
		// (TuneGC; NATS and ClickHouse are processes of their own).
		if prev, ok := TuneGC(cfg.GCPercent); ok {
			defer debug.SetGCPercent(prev)
		}
		runtime.GC()
		clearPeakRSS()
		stopProfile := profileFrom(b, os.Getenv("TOLLGATE_BENCH_CPUPROFILE"))
		machine0, self0 := machineCPU(), selfCPU()
		nats0, ch0 := natsCPU(), clickhouseCPU()
		began := time.Now()
		for s.srv.Sink().Stats().Events.Load() < events {
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(began)
		machine, self := machineCPU()-machine0, selfCPU()-self0
		natsUsed, chUsed := natsCPU()-nats0, clickhouseCPU()-ch0
		stopProfile()
		if err := s.stop(); err != nil {
			b.Fatal(err)
		}
		got, _, err := storedTotals(context.Background(), conn)
		if err != nil || got != f.wantTotals() {
			b.Fatalf("stored %v (%v), want %v", got, err, f.wantTotals())
		}
		b.ReportMetric(float64(events)/took.Seconds(), "events/s")
		// CPU seconds per million events: the whole machine's (ClickHouse
		// and NATS included) and this process's (the sink).
		b.ReportMetric(machine.Seconds()*1e6/events, "machine-cpu-s/M")
		b.ReportMetric(self.Seconds()*1e6/events, "sink-cpu-s/M")
		// NATS's (0 when it runs in this process) and ClickHouse's.
		b.ReportMetric(natsUsed.Seconds()*1e6/events, "nats-cpu-s/M")
		b.ReportMetric(chUsed.Seconds()*1e6/events, "clickhouse-cpu-s/M")
		b.ReportMetric(float64(s.srv.Sink().Stats().Batches.Load()), "batches")
		b.ReportMetric(float64(peakRSS())/(1<<20), "peak-rss-MB")
	}
}

// profileFrom starts a CPU profile into path (none when path is empty) and
// returns what stops it: unlike -cpuprofile, it leaves out filling the stream.
func profileFrom(b *testing.B, path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// natsForBench is the benchmark's NATS server: in a process of its own
// unless TOLLGATE_BENCH_NATS=embedded.
func natsForBench(b *testing.B) *nats.Conn {
	if os.Getenv("TOLLGATE_BENCH_NATS") == "embedded" {
		_, nc := testenv.NATS(b)
		return nc
	}
	return testenv.NATSProcess(b)
}

// machineCPU is the CPU time all processes have used since boot
// (/proc/stat: user, nice, system, irq, softirq, steal).
func machineCPU() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		if i < len(f) {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += v
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// natsCPU is the CPU time the NATS server has used when it runs in a process
// of its own: a child of this one that is not ClickHouse.
func natsCPU() time.Duration {
	ppid := strconv.Itoa(os.Getpid())
	return procCPU(func(stat []string, cmdline string) bool {
		return stat[1] == ppid && !strings.Contains(cmdline, "clickhouse")
	})
}

// clickhouseCPU is the CPU time the ClickHouse servers have used.
func clickhouseCPU() time.Duration {
	return procCPU(func(_ []string, cmdline string) bool { return strings.Contains(cmdline, "clickhouse") })
}

// procCPU sums utime and stime of the processes that match, from
// /proc/<pid>/stat; match gets the fields after the command's name (state,
// ppid, ...) and the command line.
func procCPU(match func(stat []string, cmdline string) bool) time.Duration {
	dirs, _ := os.ReadDir("/proc")
	var ticks int64
	for _, d := range dirs {
		pid := d.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		data, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			continue
		}
		// The command's name is in parentheses and may hold spaces.
		i := strings.LastIndexByte(string(data), ')')
		if i < 0 {
			continue
		}
		stat := strings.Fields(string(data[i+1:]))
		cmdline, _ := os.ReadFile("/proc/" + pid + "/cmdline")
		if len(stat) < 13 || !match(stat, string(cmdline)) {
			continue
		}
		utime, _ := strconv.ParseInt(stat[11], 10, 64)
		stime, _ := strconv.ParseInt(stat[12], 10, 64)
		ticks += utime + stime
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// clearPeakRSS resets this process's peak resident size (Linux 4.0 on).
func clearPeakRSS() {
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// peakRSS is this process's peak resident size in bytes since the last
// clearPeakRSS (VmHWM).
func peakRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
