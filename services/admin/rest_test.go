package admin

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// restDo sends a JSON request and decodes the JSON answer.
func restDo(t *testing.T, ts *testServer, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), method, ts.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("%s %s: answer is not a JSON object: %s", method, path, data)
	}
	return res.StatusCode, out
}

func TestEnclavaREST(t *testing.T) {
	ts := newAdmin(t)
	const base = "/api-internal/v1/api-keys"

	status, created := restDo(t, ts, "POST", base, testToken, `{"name":"enclava","description":"d","allowed_models":[],
		"daily_spend_limit":10.50,"monthly_spend_limit":"100","daily_token_limit":100000,"alert_threshold":0.8}`)
	if status != http.StatusCreated {
		t.Fatalf("create: %d %v", status, created)
	}
	secret, _ := created["api_key"].(string)
	id, _ := created["id"].(string)
	if !strings.HasPrefix(secret, "en_") || id == "" {
		t.Fatalf("create answer lacks api_key or id: %v", created)
	}
	for field, want := range map[string]any{"daily_spend_limit": "10.5", "monthly_spend_limit": "100", "daily_token_limit": "100000", "alert_threshold": 0.8, "name": "enclava", "is_active": true} {
		if created[field] != want {
			t.Errorf("%s = %v, want %v", field, created[field], want)
		}
	}
	if models, ok := created["allowed_models"].([]any); !ok || len(models) != 0 {
		t.Errorf("allowed_models = %v, want [] (all models)", created["allowed_models"])
	}

	status, one := restDo(t, ts, "GET", base+"/"+id, testToken, "")
	if status != 200 || one["id"] != id || one["api_key"] != nil {
		t.Fatalf("get: %d %v", status, one)
	}
	status, list := restDo(t, ts, "GET", base, testToken, "")
	if keys, _ := list["api_keys"].([]any); status != 200 || len(keys) != 1 {
		t.Fatalf("list: %d %v", status, list)
	}

	status, patched := restDo(t, ts, "PATCH", base+"/"+id, testToken, `{"daily_spend_limit": 20, "allowed_models": ["gpt-4"]}`)
	if status != 200 || patched["daily_spend_limit"] != "20" || patched["monthly_spend_limit"] != "100" || patched["daily_token_limit"] != "100000" {
		t.Fatalf("patch must change only what it names: %d %v", status, patched)
	}
	status, put := restDo(t, ts, "PUT", base+"/"+id, testToken, `{"monthly_spend_limit": null, "name": "renamed"}`)
	if status != 200 || put["monthly_spend_limit"] != nil || put["daily_spend_limit"] != "20" || put["name"] != "renamed" {
		t.Fatalf("put with null must clear that limit only: %d %v", status, put)
	}

	status, del := restDo(t, ts, "DELETE", base+"/"+id, testToken, "")
	if status != 200 {
		t.Fatalf("delete: %d %v", status, del)
	}
	if _, after := restDo(t, ts, "GET", base+"/"+id, testToken, ""); after["status"] != "revoked" || after["is_active"] != false {
		t.Fatalf("after delete: %v", after)
	}

	errorCases := []struct {
		name, method, path, token, body string
		status                          int
		field                           string
	}{
		{"bad json", "POST", base, testToken, `{"name":`, 400, ""},
		{"not an object", "POST", base, testToken, `[1,2]`, 400, ""},
		{"negative money", "POST", base, testToken, `{"name":"x","daily_spend_limit":-1}`, 422, "daily_spend_limit"},
		{"too precise", "POST", base, testToken, `{"name":"x","monthly_spend_limit":"0.0000000001"}`, 422, "monthly_spend_limit"},
		{"tokens not whole", "POST", base, testToken, `{"name":"x","daily_token_limit":1.5}`, 422, "daily_token_limit"},
		{"threshold", "POST", base, testToken, `{"name":"x","alert_threshold":1.5}`, 422, "alert_threshold"},
		{"ttl unit", "POST", base, testToken, `{"name":"x","expires_in":"5y"}`, 422, "expires_in"},
		{"empty name", "POST", base, testToken, `{"name":""}`, 422, "name"},
		{"name not a string", "POST", base, testToken, `{"name":5}`, 422, "name"},
		{"unknown field", "POST", base, testToken, `{"name":"x","colour":"red"}`, 422, "colour"},
		{"no token", "GET", base, "", ``, 401, ""},
		{"unknown key", "GET", base + "/key_00000000000000000000000000", testToken, ``, 404, ""},
		{"patch nothing", "PATCH", base + "/" + id, testToken, `{}`, 422, ""},
	}
	for _, tc := range errorCases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := restDo(t, ts, tc.method, tc.path, tc.token, tc.body)
			e, _ := body["error"].(map[string]any)
			if status != tc.status || e == nil || e["message"] == "" {
				t.Fatalf("want %d with error.message, got %d %v", tc.status, status, body)
			}
			if tc.field != "" {
				fields, _ := e["fields"].([]any)
				found := false
				for _, f := range fields {
					if f.(map[string]any)["field"] == tc.field {
						found = true
					}
				}
				if !found {
					t.Fatalf("error does not name %s: %v", tc.field, e)
				}
			}
		})
	}
}

// FuzzRESTBody: whatever the body, the REST parser answers without panicking,
// and money it accepts survives exactly.
func FuzzRESTBody(f *testing.F) {
	for _, s := range []string{
		`{"name":"x","daily_spend_limit":10.50}`, `{"daily_spend_limit":"1e-9"}`, `{"allowed_models":["a",""]}`,
		`{"daily_token_limit":"12"}`, `{"alert_threshold":null}`, `{"max_request_bytes":-1}`, `{}`, `[]`, `null`, `{"a":1}{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, _ := http.NewRequest("POST", "/", bytes.NewReader(body))
		b, err := readBody(req)
		if err != nil {
			return
		}
		s, mask, err := toSettings(b, nil)
		if err != nil {
			return
		}
		for _, l := range s.GetLimits() {
			if l.GetAmount() == "" {
				t.Fatalf("accepted limit without amount: %v", l)
			}
		}
		_ = mask
	})
}
