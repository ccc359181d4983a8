package mockllm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate/tollgate/pkg/llm"
)

// Options configure a mock. The zero value gives the defaults.
type Options struct {
	// Chunks is how many pieces a streamed reply is cut into (default 8);
	// a reply shorter than that has one token per piece. X-Mock-Chunks
	// overrides it per request.
	Chunks int
	// MaxReplyTokens caps the reply of one choice (default 128), so that a
	// request for max_tokens 4096 stays cheap to serve.
	MaxReplyTokens int
	// EmbeddingDims is the length of each embedding (default 8).
	EmbeddingDims int
	// Models are what GET /v1/models lists (default DefaultModels). Any
	// model is served whether listed or not.
	Models []string
	// MaxDelay caps X-Mock-Delay-Ms and X-Mock-Chunk-Delay-Ms (default 60s).
	MaxDelay time.Duration
	// MaxBodyBytes is the largest request body read (default 32 MiB,
	// Anthropic's limit); a larger one gets 413.
	MaxBodyBytes int64
}

// DefaultModels are listed by GET /v1/models when Options.Models is empty.
var DefaultModels = []string{"gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo-instruct",
	"text-embedding-3-small", "claude-3-5-sonnet-latest", "claude-3-5-haiku-latest"}

const (
	defaultChunks       = 8
	defaultReplyTokens  = 128
	defaultDims         = 8
	defaultMaxDelay     = time.Minute
	defaultMaxBodyBytes = 32 << 20
	maxChunks           = 10_000
)

// Validate reports options out of range. Zero values are fine (defaults).
func (o Options) Validate() error {
	var errs []error
	check := func(name string, v, limit int) {
		if v < 0 || v > limit {
			errs = append(errs, fmt.Errorf("mockllm: %s must be between 0 (the default) and %d, not %d", name, limit, v))
		}
	}
	check("Chunks", o.Chunks, maxChunks)
	check("MaxReplyTokens", o.MaxReplyTokens, 1_000_000)
	check("EmbeddingDims", o.EmbeddingDims, 65_536)
	if o.MaxDelay < 0 {
		errs = append(errs, errors.New("mockllm: MaxDelay must not be negative"))
	}
	if o.MaxBodyBytes < 0 {
		errs = append(errs, errors.New("mockllm: MaxBodyBytes must not be negative"))
	}
	for _, m := range o.Models {
		if m == "" {
			errs = append(errs, errors.New("mockllm: Models must not contain an empty name"))
			break
		}
	}
	return errors.Join(errs...)
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Chunks, defaultChunks)
	def(&o.MaxReplyTokens, defaultReplyTokens)
	def(&o.EmbeddingDims, defaultDims)
	if o.MaxDelay == 0 {
		o.MaxDelay = defaultMaxDelay
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = defaultMaxBodyBytes
	}
	if len(o.Models) == 0 {
		o.Models = DefaultModels
	}
	return o
}

// Handler is the mock upstream; see the package documentation.
type Handler struct {
	opts   Options
	models [2][]byte // GET /v1/models in OpenAI's and Anthropic's shape
}

// New returns a mock with the given options.
func New(opts Options) (*Handler, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	h := &Handler{opts: opts.withDefaults()}
	h.models = modelLists(h.opts.Models)
	return h, nil
}

// The control headers, for tests and load scripts.
const (
	HeaderDelayMs      = "X-Mock-Delay-Ms"       // wait before answering
	HeaderChunkDelayMs = "X-Mock-Chunk-Delay-Ms" // wait between generated stream events (usage and the end follow at once)
	HeaderStatus       = "X-Mock-Status"         // answer this status (400-599) with a provider-style error
	HeaderBreakAfter   = "X-Mock-Break-After"    // drop the connection after N events (or N body bytes)
	HeaderOmitUsage    = "X-Mock-Omit-Usage"     // "1": report no usage at all
	HeaderChunks       = "X-Mock-Chunks"         // cut the streamed reply into this many pieces
)

// controls are the control headers of one request.
type controls struct {
	delay, chunkDelay time.Duration
	status            int
	breakAfter        int // -1: never
	omitUsage         bool
	chunks            int
}

func (h *Handler) controls(r *http.Request) (controls, error) {
	c := controls{breakAfter: -1, chunks: h.opts.Chunks}
	var errs []error
	num := func(name string, limit int) (int, bool) {
		v := r.Header.Get(name)
		if v == "" {
			return 0, false
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > limit {
			errs = append(errs, fmt.Errorf("%s must be a whole number from 0 to %d, not %q", name, limit, v))
			return 0, false
		}
		return n, true
	}
	maxMs := int(h.opts.MaxDelay / time.Millisecond)
	if n, ok := num(HeaderDelayMs, maxMs); ok {
		c.delay = time.Duration(n) * time.Millisecond
	}
	if n, ok := num(HeaderChunkDelayMs, maxMs); ok {
		c.chunkDelay = time.Duration(n) * time.Millisecond
	}
	if n, ok := num(HeaderStatus, 599); ok {
		if n != http.StatusOK && n < 400 {
			errs = append(errs, fmt.Errorf("%s must be 200 or a status from 400 to 599, not %d", HeaderStatus, n))
		}
		c.status = n
	}
	if n, ok := num(HeaderBreakAfter, 1<<30); ok {
		c.breakAfter = n
	}
	if n, ok := num(HeaderChunks, maxChunks); ok && n > 0 {
		c.chunks = n
	}
	if v := r.Header.Get(HeaderOmitUsage); v != "" {
		omit, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s must be 1 or 0, not %q", HeaderOmitUsage, v))
		}
		c.omitUsage = omit
	}
	return c, errors.Join(errs...)
}

// ServeHTTP answers the LLM endpoints in their providers' shapes and any
// other request with a small JSON echo.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind := llm.KindOf(r.Method, r.URL.Path)
	ctl, err := h.controls(r)
	if err != nil {
		providerError(w, kind, http.StatusBadRequest, "invalid_mock_header", strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}

	// Read the body before any delay: net/http notices a client hanging up
	// (and cancels the request's context) only once the body has been read.
	in := bufs.Get().(*[]byte)
	defer putBuf(in)
	var body []byte
	var size int64
	if kind != llm.Other {
		body, err = readBody(r, (*in)[:0], h.opts.MaxBodyBytes)
		*in = body[:0]
		size = int64(len(body))
	} else {
		size, err = io.Copy(io.Discard, io.LimitReader(r.Body, h.opts.MaxBodyBytes+1))
	}
	if err != nil {
		return // the client is gone
	}

	if !sleep(r.Context(), ctl.delay) {
		return
	}
	switch {
	case ctl.status >= 400:
		writeStatus(w, kind, ctl.status)
	case size > h.opts.MaxBodyBytes:
		providerError(w, kind, http.StatusRequestEntityTooLarge, "request_too_large",
			"the request body is larger than "+strconv.FormatInt(h.opts.MaxBodyBytes, 10)+" bytes")
	case kind != llm.Other:
		h.serveLLM(w, r, kind, body, ctl)
	case r.Method == http.MethodGet && r.URL.Path == "/v1/models":
		dialect := llm.OpenAI
		if r.Header.Get("anthropic-version") != "" {
			dialect = llm.Anthropic
		}
		writeBody(w, http.StatusOK, "application/json", h.models[dialect], ctl.breakAfter)
	default:
		h.echo(w, r, size, ctl)
	}
}

// providerError answers an error in the provider's own shape: OpenAI's with
// its code, Anthropic's without one (llm.WriteError adds Tollgate's code to
// Anthropic-style errors; a provider does not).
func providerError(w http.ResponseWriter, kind llm.Kind, status int, code, msg string) {
	if kind.Dialect() == llm.Anthropic {
		llm.WriteAnthropicError(w, status, "", msg)
		return
	}
	llm.WriteError(w, kind, status, code, msg)
}

// writeStatus answers an X-Mock-Status error the way the provider would.
func writeStatus(w http.ResponseWriter, kind llm.Kind, status int) {
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable || status == 529 {
		w.Header().Set("Retry-After", "1")
	}
	msg := fmt.Sprintf("mock error %d (%s)", status, HeaderStatus)
	code := ""
	if status == http.StatusTooManyRequests {
		code = "rate_limit_exceeded"
	}
	providerError(w, kind, status, code, msg)
}

// sleep is waitFor; a variable so that a test can see where a stream waits
// without timing it.
var sleep = waitFor

// waitFor waits for d or until ctx ends, and reports whether it waited.
func waitFor(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// bufs recycles the buffers request bodies are read and answers built in.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// putBuf returns a buffer to bufs, unless one huge body made it too big to
// be worth keeping around.
func putBuf(b *[]byte) {
	if cap(*b) <= 1<<20 {
		bufs.Put(b)
	}
}

// readBody appends at most limit+1 bytes of r's body to buf, so that a
// caller can tell a body over the limit.
func readBody(r *http.Request, buf []byte, limit int64) ([]byte, error) {
	if n := r.ContentLength; n > 0 && n <= limit {
		buf = slices.Grow(buf, int(n)+1) // +1 to see EOF without growing
	}
	lr := io.LimitReader(r.Body, limit+1)
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, 4096)
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case err == io.EOF:
			return buf, nil
		case err != nil:
			return buf, err
		}
	}
}

// writeBody answers body whole, or with X-Mock-Break-After only its first
// breakAfter bytes before dropping the connection, as a proxy or provider
// that dies mid-answer would.
func writeBody(w http.ResponseWriter, status int, contentType string, body []byte, breakAfter int) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if breakAfter < 0 || breakAfter >= len(body) {
		w.Write(body) //nolint:errcheck // the client is gone; nothing to do
		return
	}
	w.Write(body[:breakAfter])            //nolint:errcheck // as above
	http.NewResponseController(w).Flush() //nolint:errcheck // as above
	panic(http.ErrAbortHandler)           // net/http closes the connection without a word
}
