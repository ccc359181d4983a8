package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/auth"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/money"
)

// The REST routes of Enclava's internal API (/api-internal/v1/api-keys), mapped
// onto keyService. Enclava's update is partial, so PUT and PATCH both change
// only the fields present; a field sent as null clears it.

const restBase = "/api-internal/v1/api-keys"

// maxRESTBody bounds a REST request body; keys are small.
const maxRESTBody = 1 << 20

type restHandler struct {
	svc  *keyService
	auth *auth.Authenticator
	log  *slog.Logger
}

func (h *restHandler) register(mux *http.ServeMux) {
	mux.HandleFunc("POST "+restBase, h.handle(h.create))
	mux.HandleFunc("GET "+restBase, h.handle(h.list))
	mux.HandleFunc("GET "+restBase+"/{id}", h.handle(h.get))
	mux.HandleFunc("PUT "+restBase+"/{id}", h.handle(h.update))
	mux.HandleFunc("PATCH "+restBase+"/{id}", h.handle(h.update))
	mux.HandleFunc("DELETE "+restBase+"/{id}", h.handle(h.revoke))
	mux.HandleFunc("POST "+restBase+"/{id}/regenerate", h.handle(h.rotate))
}

// restCall is one REST request after authentication.
type restCall struct {
	r *http.Request
	p auth.Principal
}

func (h *restHandler) handle(fn func(restCall) (int, any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := h.auth.Authenticate(r.Context(), r.Header)
		if err == nil {
			var status int
			var body any
			status, body, err = fn(restCall{r: r, p: p})
			if err == nil {
				writeJSON(w, status, body)
				return
			}
		}
		h.writeError(w, r, err)
	}
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(body)
}

// restError is the JSON error body: a message that says what to fix, a code,
// and for validation errors one entry per field.
type restError struct {
	Message string       `json:"message"`
	Type    string       `json:"type"`
	Code    string       `json:"code"`
	Fields  []fieldError `json:"fields,omitempty"`
}

type fieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// errBadJSON marks a body that is not the JSON object we expect (400, not 422).
var errBadJSON = errors.New("bad json")

func (h *restHandler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := httpStatus(err)
	e := restError{Message: err.Error(), Type: "invalid_request_error", Code: strings.ReplaceAll(strings.ToLower(http.StatusText(status)), " ", "_")}
	var ve *keys.ValidationError
	switch {
	case errors.Is(err, errBadJSON):
		status, e.Code = http.StatusBadRequest, "invalid_json"
		e.Message = strings.TrimPrefix(err.Error(), errBadJSON.Error()+": ")
	case errors.As(err, &ve):
		e.Code = "invalid_value"
		var msgs []string
		for _, f := range ve.Fields {
			f.Field = restFieldName(f.Field)
			e.Fields = append(e.Fields, fieldError{f.Field, f.Message})
			msgs = append(msgs, f.Error())
		}
		e.Message = "invalid key: " + strings.Join(msgs, "; ")
	case status == http.StatusUnauthorized:
		e.Type = "authentication_error"
	case status == http.StatusForbidden:
		e.Type = "permission_error"
	case status == http.StatusInternalServerError:
		h.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		e.Type, e.Message = "server_error", internalMessage
	}
	writeJSON(w, status, map[string]restError{"error": e})
}

// restFieldName names a KeySettings field the way the REST caller wrote it.
func restFieldName(f string) string {
	for api, rest := range map[string]string{"ttl": "expires_in", "expires_at": "expires_in",
		"alert_thresholds": "alert_threshold", "models": "allowed_models", "services": "allowed_services"} {
		if f == api || strings.HasPrefix(f, api+".") || strings.HasPrefix(f, api+"[") {
			if api == "alert_thresholds" {
				return rest // one threshold in Enclava's API
			}
			return rest + strings.TrimPrefix(f, api)
		}
	}
	return f
}

// restBody is the request body: the raw value of each field present.
type restBody map[string]json.RawMessage

func readBody(r *http.Request) (restBody, error) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxRESTBody+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read body: %v", errBadJSON, err)
	}
	if len(data) > maxRESTBody {
		return nil, fmt.Errorf("%w: the body is larger than %d bytes", errBadJSON, maxRESTBody)
	}
	var body restBody
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&body); err != nil || body == nil {
		return nil, fmt.Errorf("%w: the body must be a JSON object: %v", errBadJSON, jsonProblem(err))
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: the body must hold one JSON object", errBadJSON)
	}
	return body, nil
}

func jsonProblem(err error) string {
	if err == nil {
		return "got null"
	}
	return err.Error()
}

// restFields are the fields the REST routes accept, in the order errors name them.
var restFields = []string{
	"name", "description", "purpose", "allowed_models", "allowed_services", "permissions",
	"daily_spend_limit", "monthly_spend_limit", "daily_token_limit", "alert_threshold",
	"expires_in", "notify_emails", "max_request_bytes", "masking_key",
}

// calendarLimits are Enclava's limit fields: calendar windows.
var calendarLimits = map[string]struct {
	metric   eventsv1.Metric
	interval eventsv1.Interval
}{
	"daily_spend_limit":   {eventsv1.Metric_METRIC_SPEND, eventsv1.Interval_INTERVAL_DAY},
	"monthly_spend_limit": {eventsv1.Metric_METRIC_SPEND, eventsv1.Interval_INTERVAL_MONTH},
	"daily_token_limit":   {eventsv1.Metric_METRIC_TOKENS, eventsv1.Interval_INTERVAL_DAY},
}

// toSettings turns a REST body into KeySettings and the mask of what it sets.
// limits are the key's current limits, which the body's limit fields amend.
func toSettings(body restBody, limits []*adminv1.Limit) (*adminv1.KeySettings, []string, error) {
	var v keys.ValidationError
	s := &adminv1.KeySettings{}
	var mask []string
	names := make([]string, 0, len(body))
	for f := range body {
		names = append(names, f)
	}
	sort.Strings(names)
	limitsChanged := false
	for _, f := range names {
		raw := body[f]
		null := string(bytes.TrimSpace(raw)) == "null"
		str := func(dst *string) {
			if !null && json.Unmarshal(raw, dst) != nil {
				v.Add(f, "must be a string")
			}
		}
		strs := func() []string {
			var out []string
			if !null && json.Unmarshal(raw, &out) != nil {
				v.Add(f, "must be a list of strings")
			}
			return out
		}
		switch f {
		case "name", "description", "purpose", "masking_key":
			var val string
			str(&val)
			switch f {
			case "name":
				s.Name = val
			case "description":
				s.Description = val
			case "purpose":
				s.Purpose = val
			default:
				s.MaskingKey = val
			}
			mask = append(mask, f)
		case "allowed_models", "allowed_services":
			// Enclava: an empty list means every model.
			filter := &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_ALL}
			if names := strs(); len(names) > 0 {
				filter = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED, Names: names}
			}
			if f == "allowed_models" {
				s.Models, mask = filter, append(mask, "models")
			} else {
				s.Services, mask = filter, append(mask, "services")
			}
		case "permissions":
			for i, name := range strs() {
				p, ok := eventsv1.Permission_value["PERMISSION_"+strings.ToUpper(name)]
				if !ok || p == 0 {
					v.Add(fmt.Sprintf("permissions[%d]", i), "unknown permission %q; use read, write or predict", name)
				}
				s.Permissions = append(s.Permissions, eventsv1.Permission(p))
			}
			mask = append(mask, "permissions")
		case "notify_emails":
			s.NotifyEmails, mask = strs(), append(mask, "notify_emails")
		case "expires_in":
			str(&s.Ttl)
			mask = append(mask, "ttl")
		case "max_request_bytes":
			if !null {
				var n int64
				if json.Unmarshal(raw, &n) != nil {
					v.Add(f, "must be a whole number of bytes")
				}
				s.MaxRequestBytes = &n
			}
			mask = append(mask, "max_request_bytes")
		case "alert_threshold":
			if !null {
				var t float64
				if json.Unmarshal(raw, &t) != nil {
					v.Add(f, "must be a number in (0, 1], e.g. 0.8")
				}
				s.AlertThresholds = []float64{t}
			}
			mask = append(mask, "alert_thresholds")
		case "daily_spend_limit", "monthly_spend_limit", "daily_token_limit":
			cl := calendarLimits[f]
			limits = slices.DeleteFunc(slices.Clone(limits), func(l *adminv1.Limit) bool {
				return l.GetMetric() == cl.metric && l.GetInterval() == cl.interval
			})
			limitsChanged = true
			if null {
				continue
			}
			amount, ok := restAmount(f, raw, cl.metric, &v)
			if ok {
				limits = append(limits, &adminv1.Limit{Metric: cl.metric, Interval: cl.interval, Amount: amount, Window: eventsv1.Window_WINDOW_CALENDAR})
			}
		default:
			v.Add(f, "unknown field; accepted fields are %s", strings.Join(restFields, ", "))
		}
	}
	if limitsChanged {
		s.Limits, mask = limits, append(mask, "limits")
	}
	return s, mask, v.Err()
}

// restAmount reads a limit amount given as a JSON number or string, exactly:
// money is never parsed through a float.
func restAmount(field string, raw json.RawMessage, m eventsv1.Metric, v *keys.ValidationError) (string, bool) {
	if m == eventsv1.Metric_METRIC_SPEND {
		n, err := money.ParseJSON(raw)
		if err != nil {
			v.Add(field, "%s (write dollars, e.g. 10.50 or \"10.50\")", err)
			return "", false
		}
		return n.String(), true
	}
	text := strings.Trim(string(bytes.TrimSpace(raw)), `"`)
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil || n < 0 {
		v.Add(field, "%s must be a whole number of tokens, 0 or more", text)
		return "", false
	}
	return strconv.FormatInt(n, 10), true
}

func (h *restHandler) create(c restCall) (int, any, error) {
	body, err := readBody(c.r)
	if err != nil {
		return 0, nil, err
	}
	settings, _, err := toSettings(body, nil)
	if err != nil {
		return 0, nil, err
	}
	res, err := h.svc.create(c.r.Context(), c.p, &adminv1.CreateKeyRequest{Account: c.r.URL.Query().Get("account"), Key: settings})
	if err != nil {
		return 0, nil, err
	}
	out := restKey(res.GetKey())
	out["api_key"] = res.GetSecret()
	return http.StatusCreated, out, nil
}

func (h *restHandler) get(c restCall) (int, any, error) {
	res, err := h.svc.get(c.r.Context(), c.p, &adminv1.GetKeyRequest{Account: c.r.URL.Query().Get("account"), Id: c.r.PathValue("id")})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, restKey(res.GetKey()), nil
}

func (h *restHandler) list(c restCall) (int, any, error) {
	q := c.r.URL.Query()
	req := &adminv1.ListKeysRequest{Account: q.Get("account"), Status: q.Get("status"), Name: q.Get("name"), PageToken: q.Get("page_token")}
	if ps := q.Get("page_size"); ps != "" {
		n, err := strconv.Atoi(ps)
		if err != nil {
			var v keys.ValidationError
			v.Add("page_size", "%q is not a whole number", ps)
			return 0, nil, &v
		}
		req.PageSize = int32(min(max(n, -1), 1001))
	}
	res, err := h.svc.list(c.r.Context(), c.p, req)
	if err != nil {
		return 0, nil, err
	}
	out := make([]map[string]any, 0, len(res.GetKeys()))
	for _, k := range res.GetKeys() {
		out = append(out, restKey(k))
	}
	return http.StatusOK, map[string]any{"api_keys": out, "next_page_token": res.GetNextPageToken()}, nil
}

func (h *restHandler) update(c restCall) (int, any, error) {
	body, err := readBody(c.r)
	if err != nil {
		return 0, nil, err
	}
	acct, id := c.r.URL.Query().Get("account"), c.r.PathValue("id")
	cur, err := h.svc.get(c.r.Context(), c.p, &adminv1.GetKeyRequest{Account: acct, Id: id})
	if err != nil {
		return 0, nil, err
	}
	settings, mask, err := toSettings(body, cur.GetKey().GetLimits())
	if err != nil {
		return 0, nil, err
	}
	if len(mask) == 0 {
		var v keys.ValidationError
		v.Add("", "the body changes nothing; send one or more of %s", strings.Join(restFields, ", "))
		return 0, nil, &v
	}
	// The limits were merged with what we just read: apply only on that revision.
	res, err := h.svc.update(c.r.Context(), c.p, &adminv1.UpdateKeyRequest{
		Account: acct, Id: id, Key: settings, UpdateMask: &fieldmaskpb.FieldMask{Paths: mask},
		ExpectedRevision: cur.GetKey().GetRevision(),
	})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, restKey(res.GetKey()), nil
}

func (h *restHandler) revoke(c restCall) (int, any, error) {
	res, err := h.svc.revoke(c.r.Context(), c.p, &adminv1.RevokeKeyRequest{Account: c.r.URL.Query().Get("account"), Id: c.r.PathValue("id")})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"message": "API key revoked", "api_key": restKey(res.GetKey())}, nil
}

func (h *restHandler) rotate(c restCall) (int, any, error) {
	q := c.r.URL.Query()
	res, err := h.svc.rotate(c.r.Context(), c.p, &adminv1.RotateKeyRequest{Account: q.Get("account"), Id: c.r.PathValue("id"), GracePeriod: q.Get("grace_period")})
	if err != nil {
		return 0, nil, err
	}
	out := restKey(res.GetKey())
	out["api_key"] = res.GetSecret()
	return http.StatusOK, out, nil
}

// restKey is a key in Enclava's shape, plus Tollgate's own fields.
func restKey(k *adminv1.Key) map[string]any {
	out := map[string]any{
		"id": k.GetId(), "account": k.GetAccount(), "name": k.GetName(), "description": k.GetDescription(),
		"purpose": k.GetPurpose(), "key_prefix": k.GetPrefix(), "hint": k.GetHint(), "status": k.GetStatus(),
		"is_active": k.GetStatus() == string(keys.StatusActive), "allowed_models": filterNames(k.GetModels()),
		"allowed_services": filterNames(k.GetServices()), "notify_emails": nonNil(k.GetNotifyEmails()),
		"max_request_bytes": k.GetMaxRequestBytes(), "masking_key": k.GetMaskingKey(), "revision": k.GetRevision(),
		"daily_spend_limit": nil, "monthly_spend_limit": nil, "daily_token_limit": nil, "alert_threshold": nil,
		"created_at": k.GetCreatedAt().AsTime(), "expires_at": nil,
	}
	var perms []string
	for _, p := range k.GetPermissions() {
		perms = append(perms, strings.ToLower(strings.TrimPrefix(p.String(), "PERMISSION_")))
	}
	out["permissions"] = nonNil(perms)
	if k.GetExpiresAt() != nil {
		out["expires_at"] = k.GetExpiresAt().AsTime()
	}
	if len(k.GetAlertThresholds()) > 0 {
		out["alert_threshold"] = k.GetAlertThresholds()[0]
	}
	for f, cl := range calendarLimits {
		for _, l := range k.GetLimits() {
			if l.GetMetric() == cl.metric && l.GetInterval() == cl.interval {
				out[f] = l.GetAmount()
			}
		}
	}
	return out
}

// filterNames shows a filter as Enclava does: [] for all; NONE shows as null.
func filterNames(f *eventsv1.Filter) any {
	switch f.GetMode() {
	case eventsv1.FilterMode_FILTER_MODE_SELECTED:
		return f.GetNames()
	case eventsv1.FilterMode_FILTER_MODE_NONE:
		return nil
	}
	return []string{}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
