package edge

import (
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
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, kind llm.Kind, now time.Time) (*keyring.Entry, bool) {
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
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
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
	format                           func(int64) string
}

func newRateLimitMetric(m eventsv1.Metric, name string, format func(int64) string) rateLimitMetric {
	return rateLimitMetric{metric: m, format: format, limitKey: "X-Ratelimit-Limit-" + name,
		remainingKey: "X-Ratelimit-Remaining-" + name, resetKey: "X-Ratelimit-Reset-" + name}
}

var rateLimitMetrics = []rateLimitMetric{
	newRateLimitMetric(eventsv1.Metric_METRIC_REQUESTS, "Requests", func(n int64) string { return strconv.FormatInt(n, 10) }),
	newRateLimitMetric(eventsv1.Metric_METRIC_TOKENS, "Tokens", func(n int64) string { return strconv.FormatInt(n, 10) }),
	newRateLimitMetric(eventsv1.Metric_METRIC_SPEND, "Spend", func(n int64) string { return money.Nanos(n).String() }),
}

// setRateLimitHeaders writes x-ratelimit-{limit,remaining,reset}-{requests,
// tokens,spend} from the tightest limit of each metric. Spend is in dollars.
// Header names are built once and the three values of a metric share one
// backing array: this runs on every request.
func setRateLimitHeaders(h http.Header, set *limits.Set, now time.Time) {
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
		vals := make([]string, 3)
		vals[0], vals[1] = m.format(ls.Amount), m.format(max(ls.Remaining, 0))
		vals[2] = (max(reset, 0)).Round(time.Millisecond).String()
		h[m.limitKey], h[m.remainingKey], h[m.resetKey] = vals[0:1:1], vals[1:2:2], vals[2:3:3]
	}
}
