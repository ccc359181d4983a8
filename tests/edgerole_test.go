package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var (
	natsURLLine   = regexp.MustCompile(`(?m)^\s*NATS\s+(nats://\S+)`)
	edgeListening = regexp.MustCompile(`"msg":"edge listening".*?"addr":"([^"]+)"`)
)

// testEdgeRole runs `tollgate edge` as a process of its own next to dev's
// (same NATS, same pepper), as production runs it: it must start over with
// GODEBUG keeping Go's monitor thread awake (same pid, --sysmon-awake is on
// by default), learn dev's keys and catalog from the bus and answer through
// dev's mock upstream.
func testEdgeRole(t *testing.T, dev *devProc) {
	m := natsURLLine.FindStringSubmatch(dev.stdout.String())
	if m == nil {
		t.Fatalf("the banner names no NATS URL:\n%s", dev.stdout.String())
	}
	pepper, err := os.ReadFile(filepath.Join(dev.dataDir, "pepper"))
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd := exec.Command(tollgateBin, "edge", "--listen", "127.0.0.1:0", "--nats-url", m[1],
		"--spool-dir", t.TempDir(), "--instance", "e2e-edge-role")
	cmd.Env = cleanEnv("TOLLGATE_PEPPER=" + strings.TrimSpace(string(pepper)))
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt) //nolint:errcheck // it may have exited
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill() //nolint:errcheck
			<-exited
		}
		if t.Failed() {
			t.Logf("tollgate edge stderr:\n%s", stderr.String())
		}
	})

	var addr string
	for deadline := time.Now().Add(startTimeout); addr == ""; time.Sleep(20 * time.Millisecond) {
		if l := edgeListening.FindStringSubmatch(stderr.String()); l != nil {
			addr = l[1]
		}
		select {
		case err := <-exited:
			t.Fatalf("tollgate edge exited before listening: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("tollgate edge not listening after %s:\n%s", startTimeout, stderr.String())
		}
	}

	// The same process (exec keeps the pid), started over with the setting.
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains("\x00"+string(env)+"\x00", "\x00GODEBUG=schedtrace=2147483647\x00") {
		t.Errorf("tollgate edge's environment has no GODEBUG=schedtrace=2147483647: %q", strings.ReplaceAll(string(env), "\x00", " "))
	}
	if n := strings.Count(stderr.String(), `"msg":"starting"`); n != 2 {
		t.Errorf("want the edge to log starting twice (before and after starting over), got %d:\n%s", n, stderr.String())
	}

	out := dev.keysJSON(t, "create", "--name", "edge-role", "--models", "gpt-4", "--permissions", "predict")
	secret, _ := out["api_key"].(string)
	chat := `{"model":"gpt-4","messages":[{"role":"user","content":"hello"}],"max_tokens":7}`
	var r httpResult
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r = request(t, "POST", "http://"+addr+"/v1/chat/completions", secret, chat)
		if r.status != 401 || time.Now().After(deadline) {
			break
		}
	}
	r.want(t, 200)
	if got := path(r.json, "usage", "completion_tokens"); got != float64(7) {
		t.Errorf("completion_tokens %v, want 7 from the mock; body %s", got, r.body)
	}
}
