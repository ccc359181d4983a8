// Package sysmon keeps the Go runtime's monitor thread (sysmon) from its
// deep sleep in a server process that is idle for short spells many times a
// second, as the edge is.
//
// sysmon watches the scheduler from a thread of its own. When it finds every
// P idle it sleeps on a note (proc.go, func sysmon) and sets
// sched.sysmonwait; from then on the next system call of any goroutine
// wakes it (entersyscall → entersyscallWakeSysmon: the scheduler lock and a
// futex wake-up), and once woken it polls every 20 µs for up to a
// millisecond, then finds the Ps idle again and goes back to sleep. A proxy
// at a few thousand requests a second on two CPUs goes idle between almost
// every request and every chunk of a stream, so it pays for that wake-up
// again and again: 43 to 63 µs of CPU per streamed request at the edge
// (BENCHMARKS.md, "Go's monitor thread").
//
// The runtime offers one way to keep sysmon out of that sleep: it never
// deep-sleeps while GODEBUG sets schedtrace, because it must print the
// scheduler's state on time. Reexec sets schedtrace to its largest value,
// 2,147,483,647 ms (24.8 days): sysmon then keeps its ordinary polling,
// every 20 µs to 10 ms. It prints the scheduler's state only on a machine
// that has been up for longer than 24.8 days (the runtime's clock starts at
// boot): one line to standard error at start and one every 24.8 days. GODEBUG
// is read once, when the process starts, so setting it means starting the
// program again: Reexec replaces the process with itself (same pid,
// arguments and environment, plus the setting).
//
// This leans on a documented side effect, not on a tuning knob: the comment
// in proc.go says why sysmon stays awake with schedtrace. If a later Go
// changes that, the edge's benchmark shows it; nothing else breaks.
package sysmon

import (
	"slices"
	"strconv"
	"strings"
)

// Setting is the GODEBUG setting that keeps sysmon awake.
const Setting = "schedtrace=2147483647"

// Env returns env with GODEBUG extended by Setting, and whether it changed
// anything. A GODEBUG that sets schedtrace already, to any value, is left
// as it is: the operator's choice wins (schedtrace=0 turns this off). Like
// the runtime, it reads the first GODEBUG of env and drops the others.
func Env(env []string) (out []string, changed bool) {
	godebug := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			godebug = v
			break
		}
	}
	if Decided(godebug) {
		return env, false
	}
	out = make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			out = append(out, kv)
		}
	}
	if godebug != "" {
		godebug += ","
	}
	return append(out, "GODEBUG="+godebug+Setting), true
}

// Strip returns env with the item Env adds taken out of GODEBUG again (and
// GODEBUG dropped if nothing else is left in it): the environment for a
// child process that should run with Go's default.
func Strip(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			items := slices.DeleteFunc(strings.Split(v, ","), func(item string) bool { return item == Setting })
			if len(items) == 0 || len(items) == 1 && items[0] == "" {
				continue
			}
			kv = "GODEBUG=" + strings.Join(items, ",")
		}
		out = append(out, kv)
	}
	return out
}

// schedtrace returns the value GODEBUG gives schedtrace, and whether it
// names schedtrace at all.
func schedtrace(godebug string) (value string, set bool) {
	for item := range strings.SplitSeq(godebug, ",") {
		// Exactly as the runtime reads it: no spaces, the last one wins.
		if key, v, _ := strings.Cut(item, "="); key == "schedtrace" {
			value, set = v, true
		}
	}
	return value, set
}

// Decided reports whether a GODEBUG value names schedtrace: the operator
// chose, or Reexec has run. Reexec then does nothing.
func Decided(godebug string) bool {
	_, set := schedtrace(godebug)
	return set
}

// Awake reports whether a process started with this GODEBUG value keeps
// sysmon awake: it sets schedtrace above 0.
func Awake(godebug string) bool {
	v, _ := schedtrace(godebug)
	n, err := strconv.Atoi(v)
	return err == nil && n > 0
}
