package edge

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"

	"github.com/tollgate/tollgate/pkg/auth"
	"github.com/tollgate/tollgate/pkg/limits"
	"github.com/tollgate/tollgate/pkg/llm"
	"github.com/tollgate/tollgate/pkg/money"
	"github.com/tollgate/tollgate/services/edge/internal/keyring"
)

// The checks of DESIGN.md section 5, in its order. Each writes the error
// itself (in the dialect of the endpoint) and reports whether to go on.

// authenticate finds the key; unknown, revoked and expired keys get 401 with
// codes that tell them apart.
//
// Until the edge has loaded what it serves from (Server.loading: just after
// a start, or while the bus has not been reached yet) it answers 503 with
// Retry-After instead: a
// valid key must not be told it is invalid because this edge has not read it
// yet.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, kind llm.Kind, now time.Time) (*keyring.Entry, bool) {
	if !s.loaded() {
		w.Header().Set("Retry-After", "1")
		llm.WriteError(w, kind, http.StatusServiceUnavailable, "not_ready", "This Tollgate edge is still loading its keys, their balances and the catalog; try again in a moment.")
		return nil, false
	}
	secret := auth.Token(r.Header)
	e, verdict := s.keys.Lookup(secret, now)
	switch verdict {
	case keyring.Found:
		return e, true
	case keyring.Revoked:
		llm.WriteError(w, kind, http.StatusUnauthorized, "key_revoked", "This API key has been revoked.")
	case keyring.Expired:
		llm.WriteError(w, kind, http.StatusUnauthorized, "key_expired", "This API key has expired.")
	default:
		msg := "Incorrect API key provided. Send it as Authorization: Bearer <key>, x-api-key or api-key."
		if secret == "" {
			msg = "No API key provided. Send it as Authorization: Bearer <key>, x-api-key or api-key."
		}
		llm.WriteError(w, kind, http.StatusUnauthorized, "invalid_api_key", msg)
	}
	return nil, false
}

// readBody reads the body up to the key's maximum: Content-Length is checked
// first, and a chunked body is cut off by a limited reader without reading
// the rest.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, kind llm.Kind, e *keyring.Entry) ([]byte, bool) {
	limit := e.Key.GetMaxRequestBytes()
	if limit <= 0 {
		limit = s.cfg.MaxRequestBytes
	}
	tooLarge := func() ([]byte, bool) {
		llm.WriteError(w, kind, http.StatusRequestEntityTooLarge, "request_too_large",
			fmt.Sprintf("The request body is larger than this key allows (%d bytes).", limit))
		return nil, false
	}
	if r.ContentLength > limit {
		return tooLarge()
	}
	var body []byte
	var err error
	if r.ContentLength >= 0 {
		// The server's body reader stops at Content-Length: one buffer
		// of that size, no growing.
		body, err = readExactly(r.Body, r.ContentLength)
	} else {
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return tooLarge()
	}
	if err != nil {
		llm.WriteError(w, kind, http.StatusBadRequest, "invalid_body", "The request body could not be read: "+err.Error())
		return nil, false
	}
	return body, true
}

// readExactly reads a body of n bytes (its Content-Length) into a buffer of
// that size. When the body ends early it returns what came, and an error.
//
// Up to preallocMax the buffer is allocated at once; beyond, it grows as the
// bytes arrive: a declared length is only a claim, and a request of headers
// alone must not make the edge allocate a key's whole maximum (which may be
// large) or what an upstream announces.
func readExactly(r io.Reader, n int64) ([]byte, error) {
	if n > preallocMax {
		b := bytes.NewBuffer(make([]byte, 0, preallocMax))
		got, err := b.ReadFrom(io.LimitReader(r, n))
		if err == nil && got < n {
			err = io.ErrUnexpectedEOF
		}
		return b.Bytes(), err
	}
	buf := make([]byte, n)
	got, err := io.ReadFull(r, buf)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return buf[:got], err
}

// preallocMax is the largest body buffer allocated before its bytes arrive.
const preallocMax = 1 << 20

// reserve reserves the worst case on the key's limits, or answers 429.
func (s *Server) reserve(w http.ResponseWriter, kind llm.Kind, e *keyring.Entry, worst limits.Usage, now time.Time) (limits.Reservation, bool) {
	st := e.State
	st.Mu.Lock()
	res, denial := st.Limits.Reserve(worst, now)
	setRateLimitHeaders(w.Header(), st.Limits, now)
	st.Mu.Unlock()
	if denial == nil {
		return res, true
	}
	secs := int64(denial.RetryAfter / time.Second)
	if denial.Never {
		secs = 86400 // a zero limit never refills; tell clients to stop trying for a while
	}
	w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
	llm.WriteError(w, kind, http.StatusTooManyRequests, "rate_limit_exceeded", denialMessage(denial))
	return res, false
}

func denialMessage(d *limits.Denial) string {
	metric := map[eventsv1.Metric]string{eventsv1.Metric_METRIC_SPEND: "spend", eventsv1.Metric_METRIC_TOKENS: "token", eventsv1.Metric_METRIC_REQUESTS: "request"}[d.Limit.Metric]
	interval := strings.ToLower(strings.TrimPrefix(d.Limit.Interval.String(), "INTERVAL_"))
	window := strings.ToLower(strings.TrimPrefix(d.Limit.Window.String(), "WINDOW_"))
	if d.Never {
		return fmt.Sprintf("This key's %s %s limit per %s is zero.", window, metric, interval)
	}
	return fmt.Sprintf("This key has reached its %s %s limit per %s; retry after %s.", window, metric, interval, d.RetryAfter)
}

type rateLimitMetric struct {
	metric                           eventsv1.Metric
	limitKey, remainingKey, resetKey string // canonical header names
	dollars                          bool   // the amounts are nano-dollars, written in dollars
}

func newRateLimitMetric(m eventsv1.Metric, name string, dollars bool) rateLimitMetric {
	return rateLimitMetric{metric: m, dollars: dollars, limitKey: "X-Ratelimit-Limit-" + name,
		remainingKey: "X-Ratelimit-Remaining-" + name, resetKey: "X-Ratelimit-Reset-" + name}
}

var rateLimitMetrics = [...]rateLimitMetric{
	newRateLimitMetric(eventsv1.Metric_METRIC_REQUESTS, "Requests", false),
	newRateLimitMetric(eventsv1.Metric_METRIC_TOKENS, "Tokens", false),
	newRateLimitMetric(eventsv1.Metric_METRIC_SPEND, "Spend", true),
}

func (m *rateLimitMetric) appendAmount(b []byte, n int64) []byte {
	if m.dollars {
		return money.Nanos(n).AppendFormat(b, 0)
	}
	return strconv.AppendInt(b, n, 10)
}

// setRateLimitHeaders writes x-ratelimit-{limit,remaining,reset}-{requests,
// tokens,spend} from the tightest limit of each metric. Spend is in dollars.
// This runs on every request, so it allocates twice whatever the key's
// limits: the header names are built once, all the values are written into
// one buffer made into one string, and the headers' value slices share one
// array.
func setRateLimitHeaders(h http.Header, set *limits.Set, now time.Time) {
	var (
		buf  [256]byte
		ends [3 * len(rateLimitMetrics)]int
		used [len(rateLimitMetrics)]bool
	)
	b := buf[:0]
	for i := range rateLimitMetrics {
		m := &rateLimitMetrics[i]
		ls, ok := set.Tightest(m.metric, now)
		if !ok {
			continue
		}
		// Reset as OpenAI means it: when the limit is back to its initial
		// state, counting what requests in flight hold as spent.
		rule := ls.Rule
		reset := rule.Status(rule.Debit(ls.State, ls.Reserved, now), 0, now).ResetAt.Sub(now)
		b = m.appendAmount(b, ls.Amount)
		ends[3*i] = len(b)
		b = m.appendAmount(b, max(ls.Remaining, 0))
		ends[3*i+1] = len(b)
		b = appendDuration(b, max(reset, 0).Round(time.Millisecond))
		ends[3*i+2] = len(b)
		used[i] = true
	}
	all := string(b)
	vals := make([]string, 0, len(ends))
	start := 0
	for i := range rateLimitMetrics {
		if !used[i] {
			continue
		}
		m := &rateLimitMetrics[i]
		for j, key := range [3]string{m.limitKey, m.remainingKey, m.resetKey} {
			end := ends[3*i+j]
			vals = append(vals, all[start:end])
			h[key] = vals[len(vals)-1 : len(vals) : len(vals)]
			start = end
		}
	}
}

// appendDuration appends d, a non-negative whole number of milliseconds, as
// time.Duration.String writes it ("0s", "250ms", "1m2.5s", "1h0m0s"), which
// allocates its result.
func appendDuration(b []byte, d time.Duration) []byte {
	switch {
	case d <= 0:
		return append(b, "0s"...)
	case d < time.Second:
		return append(strconv.AppendInt(b, int64(d/time.Millisecond), 10), "ms"...)
	}
	h, m := d/time.Hour, d%time.Hour/time.Minute
	if h > 0 {
		b = append(strconv.AppendInt(b, int64(h), 10), 'h')
	}
	if h > 0 || m > 0 {
		b = append(strconv.AppendInt(b, int64(m), 10), 'm')
	}
	b = strconv.AppendInt(b, int64(d%time.Minute/time.Second), 10)
	if ms := int64(d % time.Second / time.Millisecond); ms > 0 {
		digits := [3]byte{byte('0' + ms/100), byte('0' + ms/10%10), byte('0' + ms%10)}
		n := 3
		for digits[n-1] == '0' {
			n--
		}
		b = append(append(b, '.'), digits[:n]...)
	}
	return append(b, 's')
}
