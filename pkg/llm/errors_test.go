package llm

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"reflect"
	"testing"
)

func TestErrorTypes(t *testing.T) {
	tests := []struct {
		status            int
		openai, anthropic string
	}{
		{400, "invalid_request_error", "invalid_request_error"},
		{401, "authentication_error", "authentication_error"},
		{402, "invalid_request_error", "billing_error"},
		{403, "permission_error", "permission_error"},
		{404, "not_found_error", "not_found_error"},
		{413, "invalid_request_error", "request_too_large"},
		{422, "invalid_request_error", "invalid_request_error"},
		{429, "rate_limit_error", "rate_limit_error"},
		{500, "server_error", "api_error"},
		{502, "server_error", "api_error"},
		{503, "server_error", "overloaded_error"},
		{504, "server_error", "timeout_error"},
		{529, "server_error", "overloaded_error"},
	}
	for _, tt := range tests {
		if got := OpenAIErrorType(tt.status); got != tt.openai {
			t.Errorf("OpenAIErrorType(%d) = %q, want %q", tt.status, got, tt.openai)
		}
		if got := AnthropicErrorType(tt.status); got != tt.anthropic {
			t.Errorf("AnthropicErrorType(%d) = %q, want %q", tt.status, got, tt.anthropic)
		}
	}
}

func TestWriteOpenAIError(t *testing.T) {
	w := httptest.NewRecorder()
	WriteOpenAIError(w, 401, "", "invalid_api_key", "Incorrect API key provided: \"en_...abcd\".\n\xff")
	assertJSON(t, w, 401, map[string]any{"error": map[string]any{
		"message": "Incorrect API key provided: \"en_...abcd\".\n\ufffd",
		"type":    "authentication_error",
		"param":   nil,
		"code":    "invalid_api_key",
	}})

	w = httptest.NewRecorder()
	WriteOpenAIError(w, 429, "tokens", "", "Rate limit reached")
	assertJSON(t, w, 429, map[string]any{"error": map[string]any{
		"message": "Rate limit reached", "type": "tokens", "param": nil, "code": nil,
	}})
}

func TestWriteAnthropicError(t *testing.T) {
	w := httptest.NewRecorder()
	WriteAnthropicError(w, 413, "", "Request exceeds the maximum size \x01")
	assertJSON(t, w, 413, map[string]any{"type": "error", "error": map[string]any{
		"type": "request_too_large", "message": "Request exceeds the maximum size \x01",
	}})
}

// Anthropic's body carries Tollgate's code in an extra "code" field of
// "error" (the SDKs ignore fields they do not know), so that revoked,
// expired and unknown keys, all 401 authentication_error, can be told apart
// by more than their message.
func TestWriteError(t *testing.T) {
	w := httptest.NewRecorder()
	WriteError(w, Messages, 403, "model_not_allowed", "Model not allowed")
	assertJSON(t, w, 403, map[string]any{"type": "error", "error": map[string]any{
		"type": "permission_error", "message": "Model not allowed", "code": "model_not_allowed",
	}})
	for _, code := range []string{"invalid_api_key", "key_revoked", "key_expired"} {
		w = httptest.NewRecorder()
		WriteError(w, Messages, 401, code, "This API key cannot be used.")
		assertJSON(t, w, 401, map[string]any{"type": "error", "error": map[string]any{
			"type": "authentication_error", "message": "This API key cannot be used.", "code": code,
		}})
	}
	// No code, no field: Anthropic's own errors have none.
	w = httptest.NewRecorder()
	WriteError(w, Messages, 503, "", "Overloaded \"now\"")
	assertJSON(t, w, 503, map[string]any{"type": "error", "error": map[string]any{
		"type": "overloaded_error", "message": "Overloaded \"now\"",
	}})
	w = httptest.NewRecorder()
	WriteError(w, Messages, 400, "bad\"code\n", "m")
	assertJSON(t, w, 400, map[string]any{"type": "error", "error": map[string]any{
		"type": "invalid_request_error", "message": "m", "code": "bad\"code\n",
	}})
	w = httptest.NewRecorder()
	WriteError(w, Chat, 403, "model_not_allowed", "Model not allowed")
	assertJSON(t, w, 403, map[string]any{"error": map[string]any{
		"type": "permission_error", "message": "Model not allowed", "param": nil, "code": "model_not_allowed",
	}})
}

// A refused request body names the field at fault in "param", as OpenAI
// does; Anthropic's body has no such field, but carries the same code.
func TestWriteRequestError(t *testing.T) {
	_, err := ParseRequest(Chat, []byte(`{"model":"gpt-4","messages":[],"max_tokens":"x"}`))
	if err == nil {
		t.Fatal("ParseRequest accepted a string max_tokens")
	}
	w := httptest.NewRecorder()
	WriteRequestError(w, Chat, err)
	assertJSON(t, w, 400, map[string]any{"error": map[string]any{
		"message": err.Error(), "type": "invalid_request_error", "param": "max_tokens", "code": "invalid_request",
	}})
	w = httptest.NewRecorder()
	WriteRequestError(w, Messages, err)
	assertJSON(t, w, 400, map[string]any{"type": "error", "error": map[string]any{
		"type": "invalid_request_error", "message": err.Error(), "code": "invalid_request",
	}})
	w = httptest.NewRecorder()
	WriteRequestError(w, Chat, errors.New("not JSON"))
	assertJSON(t, w, 400, map[string]any{"error": map[string]any{
		"message": "not JSON", "type": "invalid_request_error", "param": nil, "code": "invalid_request",
	}})
}

func assertJSON(t *testing.T, w *httptest.ResponseRecorder, status int, want map[string]any) {
	t.Helper()
	if w.Code != status {
		t.Errorf("status %d, want %d", w.Code, status)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var got map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatalf("body %q: %v", w.Body, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("body %s\nwant %v", w.Body, want)
	}
}
