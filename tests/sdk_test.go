package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	sdkInstallTimeout = 3 * time.Minute  // npm ci, from the registry or its cache
	sdkCheckTimeout   = 90 * time.Second // node check.mjs
	sdkKeysTimeout    = 10 * time.Second // until the edge has seen every key
)

// TestOfficialSDKs runs scripts/sdk-check/check.mjs, which drives the edge of
// `tollgate dev` with the official OpenAI and Anthropic Node SDKs and checks
// that each refusal is raised as the SDK exception a client would catch
// (AuthenticationError, PermissionDeniedError, NotFoundError, ...), and that
// plain and streamed answers parse.
func TestOfficialSDKs(t *testing.T) {
	began := time.Now()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "scripts", "sdk-check")
	node := sdkRequireNode(t)
	sdkInstall(t, dir)
	installed := time.Now()

	dataDir := t.TempDir()
	// Registered before any process starts, so it runs after they are stopped.
	t.Cleanup(func() { killLeftovers(t, dataDir) })
	dev := startDev(t, dataDir)
	if dev.edgeURL == "" {
		t.Fatalf("the banner names no edge proxy:\n%s", dev.stdout.String())
	}

	create := func(name string, flags ...string) (secret, id string) {
		t.Helper()
		out := dev.keysJSON(t, append([]string{"create", "--name", name}, flags...)...)
		secret, _ = out["api_key"].(string)
		id, _ = out["id"].(string)
		if secret == "" || id == "" {
			t.Fatalf("keys create --name %s: no api_key or id in %v", name, out)
		}
		return secret, id
	}
	keys := map[string]string{}
	keys["MAIN"], _ = create("sdk-main")
	keys["RPM"], _ = create("sdk-rpm", "--rpm", "2")
	keys["READONLY"], _ = create("sdk-readonly", "--permissions", "read")
	keys["MODELS"], _ = create("sdk-models", "--models", "gpt-3.5-turbo")
	keys["SMALL"], _ = create("sdk-small", "--max-request-bytes", "100")
	var revokedID string
	keys["REVOKED"], revokedID = create("sdk-revoked")
	dev.keysOK(t, "revoke", revokedID)
	sdkWaitForKeys(t, dev.edgeURL, keys)
	ready := time.Now()

	ctx, cancel := context.WithTimeout(context.Background(), sdkCheckTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "check.mjs", dev.edgeURL)
	cmd.Dir = dir
	cmd.Env = sdkEnv()
	for name, secret := range keys {
		cmd.Env = append(cmd.Env, "SDK_CHECK_KEY_"+name+"="+secret)
	}
	out, err := cmd.CombinedOutput()
	t.Logf("npm %s, tollgate dev and keys %s, node check.mjs %s; whole test %s",
		installed.Sub(began).Round(time.Millisecond), ready.Sub(installed).Round(time.Millisecond),
		time.Since(ready).Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	if ctx.Err() != nil {
		t.Fatalf("node check.mjs did not finish within %s:\n%s", sdkCheckTimeout, out)
	}
	if err != nil {
		var failed []string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "FAIL ") {
				failed = append(failed, line)
			}
		}
		t.Fatalf("node check.mjs: %v; %d check(s) failed:\n%s\n\nwhole output:\n%s", err, len(failed), strings.Join(failed, "\n"), out)
	}
	if !regexp.MustCompile(`(?m)^ok `).Match(out) || !regexp.MustCompile(`(?m)^all checks passed$`).Match(out) {
		t.Fatalf("node check.mjs exited 0 but did not report its checks:\n%s", out)
	}
	t.Logf("node check.mjs:\n%s", out)
}

// sdkRequireNode finds node and npm, or fails saying what to install.
func sdkRequireNode(t *testing.T) string {
	t.Helper()
	const install = "TestOfficialSDKs needs Node.js 20 or later with npm on PATH " +
		"(Debian: apt-get install nodejs npm, or https://nodejs.org/); " +
		"npm must reach the npm registry once to install scripts/sdk-check/package-lock.json"
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found: %s", install)
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Fatalf("npm not found (node is %s): %s", node, install)
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v: %s", node, err, install)
	}
	version := strings.TrimSpace(string(out))
	major := 0
	if m := regexp.MustCompile(`^v(\d+)\.`).FindStringSubmatch(version); m != nil {
		major, _ = strconv.Atoi(m[1])
	}
	if major < 20 {
		t.Fatalf("node %s is too old: %s", version, install)
	}
	return node
}

// sdkInstall runs `npm ci` in dir unless node_modules already holds what
// package-lock.json pins: a successful install leaves the lock file's hash in
// node_modules, and npm ci starts by deleting node_modules, so a stamp that
// matches means a complete install of this lock file. A file lock keeps two
// test processes from installing into the same directory at once.
func sdkInstall(t *testing.T, dir string) {
	t.Helper()
	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		t.Fatalf("scripts/sdk-check: %v", err)
	}
	sum := sha256.Sum256(lock)
	want := hex.EncodeToString(sum[:])
	stamp := filepath.Join(dir, "node_modules", ".tollgate-lock-sha256")

	dirSum := sha256.Sum256([]byte(dir))
	lockPath := filepath.Join(os.TempDir(), "tollgate-sdk-check-"+hex.EncodeToString(dirSum[:8])+".lock")
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("npm install lock: %v", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("npm install lock %s: %v", lockPath, err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing the file unlocks it too

	if got, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(got)) == want {
		return
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), sdkInstallTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--prefer-offline")
	cmd.Dir = dir
	cmd.Env = append(sdkEnv(), "npm_config_update_notifier=false")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("no result within %s", sdkInstallTimeout)
		}
		t.Fatalf("npm ci in %s: %v (it needs the npm registry, or an npm cache holding the packages)\n%s", dir, err, out.String())
	}
	if err := os.WriteFile(stamp, []byte(want+"\n"), 0o644); err != nil {
		t.Fatalf("npm ci: %v", err)
	}
	t.Logf("npm ci in %s took %s", dir, time.Since(began).Round(time.Millisecond))
}

// sdkWaitForKeys waits until the edge has heard of every key from the bus:
// GET /v1/models (which costs no request of a key's limits) answers anything
// but 401 for a live key, and 401 key_revoked for the revoked one.
func sdkWaitForKeys(t *testing.T, edgeURL string, keys map[string]string) {
	t.Helper()
	deadline := time.Now().Add(sdkKeysTimeout)
	for name, secret := range keys {
		for {
			r := request(t, "GET", edgeURL+"/v1/models", secret, "")
			code, _ := path(r.json, "error", "code").(string)
			if name == "REVOKED" && r.status == 401 && code == "key_revoked" || name != "REVOKED" && r.status != 401 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s the edge still answers GET /v1/models for the %s key with %d %s", sdkKeysTimeout, name, r.status, r.body)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// sdkEnv is the environment for npm and node without settings that would
// change what the SDKs send (OPENAI_BASE_URL, ANTHROPIC_AUTH_TOKEN, ...) or
// how node runs.
func sdkEnv() []string {
	var env []string
	for _, kv := range cleanEnv() {
		name, _, _ := strings.Cut(kv, "=")
		upper := strings.ToUpper(name)
		if strings.HasPrefix(upper, "OPENAI_") || strings.HasPrefix(upper, "ANTHROPIC_") ||
			strings.HasPrefix(upper, "SDK_CHECK_") || name == "NODE_OPTIONS" {
			continue
		}
		env = append(env, kv)
	}
	return env
}
