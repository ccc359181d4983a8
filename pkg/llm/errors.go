package llm

import (
	"errors"
	"net/http"
	"strconv"
	"unicode/utf8"
)

// The official SDKs pick their exception from the HTTP status alone
// (BadRequestError for 400, AuthenticationError for 401, PermissionDenied for
// 403, NotFound for 404, RateLimitError for 429, InternalServerError for 5xx,
// and in Anthropic's RequestTooLarge for 413 and Overloaded for 529); the
// error type in the body is what people and logs read. Anthropic documents
// one type per status, used here as they are. OpenAI is less regular (a bad
// key comes back as invalid_request_error with code invalid_api_key), so for
// it these are the names OpenAI-compatible gateways settled on, and the code
// carries the detail.

// OpenAIErrorType is the error type OpenAI sends with status.
func OpenAIErrorType(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusConflict:
		return "conflict_error"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	}
	if status >= 500 {
		return "server_error"
	}
	return "invalid_request_error" // 400, 413, 422 and any other 4xx
}

// AnthropicErrorType is the error type Anthropic sends with status.
func AnthropicErrorType(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusPaymentRequired:
		return "billing_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	case http.StatusServiceUnavailable, 529:
		// Anthropic sends 529 when overloaded; a 503 from the edge means
		// the same to a client: retry later, nothing is wrong with you.
		return "overloaded_error"
	case http.StatusGatewayTimeout:
		return "timeout_error"
	}
	if status >= 500 {
		return "api_error"
	}
	return "invalid_request_error" // Anthropic's own word for other 4xx
}

// WriteOpenAIError answers with OpenAI's error body,
// {"error":{"message":...,"type":...,"param":null,"code":...}}. An empty typ
// is OpenAIErrorType(status); an empty code is written as null, as OpenAI
// does for errors without one.
func WriteOpenAIError(w http.ResponseWriter, status int, typ, code, message string) {
	writeOpenAIError(w, status, typ, code, "", message)
}

// WriteRequestError answers 400 to a request body that ParseRequest (or
// WithIncludeUsage) refused, in the dialect of kind. OpenAI's body names
// the offending field in "param", as OpenAI does.
func WriteRequestError(w http.ResponseWriter, kind Kind, err error) {
	if kind.Dialect() == Anthropic {
		writeAnthropicError(w, http.StatusBadRequest, "", "invalid_request", err.Error())
		return
	}
	var re *RequestError
	param := ""
	if errors.As(err, &re) {
		param = re.Param
	}
	writeOpenAIError(w, http.StatusBadRequest, "", "invalid_request", param, err.Error())
}

func writeOpenAIError(w http.ResponseWriter, status int, typ, code, param, message string) {
	if typ == "" {
		typ = OpenAIErrorType(status)
	}
	b := make([]byte, 0, 80+len(message)+len(typ)+len(code)+len(param))
	b = append(b, `{"error":{"message":`...)
	b = appendString(b, message)
	b = append(b, `,"type":`...)
	b = appendString(b, typ)
	b = append(b, `,"param":`...)
	if param == "" {
		b = append(b, "null"...)
	} else {
		b = appendString(b, param)
	}
	b = append(b, `,"code":`...)
	if code == "" {
		b = append(b, "null"...)
	} else {
		b = appendString(b, code)
	}
	b = append(b, "}}\n"...)
	writeJSON(w, status, b)
}

// WriteAnthropicError answers with Anthropic's error body,
// {"type":"error","error":{"type":...,"message":...}}. An empty typ is
// AnthropicErrorType(status).
func WriteAnthropicError(w http.ResponseWriter, status int, typ, message string) {
	writeAnthropicError(w, status, typ, "", message)
}

// writeAnthropicError is WriteAnthropicError with Tollgate's code, when
// there is one, in an extra "code" field of "error":
// {"type":"error","error":{"type":...,"message":...,"code":...}}. Anthropic
// sends no such field, and its SDKs ignore fields they do not know.
func writeAnthropicError(w http.ResponseWriter, status int, typ, code, message string) {
	if typ == "" {
		typ = AnthropicErrorType(status)
	}
	b := make([]byte, 0, 72+len(message)+len(typ)+len(code))
	b = append(b, `{"type":"error","error":{"type":`...)
	b = appendString(b, typ)
	b = append(b, `,"message":`...)
	b = appendString(b, message)
	if code != "" {
		b = append(b, `,"code":`...)
		b = appendString(b, code)
	}
	b = append(b, "}}\n"...)
	writeJSON(w, status, b)
}

// WriteError answers in the dialect of kind, with the type that goes with
// status and code in the body: OpenAI's "code", or the same extra field in
// Anthropic's "error" object (left out when code is empty).
func WriteError(w http.ResponseWriter, kind Kind, status int, code, message string) {
	if kind.Dialect() == Anthropic {
		writeAnthropicError(w, status, "", code, message)
		return
	}
	WriteOpenAIError(w, status, "", code, message)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body) //nolint:errcheck // the client is gone; nothing left to tell it
}

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does, so that the body stays valid whatever the message
// quotes from a request.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
