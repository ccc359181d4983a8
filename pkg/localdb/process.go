package localdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// startupTimeout bounds how long a server may take to become ready.
const startupTimeout = 30 * time.Second

// portAttempts is how many times a start is retried with fresh ports when the
// ports were picked by FreePort and turned out to be taken: another process
// may grab a port between FreePort closing it and the server binding it.
const portAttempts = 3

// child is a server process started by this package. A dedicated goroutine
// waits for it, so it is reaped however it ends.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFrom int64         // size of the log before this run, to show only its lines
	done    chan struct{} // closed once the process has been reaped
	waitErr error         // the result of cmd.Wait, valid after done
}

// startChild starts cmd with its stdout and stderr appended to logPath.
// deathSig is what the child receives if this process dies (Linux only).
func startChild(name string, cmd *exec.Cmd, logPath string, deathSig syscall.Signal) (*child, error) {
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	// The child gets its own copy of the descriptor; ours is not needed after Start.
	defer logFile.Close()
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	setChildAttrs(cmd.SysProcAttr, deathSig)

	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	if st, err := logFile.Stat(); err == nil {
		c.logFrom = st.Size()
	}
	started := make(chan error, 1)
	go func() {
		// The parent-death signal fires when the OS thread that forked the
		// child exits, not the process. Pinning this goroutine (and so its
		// thread) until the child is reaped keeps that thread alive exactly
		// as long as it matters.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.waitErr = cmd.Wait()
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// exited reports whether the process has ended.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends sig, waits up to grace (or until ctx ends) and then kills.
// It is safe to call more than once.
func (c *child) stop(ctx context.Context, sig syscall.Signal, grace time.Duration) error {
	if c.exited() {
		return nil
	}
	if err := c.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", c.name, err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	var reason string
	select {
	case <-c.done:
		return nil
	case <-timer.C:
		reason = fmt.Sprintf("did not stop within %s", grace)
	case <-ctx.Done():
		reason = fmt.Sprintf("stop interrupted: %v", ctx.Err())
	}
	_ = c.cmd.Process.Kill()
	<-c.done // SIGKILL cannot be ignored, so this is short.
	return fmt.Errorf("%s (pid %d) %s; killed", c.name, c.pid(), reason)
}

// untilExit returns a context that also ends when the process exits, so that a
// readiness probe does not sit out its timeout on a server that is gone.
func (c *child) untilExit(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	go func() {
		select {
		case <-c.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// exitError describes an unexpected exit during startup, with the log tail.
func (c *child) exitError() error {
	return fmt.Errorf("%s exited during startup (%v)%s", c.name, c.waitErr, logTail(c.logPath, c.logFrom))
}

// portClash reports whether this run of the server failed to bind its port.
func (c *child) portClash() bool {
	b, err := os.ReadFile(c.logPath)
	if err != nil || int64(len(b)) < c.logFrom {
		return false
	}
	return bytes.Contains(b[c.logFrom:], []byte("Address already in use"))
}

// logTail returns the last lines written to a log file from offset from,
// formatted to be appended to an error message, or "" if there are none.
func logTail(path string, from int64) string {
	const maxBytes, maxLines = 4096, 20
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		from = max(from, st.Size()-maxBytes)
	}
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	text := strings.TrimSpace(strings.Join(lines, "\n"))
	if text == "" {
		return ""
	}
	return fmt.Sprintf("; last lines of %s:\n%s", path, text)
}

// processRunning reports whether pid is a live (non-zombie) process whose
// command name starts with comm and whose command line contains arg. Checking
// both keeps us from signalling an unrelated process that reused a stale PID.
func processRunning(pid int, comm, arg string) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name: "pid (comm) S ...".
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' {
		return false
	}
	name, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(string(name)), comm) {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.Contains(cmdline, []byte(arg))
}

// stopStale shuts down a server left running by an earlier run that crashed
// before stopping it. It is not our child, so we cannot reap it; we poll /proc
// until it is gone (its real parent, usually init, reaps it).
func stopStale(ctx context.Context, pid int, comm, arg string, sig syscall.Signal) error {
	if !processRunning(pid, comm, arg) {
		return nil
	}
	deadline := time.Now().Add(startupTimeout)
	for _, s := range []syscall.Signal{sig, syscall.SIGKILL} {
		if err := syscall.Kill(pid, s); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal stale %s (pid %d): %w", comm, pid, err)
		}
		for processRunning(pid, comm, arg) {
			if time.Now().After(deadline) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("wait for stale %s (pid %d) to stop: %w", comm, pid, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
		if !processRunning(pid, comm, arg) {
			return nil
		}
		deadline = time.Now().Add(5 * time.Second)
	}
	return fmt.Errorf("stale %s (pid %d) is still running after SIGKILL", comm, pid)
}
