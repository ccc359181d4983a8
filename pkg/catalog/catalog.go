// Package catalog keeps the services Tollgate forwards to and the models and
// prices it meters, in the CATALOG KV bucket, and gives edges and metering a
// live in-memory view of it.
package catalog

import (
	"encoding/base64"
	"net/url"
	"regexp"
	"strings"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/llm"
	"github.com/tollgate/tollgate/pkg/money"
)

// Bucket is the KV bucket of the catalog.
const Bucket = "CATALOG"

var (
	segment         = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	envName         = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	headerName      = regexp.MustCompile(`^[A-Za-z0-9-]+$`)
	maxModelName    = 200
	maxModelPrice   = int64(1_000_000) * int64(money.Dollar) // $1M per million tokens: a typo guard
	maxRequestPrice = int64(1_000) * int64(money.Dollar)     // $1,000 per request: a typo guard
	maxOutputTokens = int64(llm.MaxTokensLimit)              // what a request's max_tokens may be
)

// ServiceKey is the KV key of a service "<account>/<service>".
func ServiceKey(id string) string {
	return "services." + strings.Replace(id, "/", ".", 1)
}

// ModelKey is the KV key of a model. Model names may hold dots, colons and
// more, which KV keys may not: they are base64url-encoded.
func ModelKey(name string) string {
	return "models." + base64.RawURLEncoding.EncodeToString([]byte(name))
}

// SplitServiceID splits "<account>/<service>".
func SplitServiceID(id string) (account, service string, ok bool) {
	account, service, ok = strings.Cut(id, "/")
	return account, service, ok && segment.MatchString(account) && segment.MatchString(service)
}

// CheckServiceID adds to v, under field, why id is not "<account>/<service>".
func CheckServiceID(field, id string, v *keys.ValidationError) {
	if _, _, ok := SplitServiceID(id); !ok {
		v.Add(field, "%q is not <account>/<service> in lower-case letters, digits, '_' or '-'", id)
	}
}

// ValidateService checks a service entry field by field.
func ValidateService(s *eventsv1.Service) error {
	var v keys.ValidationError
	CheckServiceID("id", s.GetId(), &v)
	switch s.GetAdapter() {
	case eventsv1.Adapter_ADAPTER_OPENAI, eventsv1.Adapter_ADAPTER_ANTHROPIC, eventsv1.Adapter_ADAPTER_HTTP:
	default:
		v.Add("adapter", "use OPENAI, ANTHROPIC or HTTP")
	}
	// The edge appends each request's path and query to the base URL: a
	// query of its own would be dropped, a fragment is never sent, and a user
	// or password would be stored in clear in the catalog (and read back by
	// every reader of it) rather than on the edge.
	raw := s.GetBaseUrl()
	u, err := url.Parse(raw)
	if err == nil && u.User != nil {
		v.Add("base_url", "must not contain a user or password; put the credential in credential.env or credential.file "+
			"(credential.header names the header it goes in, e.g. Authorization for a \"Basic ...\" value)")
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(raw, "?#") {
		if strings.Contains(raw, "@") { // perhaps a credential: not repeated in an error
			v.Add("base_url", "is not an http(s) URL without a query or fragment, e.g. https://api.openai.com")
		} else {
			v.Add("base_url", "%q is not an http(s) URL without a query or fragment, e.g. https://api.openai.com", raw)
		}
	}
	if c := s.GetCredential(); c != nil {
		switch src := c.GetSource().(type) {
		case *eventsv1.Credential_Env:
			if !envName.MatchString(src.Env) {
				v.Add("credential.env", "%q is not an environment variable name", src.Env)
			}
		case *eventsv1.Credential_File:
			if !strings.HasPrefix(src.File, "/") {
				v.Add("credential.file", "must be an absolute path")
			}
		case nil:
			v.Add("credential", "name env or file (the credential itself is never stored)")
		}
		if c.GetHeader() != "" && !headerName.MatchString(c.GetHeader()) {
			v.Add("credential.header", "%q is not a header name", c.GetHeader())
		}
	}
	if p := s.GetRequestPrice(); p < 0 || p > maxRequestPrice {
		v.Add("request_price", "must be between 0 and 1000 dollars")
	}
	return v.Err()
}

// ValidateModel checks a model entry field by field.
func ValidateModel(m *eventsv1.Model) error {
	var v keys.ValidationError
	if n := m.GetName(); n == "" || len(n) > maxModelName || strings.TrimSpace(n) != n || strings.ContainsAny(n, "\x00\n\r") {
		v.Add("name", "must be 1 to %d characters without surrounding spaces", maxModelName)
	}
	CheckServiceID("service", m.GetService(), &v)
	for field, p := range map[string]int64{"input_price_per_million": m.GetInputPricePerMillion(), "output_price_per_million": m.GetOutputPricePerMillion()} {
		if p < 0 || p > maxModelPrice {
			v.Add(field, "must be between 0 and 1000000 dollars")
		}
	}
	if mt := m.GetMaxOutputTokens(); mt <= 0 || mt > maxOutputTokens {
		v.Add("max_output_tokens", "must be a positive number of tokens, at most %d (the worst case reserved when a request sets no max_tokens)", maxOutputTokens)
	}
	return v.Err()
}

// Cost prices a request: tokens at the model's prices, rounded up to the next
// nano-dollar (the provider is never undercharged by rounding). m may be nil
// for HTTP services, priced per request.
func Cost(s *eventsv1.Service, m *eventsv1.Model, input, output int64) int64 {
	if m == nil {
		return s.GetRequestPrice()
	}
	in, ok1 := money.MulDivCeil(input, m.GetInputPricePerMillion(), 1_000_000)
	out, ok2 := money.MulDivCeil(output, m.GetOutputPricePerMillion(), 1_000_000)
	if !ok1 || !ok2 || in > (1<<62) || out > (1<<62) {
		return 1 << 62 // absurd token counts: cap rather than overflow
	}
	return in + out
}

// FormatPrice shows nano-dollars as decimal dollars.
func FormatPrice(n int64) string { return money.Nanos(n).String() }

// ParsePrice reads decimal dollars for field, recording an error in v.
func ParsePrice(field, s string, v *keys.ValidationError) int64 {
	if s == "" {
		return 0
	}
	n, err := money.Parse(s)
	if err != nil {
		v.Add(field, "%s (write dollars, e.g. \"0.15\")", err)
	}
	return int64(n)
}
