package catalog

import (
	"errors"
	"strings"
	"testing"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/keys"
)

func TestValidateServiceBaseURL(t *testing.T) {
	tests := []struct {
		name, baseURL string
		// msg is a part of the base_url field error; "" means valid.
		msg string
	}{
		{"https", "https://api.openai.com", ""},
		{"with a path", "https://gateway.example.com/openai/", ""},
		{"http with a port", "http://10.0.0.7:8080", ""},
		{"escaped path", "https://example.com/a%2Fb/", ""},
		{"user and password", "https://user:s3cret-token@api.example.com/", "must not contain a user or password"},
		{"user only", "https://sk-live-0123456789@api.example.com", "must not contain a user or password"},
		{"password only", "https://:s3cret-token@api.example.com", "must not contain a user or password"},
		{"empty user info", "https://@api.example.com", "must not contain a user or password"},
		{"query", "https://api.example.com/?api-version=2024-02-01", "without a query or fragment"},
		{"empty query", "https://api.example.com/v1?", "without a query or fragment"},
		{"fragment", "https://api.example.com/#v1", "without a query or fragment"},
		{"empty fragment", "https://api.example.com/#", "without a query or fragment"},
		{"no scheme", "api.openai.com", "is not an http(s) URL"},
		{"unparsable, with a password", "https://user:s3cret token@api.example.com", "is not an http(s) URL"},
		{"no scheme, with a password", "user:s3cret@api.example.com", "is not an http(s) URL"},
		{"other scheme", "ftp://api.example.com", "is not an http(s) URL"},
		{"no host", "https:///v1", "is not an http(s) URL"},
		{"empty", "", "is not an http(s) URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateService(&eventsv1.Service{Id: "acme/openai", Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: tt.baseURL,
				Credential: &eventsv1.Credential{Source: &eventsv1.Credential_Env{Env: "OPENAI_API_KEY"}}})
			if tt.msg == "" {
				if err != nil {
					t.Fatalf("ValidateService(%q) = %v", tt.baseURL, err)
				}
				return
			}
			var ve *keys.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("ValidateService(%q) = %v, want a validation error", tt.baseURL, err)
			}
			var msgs []string
			for _, f := range ve.Fields {
				if f.Field != "base_url" {
					t.Errorf("unexpected field error %v", f)
					continue
				}
				msgs = append(msgs, f.Message)
			}
			if len(msgs) != 1 || !strings.Contains(msgs[0], tt.msg) {
				t.Fatalf("ValidateService(%q): base_url errors %q, want one saying %q", tt.baseURL, msgs, tt.msg)
			}
			// The error must not repeat a credential the URL carried.
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "sk-live") {
				t.Fatalf("ValidateService(%q) = %v: the error quotes the credential", tt.baseURL, err)
			}
		})
	}
}

func TestValidateServiceUserInfoNamesTheCredentialFields(t *testing.T) {
	err := ValidateService(&eventsv1.Service{Id: "acme/openai", Adapter: eventsv1.Adapter_ADAPTER_OPENAI,
		BaseUrl: "https://user:s3cret@api.example.com/?x=1"})
	var ve *keys.ValidationError
	if !errors.As(err, &ve) || len(ve.Fields) == 0 {
		t.Fatalf("ValidateService = %v, want a validation error", err)
	}
	for _, want := range []string{"credential.env", "credential.file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v does not name %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("%v quotes the password", err)
	}
}

// A model's maximum output is what a request without max_tokens reserves,
// times its choices: bounded as a request's max_tokens is, so that the
// product cannot wrap.
func TestValidateModelMaxOutputTokens(t *testing.T) {
	for _, tc := range []struct {
		max int64
		ok  bool
	}{{1, true}, {4096, true}, {1_000_000_000, true}, {0, false}, {-1, false}, {1_000_000_001, false}, {1 << 62, false}} {
		err := ValidateModel(&eventsv1.Model{Name: "m", Service: "acme/openai", MaxOutputTokens: tc.max})
		if (err == nil) != tc.ok {
			t.Errorf("max_output_tokens %d: %v, want ok %v", tc.max, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "max_output_tokens") {
			t.Errorf("max_output_tokens %d: %v does not name the field", tc.max, err)
		}
	}
}
