package tests

import (
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDev runs `tollgate dev`, manages keys through the CLI, REST and Connect
// JSON, stops it with SIGINT and starts it again on the same data directory.
func TestDev(t *testing.T) {
	began := time.Now()
	dataDir := t.TempDir()
	// Registered before any process starts, so it runs after they are stopped.
	t.Cleanup(func() { killLeftovers(t, dataDir) })

	dev := startDev(t, dataDir)

	// Keys made below, checked again after the restart.
	var (
		firstID, secondID, writerID, restID string
		writerSecret                        string // the writer key's current secret
		made                                []string
	)

	t.Run("CLI", func(t *testing.T) {
		t.Run("create --json", func(t *testing.T) {
			out := dev.keysJSON(t, "create", "--name", "first", "--limit", "spend:day:10.50", "--rpm", "60",
				"--models", "gpt-4,gpt-3.5-turbo", "--ttl", "30d", "--notify", "ops@example.com",
				"--alert-threshold", "0.5,0.8")
			firstID, _ = out["id"].(string)
			secret, _ := out["api_key"].(string)
			if firstID == "" {
				t.Fatalf("no id in %v", out)
			}
			if !strings.HasPrefix(secret, "en_") || len(secret) < len("en_")+22 {
				t.Errorf("api_key %q: want en_ and at least 128 random bits", secret)
			}
			made = append(made, firstID)
			key, _ := out["key"].(map[string]any)
			if got := path(limit(key, "METRIC_SPEND", "INTERVAL_DAY"), "amount"); got != "10.5" {
				t.Errorf("spend/day amount %v, want \"10.5\"; key: %v", got, key)
			}
			if got := path(limit(key, "METRIC_REQUESTS", "INTERVAL_MINUTE"), "amount"); got != "60" {
				t.Errorf("requests/minute amount %v, want \"60\"", got)
			}
			if got := path(key, "models", "names"); !equalJSON(got, []string{"gpt-4", "gpt-3.5-turbo"}) {
				t.Errorf("models %v, want gpt-4, gpt-3.5-turbo", got)
			}
			if got := path(key, "notify_emails"); !equalJSON(got, []string{"ops@example.com"}) {
				t.Errorf("notify_emails %v", got)
			}
			if got := path(key, "alert_thresholds"); !equalJSON(got, []float64{0.5, 0.8}) {
				t.Errorf("alert_thresholds %v, want [0.5 0.8]", got)
			}
			exp, _ := key["expires_at"].(string)
			if at, err := time.Parse(time.RFC3339Nano, exp); err != nil || at.Sub(time.Now()) < 29*24*time.Hour || at.Sub(time.Now()) > 31*24*time.Hour {
				t.Errorf("expires_at %q, want about 30 days from now", exp)
			}
			if key["status"] != "active" {
				t.Errorf("status %v, want active", key["status"])
			}
		})

		t.Run("create prints a table and the secret once", func(t *testing.T) {
			r := dev.keysOK(t, "create", "--name", "second", "--limit", "spend:day:10.50", "--rpm", "60",
				"--models", "gpt-4,gpt-3.5-turbo", "--ttl", "30d", "--notify", "ops@example.com",
				"--alert-threshold", "0.5,0.8")
			for _, re := range []string{`(?m)^id\s+key_\S+$`, `(?m)^name\s+second$`, `(?m)^status\s+active$`,
				`(?m)^limit\s+spend:day:10\.5$`, `(?m)^limit\s+requests:minute:60$`, `(?m)^alerts at\s+0\.5, 0\.8$`} {
				if !regexp.MustCompile(re).MatchString(r.stdout) {
					t.Errorf("output does not match %s:\n%s", re, r.stdout)
				}
			}
			secrets := regexp.MustCompile(`en_[A-Za-z0-9]{20,}`).FindAllString(r.stdout, -1)
			if len(secrets) != 1 {
				t.Fatalf("want the secret printed once, found %q in:\n%s", secrets, r.stdout)
			}
			secondID = regexp.MustCompile(`(?m)^id\s+(key_\S+)$`).FindStringSubmatch(r.stdout)[1]
			made = append(made, secondID)

			// A PREDICT key is no credential for the admin API.
			if r := dev.keys(t, "list", "--token", secrets[0]); r.code != 1 {
				t.Errorf("a PREDICT-only key as --token: want exit code 1, got:\n%s", r)
			}
		})

		t.Run("list and get", func(t *testing.T) {
			r := dev.keysOK(t, "list")
			for _, want := range []string{"ID", "NAME", firstID, secondID, "first", "second"} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("keys list lacks %q:\n%s", want, r.stdout)
				}
			}
			ids := listedIDs(t, dev.keysJSON(t, "list"))
			for _, id := range []string{firstID, secondID} {
				if ids[id] == nil {
					t.Errorf("keys list --json lacks %s", id)
				}
			}
			got := dev.keysJSON(t, "get", firstID)
			if got["id"] != firstID || got["name"] != "first" {
				t.Errorf("keys get %s --json: %v", firstID, got)
			}
		})

		t.Run("update amends limits", func(t *testing.T) {
			r := dev.keysOK(t, "update", firstID, "--name", "renamed", "--limit", "tokens:day:1000:calendar")
			if !regexp.MustCompile(`(?m)^name\s+renamed$`).MatchString(r.stdout) {
				t.Errorf("update output lacks the new name:\n%s", r.stdout)
			}
			key := dev.keysJSON(t, "get", firstID)
			if key["name"] != "renamed" {
				t.Errorf("name %v, want renamed", key["name"])
			}
			for _, l := range []struct{ metric, interval, amount, window string }{
				{"METRIC_SPEND", "INTERVAL_DAY", "10.5", "WINDOW_ROLLING"},
				{"METRIC_REQUESTS", "INTERVAL_MINUTE", "60", "WINDOW_ROLLING"},
				{"METRIC_TOKENS", "INTERVAL_DAY", "1000", "WINDOW_CALENDAR"},
			} {
				got := limit(key, l.metric, l.interval)
				if got == nil || got["amount"] != l.amount || got["window"] != l.window {
					t.Errorf("limit %s/%s = %v, want amount %s, %s; limits %v", l.metric, l.interval, got, l.amount, l.window, key["limits"])
				}
			}
			if key["description"] != nil || path(key, "models", "names") == nil {
				t.Errorf("fields the update did not name changed: %v", key)
			}
		})

		t.Run("rotate", func(t *testing.T) {
			before := dev.keysJSON(t, "get", firstID)
			out := dev.keysJSON(t, "rotate", firstID)
			secret, _ := out["api_key"].(string)
			if !strings.HasPrefix(secret, "en_") || out["id"] != firstID {
				t.Fatalf("rotate: %v", out)
			}
			if hint, _ := path(out, "key", "hint").(string); hint == "" || hint == before["hint"] || !strings.HasSuffix(secret, strings.TrimPrefix(hint, "en_...")) {
				t.Errorf("hint after rotate %v (before %v) does not match the new secret", hint, before["hint"])
			}
			again := dev.keysJSON(t, "rotate", firstID)
			if again["api_key"] == secret {
				t.Errorf("two rotations gave the same secret %v", secret)
			}
		})

		t.Run("revoke", func(t *testing.T) {
			r := dev.keysOK(t, "revoke", firstID)
			if !regexp.MustCompile(`(?m)^status\s+revoked$`).MatchString(r.stdout) {
				t.Errorf("revoke output lacks status revoked:\n%s", r.stdout)
			}
			if got := dev.keysJSON(t, "get", firstID)["status"]; got != "revoked" {
				t.Errorf("status after revoke %v, want revoked", got)
			}
			r = dev.keysOK(t, "list", "--status", "revoked")
			if !strings.Contains(r.stdout, firstID) || strings.Contains(r.stdout, secondID) {
				t.Errorf("keys list --status revoked: want %s and not %s:\n%s", firstID, secondID, r.stdout)
			}
		})

		t.Run("errors", func(t *testing.T) {
			for _, tc := range []struct {
				name       string
				args       []string
				code       int
				wantStderr []string
			}{
				{"create without --name", []string{"create"}, 2, []string{"--name"}},
				{"ttl in years", []string{"create", "--name", "x", "--ttl", "5y"}, 1, []string{"ttl", "unit", `"y"`}},
				{"amount below a nano-dollar", []string{"create", "--name", "x", "--limit", "spend:day:1.0000000001"}, 1, []string{"limits[0].amount"}},
				{"alert threshold above 1", []string{"create", "--name", "x", "--alert-threshold", "1.5"}, 1, []string{"alert_thresholds"}},
				{"wrong token", []string{"list", "--token", "not-the-operator-token"}, 1, []string{"unauthenticated"}},
				{"get without an id", []string{"get"}, 2, nil},
				{"unknown subcommand", []string{"frobnicate"}, 2, []string{"frobnicate"}},
				{"update without changes", []string{"update", secondID}, 2, []string{"nothing to change"}},
				{"get an unknown key", []string{"get", "key_00000000000000000000000000"}, 1, []string{"not_found"}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					r := dev.keys(t, tc.args...)
					if r.code != tc.code {
						t.Errorf("exit code %d, want %d:\n%s", r.code, tc.code, r)
					}
					for _, want := range tc.wantStderr {
						if !strings.Contains(r.stderr, want) {
							t.Errorf("stderr does not name %q:\n%s", want, r.stderr)
						}
					}
				})
			}
			// None of the refused creates made a key.
			for id, k := range listedIDs(t, dev.keysJSON(t, "list", "--name", "x")) {
				if k["name"] == "x" {
					t.Errorf("a refused create made key %s: %v", id, k)
				}
			}
		})

		t.Run("flags instead of environment", func(t *testing.T) {
			r := tollgate(t, nil, "keys", "list", "--admin-url", dev.url, "--token", dev.token)
			if r.code != 0 || !strings.Contains(r.stdout, secondID) {
				t.Errorf("want exit code 0 and %s listed:\n%s", secondID, r)
			}
			if r := tollgate(t, nil, "keys", "list", "--admin-url", dev.url); r.code != 2 || !strings.Contains(r.stderr, "--token") {
				t.Errorf("no credential: want exit code 2 naming --token:\n%s", r)
			}
		})

		t.Run("a key with WRITE acts in its own account only", func(t *testing.T) {
			out := dev.keysJSON(t, "create", "--name", "writer", "--permissions", "write")
			writerID, _ = out["id"].(string)
			writerSecret, _ = out["api_key"].(string)
			made = append(made, writerID)
			account, _ := path(out, "key", "account").(string)

			byWriter := dev.keysJSON(t, "create", "--token", writerSecret, "--name", "by-writer")
			if got := path(byWriter, "key", "account"); got != account || account == "" {
				t.Errorf("key made with the writer key is in account %v, want the writer's %q", got, account)
			}
			id, _ := byWriter["id"].(string)
			made = append(made, id)

			r := dev.keys(t, "create", "--token", writerSecret, "--name", "elsewhere", "--account", "other")
			if r.code != 1 || !strings.Contains(r.stderr, "permission_denied") {
				t.Errorf("create in another account: want exit code 1 and permission_denied:\n%s", r)
			}
			r = dev.keys(t, "list", "--token", writerSecret, "--account", "other")
			if r.code != 1 || !strings.Contains(r.stderr, "permission_denied") {
				t.Errorf("list another account: want exit code 1 and permission_denied:\n%s", r)
			}

			// After a rotation without grace, only the new secret works.
			rot := dev.keysJSON(t, "rotate", writerID)
			newSecret, _ := rot["api_key"].(string)
			if r := dev.keys(t, "list", "--token", writerSecret); r.code != 1 || !strings.Contains(r.stderr, "unauthenticated") {
				t.Errorf("the writer's old secret after rotate: want exit code 1, unauthenticated:\n%s", r)
			}
			writerSecret = newSecret
			if r := dev.keys(t, "list", "--token", writerSecret); r.code != 0 || !strings.Contains(r.stdout, writerID) {
				t.Errorf("the writer's new secret: want exit code 0 listing its key:\n%s", r)
			}
		})
	})

	t.Run("REST", func(t *testing.T) {
		base := dev.url + "/api-internal/v1/api-keys"
		tok := dev.token

		created := request(t, "POST", base, tok, `{"name":"enclava","description":"d","allowed_models":[],"daily_spend_limit":10.50,"monthly_spend_limit":"100","daily_token_limit":100000,"alert_threshold":0.8}`).want(t, http.StatusCreated)
		restID, _ = created.json["id"].(string)
		made = append(made, restID)
		secret, _ := created.json["api_key"].(string)
		if !strings.HasPrefix(secret, "en_") {
			t.Errorf("api_key %q, want en_...", secret)
		}
		for field, want := range map[string]any{"name": "enclava", "description": "d", "daily_spend_limit": "10.5",
			"monthly_spend_limit": "100", "daily_token_limit": "100000", "alert_threshold": 0.8, "status": "active", "is_active": true} {
			if got := created.json[field]; got != want {
				t.Errorf("created %s = %#v, want %#v", field, got, want)
			}
		}
		if got := created.json["allowed_models"]; !equalJSON(got, []string{}) {
			t.Errorf("allowed_models %#v, want []", got)
		}

		list := request(t, "GET", base, tok, "").want(t, http.StatusOK)
		var listed []string
		for _, k := range list.json["api_keys"].([]any) {
			listed = append(listed, k.(map[string]any)["id"].(string))
		}
		if !slices.Contains(listed, restID) || !slices.Contains(listed, secondID) {
			t.Errorf("GET list: ids %v lack %s or %s", listed, restID, secondID)
		}
		one := request(t, "GET", base+"/"+restID, tok, "").want(t, http.StatusOK)
		if one.json["name"] != "enclava" || one.json["daily_spend_limit"] != "10.5" {
			t.Errorf("GET one: %s", one.body)
		}
		if secret != "" && strings.Contains(string(one.body), secret) {
			t.Errorf("GET shows the secret: %s", one.body)
		}

		patched := request(t, "PATCH", base+"/"+restID, tok, `{"daily_spend_limit": 20}`).want(t, http.StatusOK)
		if patched.json["daily_spend_limit"] != "20" || patched.json["monthly_spend_limit"] != "100" || patched.json["daily_token_limit"] != "100000" {
			t.Errorf("PATCH daily_spend_limit 20: want daily 20, monthly 100 and tokens 100000 kept: %s", patched.body)
		}

		revoked := request(t, "DELETE", base+"/"+restID, tok, "").want(t, http.StatusOK)
		if path(revoked.json, "api_key", "status") != "revoked" {
			t.Errorf("DELETE: %s", revoked.body)
		}
		if got := request(t, "GET", base+"/"+restID, tok, "").want(t, http.StatusOK); got.json["status"] != "revoked" || got.json["is_active"] != false {
			t.Errorf("GET after DELETE: %s", got.body)
		}

		t.Run("errors", func(t *testing.T) {
			for _, tc := range []struct {
				name, method, url, token, body string
				status                         int
				check                          func(t *testing.T, r httpResult)
			}{
				{"bad JSON", "POST", base, tok, `{"name":`, http.StatusBadRequest, func(t *testing.T, r httpResult) {
					if msg, _ := path(r.json, "error", "message").(string); msg == "" {
						t.Errorf("no error.message: %s", r.body)
					}
				}},
				{"negative limit", "POST", base, tok, `{"name":"x","daily_spend_limit":-1}`, http.StatusUnprocessableEntity, wantField("daily_spend_limit")},
				// Errors name the field as the REST caller sent it, not the
				// Connect API's path for it (ttl, alert_thresholds[0]).
				{"bad expires_in", "POST", base, tok, `{"name":"x","expires_in":"5y"}`, http.StatusUnprocessableEntity, wantField("expires_in")},
				{"alert_threshold above 1", "POST", base, tok, `{"name":"x","alert_threshold":1.5}`, http.StatusUnprocessableEntity, wantField("alert_threshold")},
				{"no token", "GET", base, "", "", http.StatusUnauthorized, func(t *testing.T, r httpResult) {
					if msg, _ := path(r.json, "error", "message").(string); msg == "" {
						t.Errorf("no error.message: %s", r.body)
					}
				}},
				{"wrong token", "POST", base, "not-the-operator-token", `{"name":"x"}`, http.StatusUnauthorized, nil},
				{"unknown key", "GET", base + "/key_00000000000000000000000000", tok, "", http.StatusNotFound, nil},
			} {
				t.Run(tc.name, func(t *testing.T) {
					r := request(t, tc.method, tc.url, tc.token, tc.body).want(t, tc.status)
					if tc.check != nil {
						tc.check(t, r)
					}
				})
			}
		})
	})

	t.Run("Connect JSON", func(t *testing.T) {
		rpc := dev.url + "/tollgate.admin.v1.KeyService/ListKeys"
		r := request(t, "POST", rpc, dev.token, `{}`).want(t, http.StatusOK)
		var ids []string
		keys, _ := r.json["keys"].([]any)
		for _, k := range keys {
			ids = append(ids, k.(map[string]any)["id"].(string))
		}
		if !slices.Contains(ids, secondID) || !slices.Contains(ids, restID) {
			t.Errorf("ListKeys ids %v lack %s or %s", ids, secondID, restID)
		}
		if r := request(t, "POST", rpc, "", `{}`); r.status != http.StatusUnauthorized || r.json["code"] != "unauthenticated" {
			t.Errorf("ListKeys without a token: status %d, body %s; want 401 unauthenticated", r.status, r.body)
		}
	})

	t.Run("catalog from the CLI", func(t *testing.T) {
		env := []string{"TOLLGATE_ADMIN_URL=" + dev.url, "TOLLGATE_ADMIN_TOKEN=" + dev.token}
		r := tollgate(t, env, "catalog", "models", "--json")
		var models struct {
			Models []struct {
				Name      string `json:"name"`
				UpdatedBy string `json:"updated_by"`
			} `json:"models"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &models); r.code != 0 || err != nil {
			t.Fatalf("catalog models: %v\n%s", err, r)
		}
		seeded := 0
		for _, m := range models.Models {
			if m.UpdatedBy == "dev-seed" {
				seeded++
			}
		}
		if seeded < 4 {
			t.Errorf("%d models written by dev-seed, want the 4 demo models: %s", seeded, r.stdout)
		}
		// A price change, then the audit names the bootstrap operator.
		if r := tollgate(t, env, "catalog", "put-model", "gpt-4", "--service", "default/mock-openai",
			"--input-price", "30", "--output-price", "60", "--max-output-tokens", "8192"); r.code != 0 {
			t.Fatalf("put-model: %s", r)
		}
		r = tollgate(t, env, "catalog", "changes", "--account", "default", "--json")
		var changes struct {
			Changes []struct {
				Actor, Kind, ID string
			} `json:"changes"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &changes); r.code != 0 || err != nil || len(changes.Changes) == 0 {
			t.Fatalf("catalog changes: %v\n%s", err, r)
		}
		last := changes.Changes[len(changes.Changes)-1]
		if last.Actor != "bootstrap" || last.Kind != "model" || last.ID != "gpt-4" {
			t.Errorf("the last change %+v, want bootstrap's put of model gpt-4:\n%s", last, r.stdout)
		}
		if r := tollgate(t, env, "catalog", "put-service", "default/x", "--adapter", "grpc", "--base-url", "https://x.example"); r.code != 2 ||
			!strings.Contains(r.stderr, "openai") {
			t.Errorf("a bad adapter: want exit 2 naming the adapters, got:\n%s", r)
		}
	})

	tokenBefore := dev.token
	// stop sends SIGINT to the process, or with ctrlC to its process group,
	// and checks that the databases it started are gone once it has exited.
	stop := func(t *testing.T, d *devProc, ctrlC bool) {
		t.Helper()
		code, took, err := d.interrupt(ctrlC, stopTimeout)
		if err != nil {
			t.Fatalf("tollgate dev: %v", err)
		}
		t.Logf("stopped in %s", took.Round(time.Millisecond))
		if code != 0 {
			t.Errorf("exit code after SIGINT %d, want 0", code)
		}
		if left := dbProcesses(dataDir); len(left) > 0 {
			t.Errorf("database processes left after tollgate dev exited: %v", left)
		}
	}
	t.Run("edge", func(t *testing.T) {
		if dev.edgeURL == "" {
			t.Fatalf("the banner names no edge proxy:\n%s", dev.stdout.String())
		}
		out := dev.keysJSON(t, "create", "--name", "edge-user", "--models", "gpt-4,claude-3-opus", "--rpm", "100",
			"--permissions", "predict,read")
		secret, _ := out["api_key"].(string)
		chat := `{"model":"gpt-4","messages":[{"role":"user","content":"hello"}],"max_tokens":20}`
		// The edge learns of the key from the bus: give it a moment.
		var r httpResult
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			r = request(t, "POST", dev.edgeURL+"/v1/chat/completions", secret, chat)
			if r.status != 401 || time.Now().After(deadline) {
				break
			}
		}
		r.want(t, 200)
		if got := path(r.json, "usage", "completion_tokens"); got != float64(20) {
			t.Errorf("completion_tokens %v, want 20 from the mock; body %s", got, r.body)
		}
		request(t, "POST", dev.edgeURL+"/v1/chat/completions", secret, strings.Replace(chat, "gpt-4", "gpt-3.5-turbo", 1)).want(t, 403)
		models := request(t, "GET", dev.edgeURL+"/v1/models", secret, "").want(t, 200)
		if ids := path(models.json, "data"); len(ids.([]any)) != 2 {
			t.Errorf("models: want gpt-4 and claude-3-opus, got %s", models.body)
		}
		msg := `{"model":"claude-3-opus","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
		if r := request(t, "POST", dev.edgeURL+"/v1/messages", secret, msg).want(t, 200); path(r.json, "type") != "message" {
			t.Errorf("anthropic answer: %s", r.body)
		}
		request(t, "POST", dev.edgeURL+"/v1/chat/completions", "en_unknown", chat).want(t, 401)

		// Metering folds both answered requests; keys balance shows them.
		id, _ := out["id"].(string)
		var bal map[string]any
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			bal = dev.keysJSON(t, "balance", id)
			if bal["requests"] == "2" || time.Now().After(deadline) {
				break
			}
		}
		if bal["requests"] != "2" {
			t.Fatalf("keys balance: want 2 requests folded, got %v", bal)
		}
		rpm := bal["limits"].([]any)[0].(map[string]any)
		if rpm["metric"] != "requests" || rpm["amount"] != "100" || rpm["window"] != "rolling" {
			t.Errorf("keys balance limits: %v", bal["limits"])
		}
	})

	t.Run("edge role on its own", func(t *testing.T) { testEdgeRole(t, dev) })

	t.Run("SIGINT stops everything", func(t *testing.T) {
		// The check for leftovers finds the running servers, so it can find leftovers.
		running := dbProcesses(dataDir)
		if !containsExe(running, "postgres") || !containsExe(running, "clickhouse") {
			t.Errorf("while dev runs, want postgres and clickhouse-server processes under %s; found %v", dataDir, running)
		}
		stop(t, dev, false)
	})

	t.Run("restart keeps keys", func(t *testing.T) {
		if !dev.exited() {
			t.Fatal("the first tollgate dev is still running")
		}
		dev2 := startDev(t, dataDir)
		if dev2.token != tokenBefore {
			t.Errorf("admin token changed across restarts")
		}
		ids := listedIDs(t, dev2.keysJSON(t, "list"))
		for _, id := range made {
			if ids[id] == nil {
				t.Errorf("key %s from before the restart is not listed", id)
			}
		}
		for id, want := range map[string][2]string{firstID: {"renamed", "revoked"}, secondID: {"second", "active"}, restID: {"enclava", "revoked"}} {
			if k := ids[id]; k != nil && (k["name"] != want[0] || k["status"] != want[1]) {
				t.Errorf("key %s after restart: name %v status %v, want %s %s", id, k["name"], k["status"], want[0], want[1])
			}
		}
		if k := ids[firstID]; k != nil && path(limit(k, "METRIC_SPEND", "INTERVAL_DAY"), "amount") != "10.5" {
			t.Errorf("first key's limits after restart: %v", k["limits"])
		}
		// The pepper was kept, so secrets issued before still authenticate.
		if r := dev2.keys(t, "list", "--token", writerSecret); r.code != 0 || !strings.Contains(r.stdout, writerID) {
			t.Errorf("the writer key after restart: want exit code 0 listing its key:\n%s", r)
		}
		// And the new process accepts changes.
		dev2.keysOK(t, "update", secondID, "--description", "after restart")

		t.Run("a second dev on the same data dir is refused", func(t *testing.T) {
			before := dbProcesses(dataDir)
			dev3 := launchDev(t, dataDir)
			err := dev3.waitReady(startTimeout)
			if after := dbProcesses(dataDir); !maps.Equal(before, after) {
				t.Errorf("the first dev's databases were replaced: before %v, after %v", before, after)
			}
			if r := dev2.keys(t, "list"); r.code != 0 || !strings.Contains(r.stdout, secondID) {
				t.Errorf("the first tollgate dev no longer works:\n%s", r)
			}
			switch {
			case err == nil:
				t.Errorf("a second tollgate dev started on %s, in use by the first (pid %d); want it refused", dataDir, dev2.cmd.Process.Pid)
				if _, _, err := dev3.interrupt(false, stopTimeout); err != nil {
					t.Errorf("second tollgate dev: %v", err)
				}
			case errors.Is(err, errExited):
				if code := dev3.cmd.ProcessState.ExitCode(); code == 0 {
					t.Errorf("the refused second tollgate dev exited with code 0")
				}
				if !strings.Contains(dev3.stderr.String(), dataDir) {
					t.Errorf("the refusal does not name the data dir %s:\n%s", dataDir, dev3.stderr.String())
				}
			default:
				t.Error(err)
			}
		})

		stop(t, dev2, true)
	})

	t.Logf("whole run %s", time.Since(began).Round(time.Millisecond))
}

// wantField checks that a REST error names field first.
func wantField(field string) func(t *testing.T, r httpResult) {
	return func(t *testing.T, r httpResult) {
		t.Helper()
		if got := path(r.json, "error", "fields", 0, "field"); got != field {
			t.Errorf("error.fields[0].field = %v, want %s: %s", got, field, r.body)
		}
	}
}

func containsExe(procs map[int]string, name string) bool {
	for _, line := range procs {
		exe, _, _ := strings.Cut(line, " ")
		if strings.Contains(filepath.Base(exe), name) {
			return true
		}
	}
	return false
}

// equalJSON compares a decoded JSON array with want.
func equalJSON[T comparable](got any, want []T) bool {
	a, ok := got.([]any)
	if !ok || len(a) != len(want) {
		return false
	}
	for i := range a {
		if v, ok := a[i].(T); !ok || v != want[i] {
			return false
		}
	}
	return true
}
