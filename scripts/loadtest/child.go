package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate/tollgate/pkg/sysmon"
	"github.com/tollgate/tollgate/services/edge"
)

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
func startChild(ctx context.Context, role, arg string, env []string, awake bool, lifetime time.Duration, cpus string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{exe, "-child", role, "-child-arg", arg, "-max-total", lifetime.String()}
	if cpus != "" {
		args = append([]string{"taskset", "-c", cpus}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	// A child starts from Go's default sysmon, whatever this process runs
	// with, and is kept awake if awake says so; the edge and the proxy
	// decide for themselves (runChild).
	base := sysmon.Strip(os.Environ())
	if awake {
		base, _ = sysmon.Env(base)
	}
	cmd.Env = append(base, env...)
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
	// First of all, as `tollgate edge` does: the edge, and the proxy with
	// it, may start over with GODEBUG keeping sysmon awake.
	switch role {
	case "edge":
		cfg, err := edgeConfig()
		if err != nil {
			return err
		}
		edge.KeepSysmonAwake(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	case "proxy":
		if awake, _ := strconv.ParseBool(os.Getenv("TOLLGATE_EDGE_SYSMON_AWAKE")); awake {
			if err := sysmon.Reexec(); err != nil {
				return err
			}
		}
	}
	if path := os.Getenv("TOLLGATE_LOADTEST_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	var url string
	var stop func()
	var err error
	switch role {
	case "nats":
		url, stop, err = startNATS()
	case "mock":
		url, stop, err = startMock(arg)
	case "proxy":
		url, stop, err = startProxy(arg)
	case "edge":
		// This process runs only the edge, as `tollgate edge` does: the
		// same settings from the environment and the same garbage
		// collector tuning (TOLLGATE_EDGE_GC_MIN_HEAP_MB=0 for Go's
		// default pacing).
		cfg, cerr := edgeConfig()
		if cerr != nil {
			return cerr
		}
		edge.TuneGC(context.Background(), cfg)
		url, stop, err = startEdge(cfg, arg, os.Getenv("TOLLGATE_PEPPER"))
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
