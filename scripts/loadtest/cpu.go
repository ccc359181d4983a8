package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ---- CPU and system-call accounting --------------------------------------

// cpuTimes is the CPU time (user and system) used so far by each process.
type cpuTimes map[string]time.Duration

func (s *system) cpu() cpuTimes {
	t := cpuTimes{"generator": selfCPU()}
	if d, ok := stealCPU(); ok {
		t["steal"] = d
	}
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

// stealCPU reads the steal time of all CPUs from /proc/stat: how long the
// hypervisor ran something else while this machine's CPUs had work.
func stealCPU() (time.Duration, bool) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	f := strings.Fields(string(line)) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return 0, false
	}
	n, err := strconv.ParseInt(f[8], 10, 64)
	if err != nil {
		return 0, false
	}
	return time.Duration(n) * 10 * time.Millisecond, true
}

// callCounts is the read and write system calls made so far by each
// process: syscr and syscw of /proc/<pid>/io, which count read, readv and
// pread, write, writev and pwrite (on sockets too), but not recvfrom,
// sendto, splice, epoll or futex. Unlike strace, reading them slows nothing.
type callCounts map[string][2]int64

func (s *system) calls() callCounts {
	c := callCounts{}
	if n, ok := procIO("self"); ok {
		c["generator"] = n
	}
	for role, p := range s.procs {
		if n, ok := procIO(strconv.Itoa(p.cmd.Process.Pid)); ok {
			c[role] = n
		}
	}
	return c
}

func (a callCounts) sub(b callCounts) callCounts {
	out := callCounts{}
	for k, v := range a {
		if w, ok := b[k]; ok {
			out[k] = [2]int64{v[0] - w[0], v[1] - w[1]}
		}
	}
	return out
}

// procIO reads the read and write system calls of a process (pid, or
// "self") from /proc/<pid>/io.
func procIO(pid string) ([2]int64, bool) {
	data, err := os.ReadFile("/proc/" + pid + "/io")
	if err != nil {
		return [2]int64{}, false
	}
	var n [2]int64
	found := 0
	for _, line := range strings.Split(string(data), "\n") {
		name, value, _ := strings.Cut(line, ":")
		var i int
		switch name {
		case "syscr":
			i = 0
		case "syscw":
			i = 1
		default:
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		if err != nil {
			return [2]int64{}, false
		}
		n[i] = v
		found++
	}
	return n, found == 2
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
