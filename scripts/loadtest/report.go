package main

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

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

// callsPerReq is a process's read and write system calls per measured
// request.
func callsPerReq(r *result, role string) string {
	c, ok := r.calls[role]
	n := float64(len(r.samples))
	if !ok || n <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f / %.1f", float64(c[0])/n, float64(c[1])/n)
}

// processes are the load test's processes, as its tables name them: this
// one (the generator), then its children.
var processes = []string{"generator", "mock", "proxy", "edge", "nats"}

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
	printBeyondProxy(rows)
	printRounds(rows, direct)
	fmt.Println("The generator's own lateness (actual send − scheduled, ms) and CPU time per request (µs) of each process")
	fmt.Println("(and, as steal, of the machine's CPUs that the hypervisor gave to others):")
	fmt.Println()
	header := "| rate | target | late p50 | late p99 |"
	sep := "|---:|---|---:|---:|"
	if streamed {
		header += " first byte p50 | first byte p99 |"
		sep += "---:|---:|"
	}
	roles := []string{"generator"}
	if len(sys.procs) > 0 {
		roles = slices.Clone(processes) // steal may be appended
	}
	if sys.stealKnown {
		// Time the hypervisor ran something else while this VM wanted
		// its CPUs: a step with much of it was measured on a slower
		// machine.
		roles = append(roles, "steal")
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
	if len(sys.procs) > 0 {
		printCalls(rows)
	}
	for _, r := range rows {
		if e := r.firstError(); e != "" {
			fmt.Printf("Errors at %d req/s (%s): %d; first: %s\n", r.perSec, r.target, r.errors(), e)
		}
	}
	fmt.Println()
}

// printCalls shows each process's read and write system calls per request,
// counted by the kernel (/proc/<pid>/io) without slowing anything.
func printCalls(rows []*result) {
	roles := processes
	fmt.Println("Read and write system calls per request of each process (reads / writes; read, readv, write and writev, from")
	fmt.Println("/proc/<pid>/io; peeks, epoll and splice are not counted):")
	fmt.Println()
	fmt.Println("| rate | target | " + strings.Join(roles, " | ") + " |")
	fmt.Println("|---:|---|" + strings.Repeat("---:|", len(roles)))
	for _, r := range rows {
		line := fmt.Sprintf("| %d | %s |", r.perSec, r.target)
		for _, role := range roles {
			line += " " + callsPerReq(r, role) + " |"
		}
		fmt.Println(line)
	}
	fmt.Println()
}

// printBeyondProxy shows what the edge added beyond the minimal proxy in
// the same step: with -proxy-kind h1 (the same HTTP code as the edge), the
// cost of the edge's own work. p90 is there because it moves with the
// edge's work (and its bus's) run after run, where p99 moves as much with
// the machine's disturbances.
func printBeyondProxy(rows []*result) {
	proxy := map[int]*result{}
	for _, r := range rows {
		if r.target == "proxy" {
			proxy[r.perSec] = r
		}
	}
	printed := false
	for _, r := range rows {
		p := proxy[r.perSec]
		if p == nil || r.target != "edge" {
			continue
		}
		if !printed {
			fmt.Printf("The edge beyond the %s in the same step, p50 / p90 / p99 in ms:\n\n", targetNames["proxy"])
			printed = true
		}
		fmt.Printf("- %d req/s: %s / %s / %s\n", r.perSec, signedMS(r.q("total", .5)-p.q("total", .5)),
			signedMS(r.q("total", .9)-p.q("total", .9)), signedMS(r.q("total", .99)-p.q("total", .99)))
	}
	if printed {
		fmt.Println()
	}
}

// printRounds shows, when a step was measured in rounds, what each round
// alone added: how much the pooled numbers above can be trusted. The
// median of the rounds' added p99 is not moved by one disturbed round,
// which moves the pooled p99.
func printRounds(rows []*result, direct map[int]*result) {
	printed := false
	for _, r := range rows {
		d := direct[r.perSec]
		if d == nil || r.target == "direct" || len(r.rounds) < 2 || len(d.rounds) != len(r.rounds) {
			continue
		}
		if !printed {
			fmt.Println("Added latency in each round alone (the round minus the mock's round just before it), p50 / p99 in ms:")
			fmt.Println()
			printed = true
		}
		line := fmt.Sprintf("- %d req/s, %s:", r.perSec, targetNames[r.target])
		added99 := make([]time.Duration, len(r.rounds))
		for i, x := range r.rounds {
			y := d.rounds[i]
			added99[i] = x.q("total", .99) - y.q("total", .99)
			line += fmt.Sprintf(" %s / %s;", signedMS(x.q("total", .5)-y.q("total", .5)), signedMS(added99[i]))
		}
		fmt.Printf("%s (median p99 %s)\n", strings.TrimSuffix(line, ";"), signedMS(median(added99)))
	}
	if printed {
		fmt.Println()
	}
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

// median returns the middle value of ds (the mean of the two middle ones
// for an even count), or 0 for none. It sorts ds.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	n := len(ds)
	if n%2 == 1 {
		return ds[n/2]
	}
	return (ds[n/2-1] + ds[n/2]) / 2
}
