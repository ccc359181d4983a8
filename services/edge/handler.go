package edge

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/catalog"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/limits"
	"github.com/tollgate/tollgate/pkg/llm"
	"github.com/tollgate/tollgate/pkg/money"
	"github.com/tollgate/tollgate/services/edge/internal/keyring"
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	methods := map[string]string{}                // path -> the one method it answers
	for _, prefix := range []string{"", "/api"} { // Enclava serves the same under /api/v1
		for _, r := range []struct {
			method, path string
			h            http.HandlerFunc
		}{
			{"POST", "/v1/chat/completions", s.llmHandler(llm.Chat, "/v1/chat/completions")},
			{"POST", "/v1/completions", s.llmHandler(llm.Completions, "/v1/completions")},
			{"POST", "/v1/embeddings", s.llmHandler(llm.Embeddings, "/v1/embeddings")},
			{"POST", "/v1/messages", s.llmHandler(llm.Messages, "/v1/messages")},
			{"GET", "/v1/models", s.listModels},
		} {
			mux.HandleFunc(r.method+" "+prefix+r.path, r.h)
			methods[prefix+r.path] = r.method
		}
		mux.HandleFunc(prefix+"/v1/services/{account}/{service}/{path...}", s.serviceHandler)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.ready)
	mux.Handle("GET /metrics", s.metrics.handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if m, ok := methods[r.URL.Path]; ok {
			w.Header().Set("Allow", m)
			llm.WriteError(w, llm.KindOf(m, r.URL.Path), http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("%s %s: use %s.", r.Method, r.URL.Path, m))
			return
		}
		llm.WriteError(w, llm.Other, http.StatusNotFound, "unknown_url", fmt.Sprintf("Unknown request URL: %s %s.", r.Method, r.URL.Path))
	})
	return s.track(s.metrics.middleware(mux))
}

// llmHandler serves one LLM endpoint: the checks of DESIGN.md section 5 in
// order, then upstream, then settle and publish.
func (s *Server) llmHandler(kind llm.Kind, path string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		e, ok := s.authenticate(w, r, kind, start)
		if !ok {
			return
		}
		if !e.CanPredict() {
			llm.WriteError(w, kind, http.StatusForbidden, "permission_denied", "This API key may not call models: it lacks the PREDICT permission.")
			return
		}
		body, ok := s.readBody(w, r, kind, e)
		if !ok {
			return
		}
		req, err := llm.ParseRequest(kind, body)
		if err != nil {
			llm.WriteRequestError(w, kind, err)
			return
		}
		model, svc, ok := s.checkModel(w, kind, e, req.Model)
		if !ok {
			return
		}
		if !s.available(w, kind) {
			return
		}
		maxOut := req.MaxOutputTokens()
		if maxOut == 0 {
			maxOut = worstOutput(model.GetMaxOutputTokens(), req.Choices)
		}
		if kind == llm.Embeddings {
			maxOut = 0
		}
		worst := limits.Usage{InputTokens: req.InputTokensEstimate, OutputTokens: maxOut, Requests: 1,
			Spend: money.Nanos(catalog.Cost(svc, model, req.InputTokensEstimate, maxOut))}
		res, ok := s.reserve(w, kind, e, worst, start)
		if !ok {
			return
		}
		c := &call{kind: kind, svc: svc, method: http.MethodPost, path: path, body: body, requestBytes: int64(len(body)), inHeader: r.Header, inputEst: req.InputTokensEstimate}
		defer s.releaseOnPanic(w, e, res, c, model, start)
		if req.Stream && (kind == llm.Chat || kind == llm.Completions) && !req.IncludeUsage {
			if withUsage, err := llm.WithIncludeUsage(body); err == nil {
				c.body, c.stripUsage = withUsage, true
			}
		}
		out, err := s.forward(r.Context(), w, c)
		s.finish(w, r, e, res, c, model, out, err, start)
	}
}

// worstOutput is a model's maximum output for n choices. It saturates: a
// catalog entry written before max_output_tokens was bounded could
// otherwise wrap to a negative worst case, and reserve nothing.
func worstOutput(maxTokens, n int64) int64 {
	n = max(n, 1)
	if maxTokens > math.MaxInt64/n {
		return math.MaxInt64
	}
	return maxTokens * n
}

// finish answers a failed forward, settles the reservation to what the
// request really cost, and publishes its usage event, however it ended.
func (s *Server) finish(w http.ResponseWriter, r *http.Request, e *keyring.Entry, res limits.Reservation, c *call,
	model *eventsv1.Model, out outcome, err error, start time.Time) {
	if err != nil && out.status == 0 {
		status, code, msg := http.StatusBadGateway, "upstream_error", "The upstream service could not be reached."
		switch {
		case out.noAnswer:
			status, code, msg = http.StatusGatewayTimeout, "upstream_timeout", fmt.Sprintf("The upstream service sent no answer within %v.", s.cfg.UpstreamTimeout)
		case !errors.Is(err, errUpstream):
			status, code, msg = http.StatusServiceUnavailable, "upstream_unavailable", "The upstream service is not configured on this edge; an operator must fix its credential."
		}
		s.log.Warn("forward failed", "service", c.svc.GetId(), "err", err)
		llm.WriteError(w, c.kind, status, code, msg)
		out.status = status
	}
	u := out.usage
	if !out.usageKnown && (out.status < 400 || out.status == 499 || out.broken || out.noAnswer) && c.kind != llm.Other {
		u.InputTokens = max(u.InputTokens, c.inputEst)
		u.Estimated = true
	}
	cost := requestCost(c, model, out, u, err)
	s.settle(w, e, res, c, model, out, u, cost, start)
}

// settle publishes a request's usage event and settles its reservation to
// what the request cost.
func (s *Server) settle(w http.ResponseWriter, e *keyring.Entry, res limits.Reservation, c *call,
	model *eventsv1.Model, out outcome, u llm.Usage, cost int64, start time.Time) {
	now := time.Now()
	actual := limits.Usage{Spend: money.Nanos(cost), InputTokens: u.InputTokens, OutputTokens: u.OutputTokens, Requests: 1}
	ev := &eventsv1.UsageEvent{
		OccurredAt: timestamppb.New(start), KeyId: e.Key.GetId(), Account: e.Key.GetAccount(), Service: c.svc.GetId(),
		Endpoint: c.kind.String(), InputTokens: u.InputTokens, OutputTokens: u.OutputTokens, Cost: cost,
		RequestBytes: c.requestBytes, ResponseBytes: bytesWritten(w), Status: int32(out.status),
		LatencyUs: now.Sub(start).Microseconds(), Streamed: out.streamed, Estimated: u.Estimated,
	}
	if model != nil {
		ev.Model = model.GetName()
	}
	if c.kind == llm.Other {
		ev.Endpoint = "service"
	}
	// Published before the key's lock is taken: Publish waits while its
	// queue is full (the bus and the spool both far behind), and a key
	// change waiting for this lock holds the ring's, which every request
	// of every key needs. Until Settle the reservation holds the worst
	// case, and a balance that already folded the event is seen by Spent.
	seq := s.publish(ev)
	c.published = true
	st := e.State
	st.Mu.Lock()
	defer st.Mu.Unlock()
	c.settled = true
	if st.Folded(seq) {
		// A balance that holds this request came in meanwhile: its states
		// have the request already.
		st.Limits.Release(res)
		return
	}
	st.Limits.Settle(res, actual, now)
	st.Spent(seq, now, actual)
}

// releaseOnPanic, deferred once a request's worst case is reserved, settles
// the reservation if the handler panics before finish did: held forever, it
// would leave the key short at this edge until a restart. The request counts
// as one request and no money or tokens (whether it reached the upstream,
// and what passed, are unknown); its usage event says so (status 500,
// estimated, cost 0), so that every request has one. The panic goes on to
// the server.
func (s *Server) releaseOnPanic(w http.ResponseWriter, e *keyring.Entry, res limits.Reservation, c *call, model *eventsv1.Model, start time.Time) {
	if c.settled {
		return
	}
	p := recover()
	if p == nil {
		return
	}
	s.log.Error("edge: a request panicked; its reservation is released", "key", e.Key.GetId(), "panic", fmt.Sprint(p))
	if c.published { // settle itself panicked: its event is out, only the reservation is left
		st := e.State
		st.Mu.Lock()
		st.Limits.Release(res)
		c.settled = true
		st.Mu.Unlock()
	} else {
		s.settle(w, e, res, c, model, outcome{status: http.StatusInternalServerError}, llm.Usage{Estimated: true}, 0, start)
	}
	panic(p)
}

// checkModel finds the model a request names and applies the key's service
// and model filters (DESIGN.md section 5, step 4) before anything that would
// tell a key about models it may not use: a key limited to some models gets
// "Model not allowed" for any other name, whether the catalog has it or not,
// and never learns which adapter serves it.
func (s *Server) checkModel(w http.ResponseWriter, kind llm.Kind, e *keyring.Entry, name string) (*eventsv1.Model, *eventsv1.Service, bool) {
	model, svc, found := s.catalog.Snapshot().Model(name)
	switch {
	case found && !keys.Allows(e.Key.GetServices(), svc.GetId()):
		llm.WriteError(w, kind, http.StatusForbidden, "service_not_allowed", "Service not allowed")
	case !keys.Allows(e.Key.GetModels(), name):
		llm.WriteError(w, kind, http.StatusForbidden, "model_not_allowed", "Model not allowed")
	case !found:
		llm.WriteError(w, kind, http.StatusNotFound, "model_not_found", fmt.Sprintf("The model `%s` does not exist or is not served here.", name))
	case svc.GetAdapter() != adapterFor(kind):
		llm.WriteError(w, kind, http.StatusBadRequest, "wrong_endpoint", fmt.Sprintf("The model `%s` is served by an %s-compatible service; call it through %s.",
			name, strings.ToLower(strings.TrimPrefix(svc.GetAdapter().String(), "ADAPTER_")), endpointFor(svc.GetAdapter())))
	default:
		return model, svc, true
	}
	return nil, nil, false
}

func adapterFor(kind llm.Kind) eventsv1.Adapter {
	if kind == llm.Messages {
		return eventsv1.Adapter_ADAPTER_ANTHROPIC
	}
	return eventsv1.Adapter_ADAPTER_OPENAI
}

func endpointFor(a eventsv1.Adapter) string {
	switch a {
	case eventsv1.Adapter_ADAPTER_ANTHROPIC:
		return "/v1/messages"
	case eventsv1.Adapter_ADAPTER_OPENAI:
		return "/v1/chat/completions"
	}
	return "/v1/services/{account}/{service}/..."
}

// available refuses requests while the bus is away, when so configured.
func (s *Server) available(w http.ResponseWriter, kind llm.Kind) bool {
	if s.cfg.FailClosed && !s.busUp() {
		llm.WriteError(w, kind, http.StatusServiceUnavailable, "bus_unavailable", "Tollgate cannot meter requests right now; try again shortly.")
		return false
	}
	return true
}

// listModels answers GET /v1/models with the models this key may use.
func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	e, ok := s.authenticate(w, r, llm.Other, time.Now())
	if !ok {
		return
	}
	if !e.CanRead() {
		llm.WriteError(w, llm.Other, http.StatusForbidden, "permission_denied", "This API key may not list models: it lacks the READ permission.")
		return
	}
	snap := s.catalog.Snapshot()
	var b strings.Builder
	b.WriteString(`{"object":"list","data":[`)
	first := true
	for _, name := range snap.SortedModelNames() {
		m, svc, ok := snap.Model(name)
		if !ok || !keys.Allows(e.Key.GetModels(), name) || !keys.Allows(e.Key.GetServices(), svc.GetId()) {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		acct, _, _ := catalog.SplitServiceID(m.GetService())
		fmt.Fprintf(&b, `{"id":%q,"object":"model","created":%d,"owned_by":%q}`, name, m.GetUpdatedAt().GetSeconds(), acct)
	}
	b.WriteString("]}\n")
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(b.String()))
}

// serviceHandler proxies any registered HTTP service, metered per request.
func (s *Server) serviceHandler(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	kind := llm.Other
	e, ok := s.authenticate(w, r, kind, start)
	if !ok {
		return
	}
	if !e.CanPredict() {
		llm.WriteError(w, kind, http.StatusForbidden, "permission_denied", "This API key may not call services: it lacks the PREDICT permission.")
		return
	}
	body, ok := s.readBody(w, r, kind, e)
	if !ok {
		return
	}
	id := r.PathValue("account") + "/" + r.PathValue("service")
	// The filter first: a key limited to some services learns nothing about others.
	if !keys.Allows(e.Key.GetServices(), id) {
		llm.WriteError(w, kind, http.StatusForbidden, "service_not_allowed", "Service not allowed")
		return
	}
	svc, ok := s.catalog.Snapshot().Services[id]
	if !ok || svc.GetAdapter() != eventsv1.Adapter_ADAPTER_HTTP {
		llm.WriteError(w, kind, http.StatusNotFound, "service_not_found", fmt.Sprintf("No service %s is registered here.", id))
		return
	}
	if !s.available(w, kind) {
		return
	}
	res, ok := s.reserve(w, kind, e, limits.Usage{Spend: money.Nanos(svc.GetRequestPrice()), Requests: 1}, start)
	if !ok {
		return
	}
	c := &call{kind: kind, svc: svc, method: r.Method, path: "/" + r.PathValue("path"), query: r.URL.RawQuery, body: body, requestBytes: int64(len(body)), inHeader: r.Header}
	defer s.releaseOnPanic(w, e, res, c, nil, start)
	out, err := s.forward(r.Context(), w, c)
	s.finish(w, r, e, res, c, nil, out, err, start)
}

// requestCost is what a finished request is charged: tokens at the model's
// prices (estimated when upstream reported no usage), or the service's price
// per request. Nothing is charged for a request that never reached the
// upstream, for an LLM refusal that reports no usage, or for an HTTP service's
// own server error (or no answer). An HTTP service's answer that broke off
// or was too large to pass on is charged: the service answered.
func requestCost(c *call, model *eventsv1.Model, out outcome, u llm.Usage, err error) int64 {
	switch {
	case err != nil && !out.streamed && out.status != 499 && !out.noAnswer:
		return 0
	case c.kind == llm.Other:
		if out.status >= 500 && !(out.broken && out.upstream < 500) {
			return 0
		}
		return c.svc.GetRequestPrice()
	case out.status == 499: // the client hung up: charge what passed (estimated)
	case out.noAnswer: // the upstream took the request and did not answer: likewise
	case out.broken: // the upstream broke off: likewise
	case out.status >= 400 && !out.usageKnown:
		return 0
	}
	return catalog.Cost(c.svc, model, u.InputTokens, u.OutputTokens)
}
