package edge

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/h1"
)

// newUpstream is the one client to every upstream: h1.Transport, which
// sends each request on the calling goroutine (see its package comment),
// with net/http's Transport for what it does not do (requests through an
// HTTP proxy of the environment).
func newUpstream(headerTimeout time.Duration) *h1.Transport {
	var proxy func(*url.URL) (*url.URL, error)
	if proxyConfigured() {
		proxy = func(u *url.URL) (*url.URL, error) { return http.ProxyFromEnvironment(&http.Request{URL: u}) }
	}
	t := h1.New(headerTimeout, proxy)
	t.Fallback = noAnswerFallback{newTransport(headerTimeout)}
	return t
}

// noAnswerFallback makes net/http's response-header timeout h1.ErrNoAnswer,
// so that a request sent through a proxy and not answered in time is
// answered and metered as one sent directly (504, its input charged).
// net/http's error is unexported; it is known by its message.
type noAnswerFallback struct{ *http.Transport }

func (f noAnswerFallback) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := f.Transport.RoundTrip(r)
	if err != nil && strings.Contains(err.Error(), "timeout awaiting response headers") {
		err = fmt.Errorf("%w: %w", h1.ErrNoAnswer, err)
	}
	return res, err
}

// proxyConfigured reports whether the environment names an HTTP proxy.
func proxyConfigured() bool {
	for _, name := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		if os.Getenv(name) != "" {
			return true
		}
	}
	return false
}

// newTransport is net/http's transport, for requests through a proxy: many
// idle connections per host (the hot path must not dial), no automatic
// decompression (the edge reads usage from the bytes it passes on).
func newTransport(headerTimeout time.Duration) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: headerTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     true,
	}
}

// baseURL is svc's base URL, parsed once per distinct value.
func (s *Server) baseURL(raw string) (*url.URL, error) {
	if u, ok := s.bases.Load(raw); ok {
		return u.(*url.URL), nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("service base URL %q: %w", raw, err)
	}
	s.bases.Store(raw, u)
	return u, nil
}

// credentials resolves a service's upstream credential from the environment
// or a file. Files are re-read at most every few seconds, so a rotated
// mounted secret is picked up without a restart.
type credentials struct {
	mu    sync.Mutex
	files map[string]cachedFile
}

type cachedFile struct {
	value string
	read  time.Time
}

const credentialFileTTL = 5 * time.Second

// apply sets the credential header of svc on h. A missing credential is an
// error the operator must fix; its message names where it was looked for,
// never a value.
func (c *credentials) apply(h http.Header, svc *eventsv1.Service, now time.Time) error {
	cred := svc.GetCredential()
	if cred == nil {
		return nil // an upstream that needs none (the dev mock, an internal service)
	}
	var value string
	switch src := cred.GetSource().(type) {
	case *eventsv1.Credential_Env:
		value = os.Getenv(src.Env)
		if value == "" {
			return fmt.Errorf("service %s: environment variable %s is not set on this edge", svc.GetId(), src.Env)
		}
	case *eventsv1.Credential_File:
		v, err := c.file(src.File, now)
		if err != nil {
			return fmt.Errorf("service %s: credential file: %w", svc.GetId(), err)
		}
		value = v
	}
	header := cred.GetHeader()
	switch {
	case header != "":
		h.Set(header, value)
	case svc.GetAdapter() == eventsv1.Adapter_ADAPTER_ANTHROPIC:
		h.Set("x-api-key", value)
	default:
		h.Set("Authorization", "Bearer "+value)
	}
	return nil
}

func (c *credentials) file(path string, now time.Time) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.files[path]; ok && now.Sub(f.read) < credentialFileTTL {
		return f.value, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if c.files == nil {
		c.files = map[string]cachedFile{}
	}
	v := strings.TrimSpace(string(data))
	c.files[path] = cachedFile{value: v, read: now}
	return v, nil
}

// forwardedRequestHeaders are the client headers an upstream may need.
// Everything else (the client's credential above all) stays at the edge.
var forwardedRequestHeaders = []string{
	"Content-Type", "Accept", "User-Agent", "Anthropic-Version", "Anthropic-Beta", "Openai-Beta",
	"X-Stainless-Lang", "X-Stainless-Package-Version", "Idempotency-Key",
}

// droppedResponseHeaders are hop-by-hop headers, the upstream's own rate
// limit headers, which describe the provider account, not the caller's key,
// the headers that name the operator's provider organisation or project, and
// the provider's cookies (set for the operator's credential, not the client).
func droppedResponseHeader(name string) bool {
	switch name {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Trailer", "Te", "Content-Length",
		"Set-Cookie", "Set-Cookie2", "Openai-Organization", "Openai-Project", "Anthropic-Organization-Id":
		return true
	}
	return strings.HasPrefix(name, "X-Ratelimit-") || strings.HasPrefix(name, "Anthropic-Ratelimit-")
}
