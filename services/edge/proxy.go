package edge

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/h1"
	"github.com/tollgate/tollgate/pkg/llm"
)

// call is one request on its way through the edge.
type call struct {
	kind     llm.Kind
	svc      *eventsv1.Service
	method   string
	path     string // upstream path, e.g. /v1/chat/completions
	query    string
	body     []byte
	inHeader http.Header
	// stripUsage: the edge asked upstream for a usage chunk the client did
	// not ask for; keep it from the client.
	stripUsage bool
	inputEst   int64
	// settled: the reservation has been settled (finish, or releaseOnPanic).
	settled bool
	// published: the request's usage event is queued.
	published bool
	// requestBytes is the size of the body the client sent (the usage
	// event's request_bytes), whatever the edge adds to it upstream.
	requestBytes int64
}

// outcome is what happened upstream and at the client.
type outcome struct {
	status     int
	usage      llm.Usage
	usageKnown bool
	streamed   bool
	// broken: a buffered answer broke off upstream; the client got a 502,
	// and what passed is charged, estimated.
	broken bool
	// upstream is the status the upstream answered (status may be the
	// edge's own, as for a broken answer); 0 if it did not answer.
	upstream int
	// noAnswer: the request went upstream and no answer came within the
	// upstream timeout (504); its input is charged, estimated, as for a
	// client that hung up.
	noAnswer bool
}

// errUpstream marks a failure to reach the upstream (502).
var errUpstream = errors.New("upstream unreachable")

// errTooLarge: a buffered answer longer than the edge passes on.
var errTooLarge = errors.New("upstream answer too large")

// forward sends c upstream and copies the answer to w as it arrives: streamed
// responses chunk by chunk, each flushed at once. It reads usage on the way.
func (s *Server) forward(ctx context.Context, w http.ResponseWriter, c *call) (outcome, error) {
	req, err := s.upstreamRequest(ctx, c)
	if err != nil {
		return outcome{}, err
	}
	for _, name := range forwardedRequestHeaders {
		if v := c.inHeader.Values(name); len(v) > 0 {
			req.Header[name] = v
		}
	}
	req.Header.Set("Accept-Encoding", "identity") // usage is read from the bytes
	if err := s.creds.apply(req.Header, c.svc, time.Now()); err != nil {
		return outcome{}, err
	}
	// Headers the mock upstream understands pass through, so tests and load
	// runs can hold requests in flight; real providers ignore them.
	for name, v := range c.inHeader {
		if len(name) > 7 && name[:7] == "X-Mock-" {
			req.Header[name] = v
		}
	}
	// RoundTrip, not a Client: an upstream's redirect goes back to the
	// client as it is, never followed with the key's money.
	res, err := s.upstream.RoundTrip(req)
	if err != nil {
		if ctx.Err() != nil {
			return outcome{status: 499}, ctx.Err()
		}
		if errors.Is(err, h1.ErrNoAnswer) {
			return outcome{noAnswer: true}, errors.Join(errUpstream, err)
		}
		return outcome{}, errors.Join(errUpstream, err)
	}
	defer res.Body.Close()
	if err := gunzipAnswer(res); err != nil {
		return outcome{}, errors.Join(errUpstream, err)
	}

	out := outcome{status: res.StatusCode, upstream: res.StatusCode}
	if isEventStream(res.Header.Get("Content-Type")) {
		copyResponseHeaders(w.Header(), res.Header)
		out.streamed = true
		err = s.copyStream(ctx, w, res, c, &out)
		return out, err
	}
	var body []byte
	switch n := res.ContentLength; {
	case c.method == http.MethodHead || res.StatusCode == http.StatusNoContent || res.StatusCode == http.StatusNotModified:
		// No body, whatever Content-Length says.
	case n > s.maxResponse:
		err = errTooLarge
	case n >= 0:
		body, err = readExactly(res.Body, n)
	default:
		body, err = io.ReadAll(io.LimitReader(res.Body, s.maxResponse+1))
		if err == nil && int64(len(body)) > s.maxResponse {
			body, err = body[:s.maxResponse], errTooLarge
		}
	}
	if err != nil && ctx.Err() != nil {
		out.status = 499
		return out, err
	}
	if c.kind != llm.Other {
		out.usage, out.usageKnown = llm.ParseUsage(c.kind, body)
		if !out.usageKnown {
			out.usage.OutputTokens = llm.EstimateOutput(c.kind, body)
		}
	}
	if err != nil {
		// The upstream broke off mid-answer (or sent more than the edge
		// buffers): the client gets an error, not a cut-off body under a
		// success status; what the upstream generated before the break is
		// metered, estimated, as for a broken stream.
		out.status, out.broken = http.StatusBadGateway, true
		msg := "The upstream service's answer broke off before its end."
		if errors.Is(err, errTooLarge) {
			msg = fmt.Sprintf("The upstream service's answer is larger than this edge passes on (%d bytes).", s.maxResponse)
		}
		llm.WriteError(w, c.kind, http.StatusBadGateway, "upstream_error", msg)
		return out, nil
	}
	copyResponseHeaders(w.Header(), res.Header)
	w.WriteHeader(res.StatusCode)
	if _, werr := w.Write(body); werr != nil {
		out.status = 499
	}
	return out, nil
}

// gunzipAnswer undoes a gzip Content-Encoding the upstream applied although
// the edge asked for identity: usage is read from the bytes, and compressed
// bytes would be metered as noise. The client gets the answer uncompressed.
// Other encodings are passed on as they are (and metered as estimated).
func gunzipAnswer(res *http.Response) error {
	if !strings.EqualFold(res.Header.Get("Content-Encoding"), "gzip") {
		return nil
	}
	zr, err := gzip.NewReader(res.Body)
	if err == io.EOF {
		return nil // no body (HEAD, 204, 304)
	}
	if err != nil {
		return fmt.Errorf("the upstream's gzip answer: %w", err)
	}
	res.Body = struct {
		io.Reader
		io.Closer
	}{zr, res.Body}
	res.Header.Del("Content-Encoding")
	res.ContentLength = -1
	return nil
}

// copyResponseHeaders passes the upstream's answer headers on to the client,
// but for those droppedResponseHeader names.
func copyResponseHeaders(h, upstream http.Header) {
	for name, v := range upstream {
		if !droppedResponseHeader(name) {
			h[name] = v
		}
	}
}

// upstreamRequest is c's request to its service: the base URL (parsed once)
// joined with c's path and query.
func (s *Server) upstreamRequest(ctx context.Context, c *call) (*http.Request, error) {
	base, err := s.baseURL(c.svc.GetBaseUrl())
	if err != nil {
		return nil, err
	}
	u := *base
	u.Path, u.RawPath = strings.TrimSuffix(base.Path, "/")+c.path, ""
	if base.RawPath != "" {
		u.RawPath = strings.TrimSuffix(base.RawPath, "/") + c.path
	}
	u.RawQuery = c.query
	req, err := http.NewRequestWithContext(ctx, c.method, "", bytes.NewReader(c.body))
	if err != nil {
		return nil, err
	}
	req.URL, req.Host = &u, u.Host
	return req, nil
}

// maxResponseBytes bounds a buffered (non-streamed) answer (Server.maxResponse
// unless a test lowers it).
const maxResponseBytes = 256 << 20

func isEventStream(ct string) bool {
	return len(ct) >= 17 && ct[:17] == "text/event-stream"
}

// copyStream passes a server-sent event stream through, read by read, and
// feeds each read to the usage meter. The meter does no allocation per
// chunk; the only copy is the read buffer.
//
// A read is flushed to the client at once, unless more of the answer has
// already arrived from the upstream: then it goes out together with what
// follows, in one write (h1.Coalesce). The last read is not flushed here:
// it goes out with the answer's end, when the handler returns.
func (s *Server) copyStream(ctx context.Context, w http.ResponseWriter, res *http.Response, c *call, out *outcome) error {
	rc := http.NewResponseController(w)
	w.WriteHeader(res.StatusCode)
	meter := llm.NewStreamMeter(c.kind, c.inputEst)
	bufp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bufp)
	buf := *bufp
	var filter *usageFilter
	if c.stripUsage {
		filter = &usageFilter{}
	}
	flush := h1.NewCoalesce(res.Body)
	var clientGone bool
	for {
		n, rerr := res.Body.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			meter.Observe(chunk)
			if !clientGone {
				if filter != nil {
					chunk = filter.pass(chunk)
				}
				if len(chunk) > 0 {
					if _, err := w.Write(chunk); err != nil {
						clientGone = true
					}
					flush.Wrote(len(chunk))
				}
			}
		}
		if rerr != nil {
			if filter != nil && !clientGone {
				if rest := filter.flush(); len(rest) > 0 {
					w.Write(rest) //nolint:errcheck // the stream is over either way
				}
			}
			break
		}
		if clientGone {
			// Metering needs no more: stop reading; the upstream request is
			// cancelled with the client's context.
			break
		}
		if flush.FlushNow() && rc.Flush() != nil {
			clientGone = true
			break
		}
	}
	out.usage, out.usageKnown = meter.Usage()
	if clientGone || ctx.Err() != nil { // the client hung up (its context ends the upstream read)
		out.status = 499
	}
	return nil
}
