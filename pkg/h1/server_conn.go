package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// maxPostHandlerReadBytes is how much of a body the handler left unread is
// read and thrown away so that the connection can carry the next request
// (net/http's figure); with more left the connection is closed.
const maxPostHandlerReadBytes = 256 << 10

// rstAvoidanceDelay is how long a connection closed after an answer stays
// half-open, so that the client reads the answer before a reset caused by
// input the server did not read (net/http's figure).
const rstAvoidanceDelay = 500 * time.Millisecond

// sconn is one client connection.
type sconn struct {
	s        *Server
	nc       net.Conn
	raw      syscall.RawConn // for the hang-up peek; nil if nc has no descriptor
	remote   string
	cr       limitedConnReader
	br       *bufio.Reader
	bw       *writeBuffer
	ctx      context.Context
	cancel   context.CancelFunc
	state    atomic.Int32
	since    atomic.Int64 // mono() when state last changed
	timedOut atomic.Bool  // the watch closed it in the middle of a request's headers, or of a drain
	gone     atomic.Bool  // the watch saw the client hang up
	handedOn bool         // given to Fallback: not this Server's to close

	res     response
	body    requestBody
	keys    []string // header names, sorted for writing
	date    []byte
	dateSec int64
}

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}

func (s *Server) newConn(nc net.Conn) *sconn {
	c := &sconn{s: s, nc: nc, remote: nc.RemoteAddr().String()}
	if sc, ok := nc.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.cr.nc = nc
	c.cr.remain = -1
	c.br = readerPool.Get().(*bufio.Reader)
	c.br.Reset(&c.cr)
	c.bw = newWriteBuffer(nc)
	c.res.c = c
	c.setState(stateNew)
	return c
}

// setState stores the time before the state: the watch reads them in the
// other order.
func (c *sconn) setState(st int32) {
	c.since.Store(mono())
	c.state.Store(st)
}

// serve reads and answers requests until the connection ends.
func (c *sconn) serve() {
	defer c.close()
	for first := true; ; first = false {
		c.cr.remain = c.s.maxHeaderBytes() + 4096 // the request's line and headers, from its first byte
		if _, err := c.br.Peek(1); err != nil {
			return // the client closed an idle connection, or the watch did
		}
		c.since.Store(mono())
		waiting := stateIdle
		if first {
			waiting = stateNew
		}
		if !c.state.CompareAndSwap(waiting, stateHeader) {
			return // Shutdown, or the watch, closed it as idle
		}
		if first && c.s.Fallback != nil && c.http2Preface() {
			c.handOn()
			return
		}
		req, err := http.ReadRequest(c.br)
		c.cr.remain = -1
		if err != nil {
			c.refuse(err)
			return
		}
		if code, msg := checkRequest(req); code != 0 {
			c.answerError(code, msg)
			return
		}
		if !c.handle(req) || c.s.shutdown.Load() {
			return
		}
		c.setState(stateIdle)
	}
}

// http2Preface reports whether the connection opens with HTTP/2's preface.
// It waits for more bytes only while those it has are a prefix of it: an
// HTTP/1 request line can be shorter than the preface.
func (c *sconn) http2Preface() bool {
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	for n := min(max(1, c.br.Buffered()), len(preface)); ; n = min(max(n+1, c.br.Buffered()), len(preface)) {
		b, err := c.br.Peek(n)
		if err != nil || !strings.HasPrefix(preface, string(b)) {
			return false
		}
		if n == len(preface) {
			return true
		}
	}
}

// handOn gives the connection, with what was read of it, to Fallback.
func (c *sconn) handOn() {
	buffered, _ := c.br.Peek(c.br.Buffered())
	pc := &prefixedConn{Conn: c.nc, prefix: bytes.Clone(buffered)}
	c.s.mu.Lock()
	delete(c.s.conns, c)
	h := c.s.handoff
	c.s.mu.Unlock()
	c.handedOn = true
	if h == nil || !h.give(pc) {
		c.nc.Close()
	}
}

// close releases the connection's resources.
func (c *sconn) close() {
	c.cancel()
	if !c.handedOn {
		c.nc.Close()
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	}
	c.br.Reset(nil)
	readerPool.Put(c.br)
	c.bw.release()
}

// closeAfterAnswer closes the connection so that the client still reads the
// answer just sent: the write side first, then the rest after a moment (an
// immediate close with unread input would reset the connection, and the
// client could lose the answer).
func (c *sconn) closeAfterAnswer() {
	if tc, ok := c.nc.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite() //nolint:errcheck // closed below either way
		time.Sleep(rstAvoidanceDelay)
	}
}

// checkRequest applies what net/http's server checks beyond the parser, as
// far as http.ReadRequest lets it: that removes the Host header after
// taking its first value as req.Host, so a missing Host cannot be told from
// an empty one (which is valid), and such requests are served; net/http's
// server refuses them (the edge does not route by host). A second Host
// header is refused by http.ReadRequest itself.
func checkRequest(req *http.Request) (int, string) {
	if req.ProtoMajor != 1 {
		return http.StatusHTTPVersionNotSupported, "HTTP version not supported: use HTTP/1.1 (or HTTP/2 without TLS, with prior knowledge)"
	}
	if !httpguts.ValidHostHeader(req.Host) {
		return http.StatusBadRequest, "malformed Host header"
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return http.StatusBadRequest, "invalid header name: no spaces or separators, and nothing between the name and its colon"
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return http.StatusBadRequest, "invalid header value: control characters are not allowed"
			}
		}
	}
	return 0, ""
}

// refuse answers a request that could not be read, when there is someone to
// answer: not after a timeout, nor when the client went away.
func (c *sconn) refuse(err error) {
	if c.timedOut.Load() || c.cr.err != nil && !c.cr.hitLimit {
		return
	}
	if c.cr.hitLimit {
		c.answerError(http.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("request line and headers are larger than %d bytes", c.s.maxHeaderBytes()))
		return
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return
	}
	c.answerError(http.StatusBadRequest, describeParseError(err))
}

// describeParseError says what was wrong with a request that could not be
// parsed, without repeating any of it (a malformed header line could carry
// a key).
func describeParseError(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "MIME header"):
		return "malformed header line: each header must be \"Name: value\", with a valid name"
	case strings.Contains(msg, "HTTP version"):
		return "malformed HTTP version in the request line: use HTTP/1.1"
	case strings.Contains(msg, "Content-Length"):
		return "invalid or conflicting Content-Length headers"
	case strings.Contains(msg, "Transfer-Encoding"), strings.Contains(msg, "transfer encoding"):
		return "unsupported Transfer-Encoding: only chunked is accepted"
	case strings.Contains(msg, "chunk"):
		return "malformed chunked body"
	default:
		return "malformed request line: send METHOD /path HTTP/1.1"
	}
}

// answerError writes an error answer for a request the handler never saw,
// and closes the connection after it.
func (c *sconn) answerError(code int, msg string) {
	body := fmt.Sprintf(`{"error":{"message":%s,"type":"invalid_request_error","code":%q}}`,
		strconv.Quote(msg), strings.ReplaceAll(strings.ToLower(http.StatusText(code)), " ", "_"))
	fmt.Fprintf(c.bw, "HTTP/1.1 %03d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, http.StatusText(code), len(body), body)
	if c.bw.Flush() == nil {
		c.closeAfterAnswer()
	}
}

// handle runs the handler on req and finishes its answer; it reports whether
// the connection can carry another request.
func (c *sconn) handle(req *http.Request) (keep bool) {
	req.RemoteAddr = c.remote
	req = req.WithContext(c.ctx)
	// An HTTP/1.0 request ends its connection, keep-alive or not:
	// http.ReadRequest drops a Transfer-Encoding header from HTTP/1.0 (and
	// frames the body by Content-Length, or as empty), so a proxy in front
	// that framed it by the chunks would have the rest served as another
	// request; RFC 9112 section 6.1 says to close after such a message, and
	// once parsed it cannot be told from any other.
	keep = !req.Close && req.ProtoAtLeast(1, 1)
	b := &c.body
	*b = requestBody{c: c, rc: req.Body}
	if ex := req.Header.Get("Expect"); expectsContinue(ex) {
		b.expect = req.ProtoAtLeast(1, 1) && req.ContentLength != 0
		delete(req.Header, "Expect")
	} else if ex != "" {
		c.answerError(http.StatusExpectationFailed, "unsupported Expect header: only 100-continue is understood")
		return false
	}
	if req.Body == http.NoBody {
		b.done = true
		c.setState(stateBodyRead)
	} else {
		req.Body = b
		c.setState(stateActive)
	}
	w := &c.res
	w.reset(req)
	if !c.run(w, req) {
		return false // the handler panicked: the connection is closed as it is
	}
	unread := false
	if !b.done {
		// The client was not told to send the body (it may or may not),
		// or sent more than is worth reading: the connection cannot be
		// read further.
		unread = b.expect || !b.discard(req.ContentLength)
	}
	if unread || b.err != nil || c.gone.Load() {
		keep = false
	}
	if keep = w.finish(keep); !keep && unread {
		c.closeAfterAnswer()
	}
	return keep
}

// run calls the handler, and reports false if it panicked.
func (c *sconn) run(w *response, req *http.Request) (ok bool) {
	defer func() {
		if err := recover(); err != nil {
			if err != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.s.log().Error("edge: handler panicked", "method", req.Method, "path", req.URL.Path, "panic", fmt.Sprint(err), "stack", string(buf))
			}
			w.release()
			ok = false
		}
	}()
	c.s.Handler.ServeHTTP(w, req)
	return true
}

// requestBody is a request's body as the handler sees it: it sends
// 100 Continue before the first read when the client asked for it, and
// tells the watch when the body has been read (then a peek at the socket
// cannot meet a read in progress, and sees only the client's next move).
type requestBody struct {
	c      *sconn
	rc     io.ReadCloser
	expect bool  // send 100 Continue before reading
	n      int64 // bytes read
	done   bool
	err    error // a failure other than the end of the body
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.done {
		if b.err != nil {
			return 0, b.err
		}
		return 0, io.EOF
	}
	if b.expect {
		b.expect = false
		if !b.c.res.sent {
			b.c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n") //nolint:errcheck // a failed write fails the flush
			if err := b.c.bw.Flush(); err != nil {
				b.done, b.err = true, err
				return 0, err
			}
		}
	}
	n, err := b.rc.Read(p)
	b.n += int64(n)
	if err != nil {
		b.done = true
		if err != io.EOF {
			b.err = err
		}
		b.c.setState(stateBodyRead)
	}
	return n, err
}

func (b *requestBody) Close() error { return nil }

// discard reads what the handler left of the body, up to
// maxPostHandlerReadBytes, and reports whether it got to the end. A body
// declared longer than that is not read at all, and a client that stalls
// is given ReadHeaderTimeout (the watch closes the connection).
func (b *requestBody) discard(declared int64) bool {
	b.done = true
	if declared >= 0 && declared-b.n > maxPostHandlerReadBytes {
		return false
	}
	b.c.setState(stateDraining)
	_, err := io.CopyN(io.Discard, b.rc, maxPostHandlerReadBytes+1)
	return err == io.EOF
}

// limitedConnReader bounds what the request's line and headers may take;
// remain < 0 is no bound. It remembers why reading stopped.
type limitedConnReader struct {
	nc       net.Conn
	remain   int64
	hitLimit bool
	err      error
}

func (r *limitedConnReader) Read(p []byte) (int, error) {
	if r.remain == 0 {
		r.hitLimit = true
		return 0, io.EOF
	}
	if r.remain > 0 && int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.nc.Read(p)
	if r.remain > 0 {
		r.remain -= int64(n)
	}
	if err != nil {
		r.err = err
	}
	return n, err
}

// httpDate is the Date header's value, formatted once a second.
func (c *sconn) httpDate() []byte {
	now := time.Now()
	if sec := now.Unix(); sec != c.dateSec || c.date == nil {
		c.dateSec = sec
		c.date = now.UTC().AppendFormat(c.date[:0], http.TimeFormat)
	}
	return c.date
}
