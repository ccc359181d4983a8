// Package tests holds end-to-end tests of the tollgate binary: they build it
// once, run `tollgate dev` as a child process and use it the way an operator
// would, through the CLI and with plain HTTP requests.
package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tollgateBin is the binary built once by TestMain.
var tollgateBin string

const (
	startTimeout = 60 * time.Second // until the banner shows the admin URL
	stopTimeout  = 30 * time.Second // from SIGINT until the process has exited
	cliTimeout   = 30 * time.Second // one CLI command
)

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tests:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "tollgate-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tests:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	tollgateBin = filepath.Join(dir, "tollgate")
	build := exec.Command("go", "build", "-o", tollgateBin, "./services/tollgate")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "tests: go build ./services/tollgate: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// repoRoot is the nearest directory at or above the working directory (tests/
// under `go test`) whose go.mod declares the tollgate module.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && regexp.MustCompile(`(?m)^module\s+github\.com/tollgate/tollgate\s*$`).Match(data) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/tollgate/tollgate above the working directory")
		}
		dir = parent
	}
}

// cleanEnv is the environment without TOLLGATE_* settings, so that nothing
// from the caller's shell changes what the tests run.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TOLLGATE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// devProc is one running `tollgate dev`.
type devProc struct {
	dataDir        string
	url            string // admin API, e.g. http://127.0.0.1:40109
	edgeURL        string // edge proxy
	token          string // bootstrap operator token from <data-dir>/admin-token
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{} // closed when the process has been reaped
	waitErr        error
}

var (
	adminURLLine = regexp.MustCompile(`(?m)^\s*admin API\s+(http://\S+)`)
	edgeURLLine  = regexp.MustCompile(`(?m)^\s*edge proxy\s+(http://\S+)`)
)

// startDev starts `tollgate dev` on dataDir with free ports and waits until
// its banner names the admin URL. The process is always stopped at cleanup,
// and its output is logged if the test failed.
func startDev(t *testing.T, dataDir string) *devProc {
	t.Helper()
	began := time.Now()
	d := launchDev(t, dataDir)
	if err := d.waitReady(startTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("tollgate dev ready at %s after %s", d.url, time.Since(began).Round(time.Millisecond))
	return d
}

// launchDev starts `tollgate dev` without waiting for it. It runs in a process
// group of its own, as a command started from a shell does.
func launchDev(t *testing.T, dataDir string) *devProc {
	t.Helper()
	d := &devProc{dataDir: dataDir, done: make(chan struct{})}
	d.cmd = exec.Command(tollgateBin, "dev", "--data-dir", dataDir,
		"--nats-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0",
		"--postgres-port", "0", "--clickhouse-port", "0",
		"--edge-listen", "127.0.0.1:0", "--mock-listen", "127.0.0.1:0")
	d.cmd.Env = cleanEnv()
	d.cmd.Stdout, d.cmd.Stderr = &d.stdout, &d.stderr
	// If the test binary dies without its cleanups (a -timeout panic), the
	// kernel interrupts dev, which stops its databases. The signal follows the
	// thread that forked, so that thread stays locked until dev is reaped.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGINT}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := d.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		d.waitErr = d.cmd.Wait()
		close(d.done)
	}()
	if err := <-started; err != nil {
		t.Fatalf("start tollgate dev: %v", err)
	}
	t.Cleanup(func() {
		d.kill(t)
		if t.Failed() {
			t.Logf("tollgate dev (%s) stdout:\n%s", dataDir, d.stdout.String())
			t.Logf("tollgate dev (%s) stderr:\n%s", dataDir, d.stderr.String())
		}
	})
	return d
}

// errExited is waitReady's error when the process ended first.
var errExited = errors.New("tollgate dev exited before printing the admin URL")

// waitReady waits until the banner names the admin URL, then reads the token.
func (d *devProc) waitReady(timeout time.Duration) error {
	deadline := time.After(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if m := adminURLLine.FindStringSubmatch(d.stdout.String()); m != nil {
			d.url = m[1]
			if e := edgeURLLine.FindStringSubmatch(d.stdout.String()); e != nil {
				d.edgeURL = e[1]
			}
			break
		}
		select {
		case <-d.done:
			return fmt.Errorf("%w (%v)", errExited, d.waitErr)
		case <-deadline:
			return fmt.Errorf("tollgate dev printed no admin URL within %s", timeout)
		case <-tick.C:
		}
	}
	data, err := os.ReadFile(filepath.Join(d.dataDir, "admin-token"))
	if err != nil {
		return fmt.Errorf("admin token file: %w", err)
	}
	d.token = strings.TrimSpace(string(data))
	if len(d.token) < 16 {
		return fmt.Errorf("admin token file holds %q; want a token of 16 characters or more", d.token)
	}
	return nil
}

// exited reports whether the process has ended.
func (d *devProc) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// interrupt sends SIGINT and waits up to timeout for the exit. With group,
// the signal goes to the whole process group, as Ctrl-C in a terminal does.
// It returns the exit code and how long the exit took, or an error if the
// process did not exit.
func (d *devProc) interrupt(group bool, timeout time.Duration) (int, time.Duration, error) {
	began := time.Now()
	if !d.exited() {
		pid := d.cmd.Process.Pid
		if group {
			pid = -pid
		}
		if err := syscall.Kill(pid, syscall.SIGINT); err != nil && !errors.Is(err, syscall.ESRCH) {
			return -1, 0, fmt.Errorf("SIGINT: %w", err)
		}
	}
	select {
	case <-d.done:
		return d.cmd.ProcessState.ExitCode(), time.Since(began), nil
	case <-time.After(timeout):
		return -1, time.Since(began), fmt.Errorf("still running %s after SIGINT", timeout)
	}
}

// kill stops the process if it still runs: SIGINT first, so it can stop its
// databases, then SIGKILL (its databases then get their parent-death signal).
func (d *devProc) kill(t *testing.T) {
	if d.exited() {
		return
	}
	if _, _, err := d.interrupt(false, stopTimeout); err != nil {
		t.Errorf("cleanup: tollgate dev %v; killing it", err)
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	}
}

// dbProcesses lists the PostgreSQL and ClickHouse server processes whose
// command line mentions dir, as "pid: command line".
func dbProcesses(dir string) map[int]string {
	found := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(data) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
		exe := filepath.Base(args[0])
		if !strings.Contains(exe, "postgres") && !strings.Contains(exe, "clickhouse") {
			continue
		}
		line := strings.Join(args, " ")
		if strings.Contains(line, dir) {
			found[pid] = line
		}
	}
	return found
}

// killLeftovers kills, by pid, database servers left running under dir so
// that a failing test leaks nothing; finding any is itself a failure.
func killLeftovers(t *testing.T, dir string) {
	for pid, line := range dbProcesses(dir) {
		t.Errorf("cleanup: killing leftover database process %d: %s", pid, line)
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Signal(syscall.SIGKILL)
		}
	}
}

// cliResult is what one CLI command did.
type cliResult struct {
	args           []string
	code           int
	stdout, stderr string
}

func (r cliResult) String() string {
	return fmt.Sprintf("tollgate %s\nexit code %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// tollgate runs the binary with args and env (added to a clean environment).
func tollgate(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tollgateBin, args...)
	cmd.Env = cleanEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := cliResult{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		t.Fatalf("tollgate %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, r.stdout, r.stderr)
	}
	return r
}

// keys runs `tollgate keys args...` as an operator who followed the banner:
// TOLLGATE_ADMIN_URL and TOLLGATE_ADMIN_TOKEN exported.
func (d *devProc) keys(t *testing.T, args ...string) cliResult {
	t.Helper()
	return tollgate(t, []string{"TOLLGATE_ADMIN_URL=" + d.url, "TOLLGATE_ADMIN_TOKEN=" + d.token}, append([]string{"keys"}, args...)...)
}

// keysOK is keys for a command that must succeed.
func (d *devProc) keysOK(t *testing.T, args ...string) cliResult {
	t.Helper()
	r := d.keys(t, args...)
	if r.code != 0 {
		t.Fatalf("want exit code 0, got:\n%s", r)
	}
	return r
}

// keysJSON runs a command that must succeed and decodes its JSON output.
func (d *devProc) keysJSON(t *testing.T, args ...string) map[string]any {
	t.Helper()
	r := d.keysOK(t, append(args, "--json")...)
	var out map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("output is not a JSON object: %v\n%s", err, r)
	}
	return out
}

// listedIDs are the ids in `keys list --json` output, by id, with the key.
func listedIDs(t *testing.T, list map[string]any) map[string]map[string]any {
	t.Helper()
	raw, ok := list["keys"].([]any)
	if !ok {
		t.Fatalf("list output has no keys array: %v", list)
	}
	out := map[string]map[string]any{}
	for _, k := range raw {
		m, _ := k.(map[string]any)
		id, _ := m["id"].(string)
		out[id] = m
	}
	return out
}

// limit finds the limit of a key (protojson, proto names) by metric and interval.
func limit(key map[string]any, metric, interval string) map[string]any {
	ls, _ := key["limits"].([]any)
	for _, l := range ls {
		m, _ := l.(map[string]any)
		if m["metric"] == metric && m["interval"] == interval {
			return m
		}
	}
	return nil
}

// httpResult is one HTTP exchange.
type httpResult struct {
	status int
	body   []byte
	json   map[string]any
}

// request sends a request as curl would: body as JSON if not empty, a bearer
// token if not empty.
func request(t *testing.T, method, url, token, body string) httpResult {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Timeout: 15 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	r := httpResult{status: resp.StatusCode, body: data}
	_ = json.Unmarshal(data, &r.json)
	return r
}

// want fails unless r has the status code.
func (r httpResult) want(t *testing.T, status int) httpResult {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body: %s", r.status, status, r.body)
	}
	if r.json == nil {
		t.Fatalf("body is not a JSON object: %s", r.body)
	}
	return r
}

// path walks a decoded JSON value: strings index objects, ints arrays.
func path(v any, steps ...any) any {
	for _, s := range steps {
		switch s := s.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[s]
		case int:
			a, ok := v.([]any)
			if !ok || s >= len(a) {
				return nil
			}
			v = a[s]
		}
	}
	return v
}
