package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Server serves HTTP/1.1 (and 1.0) to the edge's clients: the standard
// library parses each request (http.ReadRequest) and an http.Handler answers
// it, as with net/http's server; only the connection handling is this
// package's.
//
// What it saves over net/http's server, per request: the goroutine that
// net/http starts once a request's body has been read, to notice a client
// that hangs up, and the deadline change that stops it after the answer
// (together a thread wake-up and a hand-over on every request), the read and
// write deadlines it sets for its timeouts, and a context per request. Here a
// connection has one goroutine and the request runs on it; one goroutine per
// Server enforces the timeouts of all connections and looks for clients that
// hung up, a few times a second (WatchInterval).
//
// A client that hangs up while its request runs is noticed by a
// non-blocking peek at the socket of each request that has read its body
// and runs longer than WatchInterval: an orderly close or a reset cancels
// the request's context, as net/http's server does at once. A request's
// context is the connection's, so it also ends when the Server is closed,
// but not when the handler returns.
//
// Differences from net/http's server, by design: no HTTP/2 but through
// Fallback (h2c with prior knowledge), no TLS (the edge listens on plain
// TCP behind whatever terminates TLS), no Hijack, no trailers, and answers
// to malformed requests are JSON in the style of the OpenAI API. The
// ResponseWriter and the request's body must not be used after the handler
// returns (net/http's contract too); they are reused for the connection's
// next request.
type Server struct {
	Handler http.Handler
	// ReadHeaderTimeout bounds the arrival of a request's line and headers,
	// from its first byte (default 10 s).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that carries no request
	// for this long (default 2 min).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's line and headers (default
	// http.DefaultMaxHeaderBytes); larger ones get 431.
	MaxHeaderBytes int
	// WatchInterval is how often timeouts and hang-ups are checked
	// (default 250 ms): timeouts are enforced up to this late, and a
	// hang-up is noticed within about twice this.
	WatchInterval time.Duration
	// Fallback serves the connections that open with HTTP/2's preface
	// (h2c with prior knowledge); without it they get 505.
	Fallback *http.Server
	// Log gets handler panics and accept errors (default slog.Default()).
	Log *slog.Logger

	mu        sync.Mutex
	conns     map[*sconn]struct{}
	listeners map[net.Listener]struct{}
	handoff   *handoffListener
	watching  bool
	shutdown  atomic.Bool
	stopWatch chan struct{}
}

// Connection states, in sconn.state.
const (
	stateIdle     int32 = iota // waiting for a request's first byte
	stateHeader                // reading a request's line and headers
	stateActive                // the handler runs; the body is not read to its end
	stateBodyRead              // the handler runs; the body was read to its end (or there is none)
	stateDraining              // reading what the handler left of the body
	stateClosed                // closed by Shutdown while idle
)

// maxPostHandlerReadBytes is how much of a body the handler left unread is
// read and thrown away so that the connection can carry the next request
// (net/http's figure); with more left the connection is closed.
const maxPostHandlerReadBytes = 256 << 10

// bufferLimit is how much of an answer is held back, until the handler
// flushes or returns, so that it can go out with a Content-Length and in
// one write; a longer one is sent chunked.
const bufferLimit = 64 << 10

// rstAvoidanceDelay is how long a connection closed after an answer stays
// half-open, so that the client reads the answer before a reset caused by
// input the server did not read (net/http's figure).
const rstAvoidanceDelay = 500 * time.Millisecond

var epoch = time.Now()

// mono is a monotonic clock in nanoseconds.
func mono() int64 { return int64(time.Since(epoch)) }

func (s *Server) readHeaderTimeout() time.Duration {
	return cmpOr(s.ReadHeaderTimeout, 10*time.Second)
}

func (s *Server) idleTimeout() time.Duration { return cmpOr(s.IdleTimeout, 2*time.Minute) }

func (s *Server) watchInterval() time.Duration {
	return cmpOr(s.WatchInterval, 250*time.Millisecond)
}

func (s *Server) maxHeaderBytes() int64 {
	return int64(cmpOr(s.MaxHeaderBytes, http.DefaultMaxHeaderBytes))
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func cmpOr[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// Serve accepts connections on ln until Shutdown or Close, and returns
// http.ErrServerClosed then.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutdown.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners, s.conns = map[net.Listener]struct{}{}, map[*sconn]struct{}{}
		s.stopWatch = make(chan struct{})
	}
	s.listeners[ln] = struct{}{}
	if !s.watching {
		s.watching = true
		go s.watch()
	}
	if s.Fallback != nil && s.handoff == nil {
		s.handoff = &handoffListener{addr: ln.Addr(), conns: make(chan net.Conn), closed: make(chan struct{})}
		go s.Fallback.Serve(s.handoff) //nolint:errcheck // ends with Shutdown or Close
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shutdown.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors, or a listener's timeout: wait and
				// go on, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log().Warn("edge: accept failed; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := s.newConn(nc)
		s.mu.Lock()
		if s.shutdown.Load() {
			s.mu.Unlock()
			nc.Close()
			return http.ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections, lets each request in
// progress finish (its answer says Connection: close) and returns once all
// connections are closed. When ctx ends first, it closes what is left, which
// cancels the requests' contexts, waits a moment for their handlers to
// return, and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginShutdown()
	if s.Fallback != nil {
		go s.Fallback.Shutdown(ctx) //nolint:errcheck // its connections are its own
	}
	wait := time.Millisecond
	for {
		if s.closeIdle() == 0 {
			s.stopWatching()
			return nil
		}
		select {
		case <-ctx.Done():
			s.Close()
			// Closed connections end their requests' reads and writes
			// and cancel their contexts: give the handlers a moment to
			// settle and return.
			for end := time.Now().Add(5 * time.Second); time.Now().Before(end) && s.closeIdle() > 0; {
				time.Sleep(10 * time.Millisecond)
			}
			return ctx.Err()
		case <-time.After(wait):
			wait = min(2*wait, 100*time.Millisecond)
		}
	}
}

// Close closes the listeners and every connection at once; requests in
// progress see their contexts cancelled.
func (s *Server) Close() error {
	s.beginShutdown()
	s.mu.Lock()
	for c := range s.conns {
		c.cancel()
		c.nc.Close()
	}
	s.mu.Unlock()
	if s.Fallback != nil {
		s.Fallback.Close()
	}
	s.stopWatching()
	return nil
}

func (s *Server) beginShutdown() {
	s.shutdown.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for ln := range s.listeners {
		ln.Close()
	}
	if s.handoff != nil {
		s.handoff.Close()
	}
}

func (s *Server) stopWatching() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watching {
		s.watching = false
		close(s.stopWatch)
	}
}

// closeIdle closes the connections waiting for a request and returns how
// many connections are left.
func (s *Server) closeIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosed) {
			c.nc.Close()
		}
	}
	return len(s.conns)
}

// watch enforces the timeouts and looks for clients that hung up, every
// WatchInterval, until the Server is shut down.
func (s *Server) watch() {
	interval := s.watchInterval()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	idle, header := int64(s.idleTimeout()), int64(s.readHeaderTimeout())
	var conns []*sconn
	for {
		select {
		case <-tick.C:
		case <-s.stopWatch:
			return
		}
		conns = conns[:0]
		s.mu.Lock()
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		now := mono()
		for _, c := range conns {
			// The state first: a connection's since is stored before its
			// state, so a new state is never judged by the old state's
			// time (an idle connection's two minutes against the header
			// timeout of the request that just arrived).
			st := c.state.Load()
			age := now - c.since.Load()
			switch st {
			case stateIdle:
				if age > idle && c.state.CompareAndSwap(stateIdle, stateClosed) {
					c.nc.Close()
				}
			case stateHeader, stateDraining:
				if age > header {
					c.timedOut.Store(true)
					c.nc.Close()
				}
			case stateBodyRead:
				if age > int64(interval) && c.raw != nil && !c.hungUp.Load() && hungUp(c.raw) {
					c.hungUp.Store(true)
					c.cancel()
				}
			}
		}
		clear(conns)
	}
}

// sconn is one client connection.
type sconn struct {
	s        *Server
	nc       net.Conn
	raw      syscall.RawConn // for the hang-up peek; nil if nc has no descriptor
	remote   string
	cr       limitedConnReader
	br       *bufio.Reader
	bw       *bufio.Writer
	ctx      context.Context
	cancel   context.CancelFunc
	state    atomic.Int32
	since    atomic.Int64 // mono() when state last changed
	timedOut atomic.Bool  // the watch closed it in the middle of a request's headers, or of a drain
	hungUp   atomic.Bool  // the watch saw the client go
	handedOn bool         // given to Fallback: not this Server's to close

	res     response
	body    requestBody
	keys    []string // header names, sorted for writing
	date    []byte
	dateSec int64
}

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
	answerPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}
)

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
	c.bw = writerPool.Get().(*bufio.Writer)
	c.bw.Reset(nc)
	c.res.c = c
	c.body.c = c
	c.setState(stateIdle)
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
		if !c.state.CompareAndSwap(stateIdle, stateHeader) {
			return // Shutdown closed it as idle
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
	c.bw.Reset(nil)
	writerPool.Put(c.bw)
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
// an empty one (which is valid), and a second Host header goes unseen. Such
// requests are served; net/http's server refuses the two (the edge does not
// route by host).
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
	keep = !req.Close
	b := &c.body
	*b = requestBody{c: c, rc: req.Body}
	if ex := req.Header.Get("Expect"); hasToken([]string{ex}, "100-continue") {
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
	if unread || b.err != nil || c.hungUp.Load() {
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

// response is the http.ResponseWriter of a request on an sconn.
type response struct {
	c           *sconn
	req         *http.Request
	header      http.Header
	status      int
	wroteHeader bool
	sent        bool  // the status line and header are in c.bw
	chunked     bool  // the body goes out chunked
	declared    int64 // the handler's Content-Length, -1 if none
	written     int64
	buf         *[]byte // the body held back (bufferLimit) until sent
	closeAfter  bool    // the header said Connection: close
	err         error   // the first failed write: the client is gone
}

func (w *response) reset(req *http.Request) {
	if w.header == nil {
		w.header = make(http.Header, 8)
	} else {
		clear(w.header)
	}
	*w = response{c: w.c, req: req, header: w.header, declared: -1}
}

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if w.wroteHeader {
		return // as net/http, but it logs: "superfluous WriteHeader call"
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// An informational answer goes out at once, with the header so far
		// (103 Early Hints).
		w.writeStatusAndHeader(code)
		w.c.bw.WriteString("\r\n") //nolint:errcheck // a failed write fails the flush
		if err := w.c.bw.Flush(); err != nil && w.err == nil {
			w.err = err
		}
		return
	}
	w.wroteHeader, w.status = true, code
	if cl := w.header["Content-Length"]; len(cl) == 1 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n >= 0 {
			w.declared = n
		} else {
			delete(w.header, "Content-Length")
		}
	} else if len(cl) > 1 {
		delete(w.header, "Content-Length")
	}
}

func (w *response) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.req.Method == http.MethodHead {
		return len(p), nil
	}
	if !w.sent {
		if w.buf == nil {
			w.buf = answerPool.Get().(*[]byte)
		}
		if len(*w.buf)+len(p) <= bufferLimit {
			*w.buf = append(*w.buf, p...)
			return len(p), nil
		}
		w.send(false)
	}
	w.writeBody(p)
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// Flush sends what was written so far.
func (w *response) Flush() { w.FlushError() } //nolint:errcheck // http.Flusher has no error

// FlushError sends what was written so far (http.ResponseController).
func (w *response) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.sent {
		w.send(false)
	}
	if err := w.c.bw.Flush(); err != nil && w.err == nil {
		w.err = err
	}
	return w.err
}

// send writes the status line, the header and the body held back; final
// says the handler has returned, so the length of the body is known. The
// framing headers (Content-Length, Transfer-Encoding, Connection) are this
// writer's: the handler's Content-Length is kept if it is valid, its
// Connection: close honoured, and the rest of them dropped.
func (w *response) send(final bool) {
	w.sent = true
	h := w.header
	held := 0
	if w.buf != nil {
		held = len(*w.buf)
	}
	length := int64(-1)
	switch {
	case !bodyAllowed(w.status):
		if w.status == http.StatusNotModified {
			length = w.declared
		}
	case w.declared >= 0:
		length = w.declared
	case final && (w.req.Method != http.MethodHead || w.written > 0):
		length = w.written
	case w.req.Method == http.MethodHead: // no body follows, nor its length
	case w.req.ProtoAtLeast(1, 1):
		w.chunked = true
	default: // HTTP/1.0 and a length not known: the close ends the body
		w.closeAfter = true
	}
	if _, ok := h["Content-Type"]; !ok && held > 0 && bodyAllowed(w.status) {
		h["Content-Type"] = []string{http.DetectContentType((*w.buf)[:min(held, 512)])}
	}
	if v := h["Connection"]; len(v) > 0 && hasToken(v, "close") || w.c.s.shutdown.Load() {
		w.closeAfter = true
	}
	w.writeStatusAndHeader(w.status)
	bw := w.c.bw
	if length >= 0 {
		bw.WriteString("Content-Length: ")                            //nolint:errcheck // a failed write fails the flush
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), length, 10)) //nolint:errcheck
		bw.WriteString("\r\n")                                        //nolint:errcheck
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n") //nolint:errcheck
	}
	switch {
	case w.closeAfter || w.req.Close:
		bw.WriteString("Connection: close\r\n") //nolint:errcheck
	case !w.req.ProtoAtLeast(1, 1):
		bw.WriteString("Connection: keep-alive\r\n") //nolint:errcheck
	}
	if _, ok := h["Date"]; !ok {
		bw.WriteString("Date: ") //nolint:errcheck
		bw.Write(w.c.httpDate()) //nolint:errcheck
		bw.WriteString("\r\n")   //nolint:errcheck
	}
	bw.WriteString("\r\n") //nolint:errcheck
	if held > 0 {
		w.writeBody(*w.buf)
	}
	w.release()
}

// writeBody writes p as the body goes: chunked or as it is.
func (w *response) writeBody(p []byte) {
	if len(p) == 0 || w.err != nil {
		return
	}
	bw := w.c.bw
	if w.chunked {
		// AvailableBuffer: the size is formatted into the writer's own
		// buffer, with no allocation per chunk.
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(len(p)), 16)) //nolint:errcheck // checked below
		bw.WriteString("\r\n")                                               //nolint:errcheck
		bw.Write(p)                                                          //nolint:errcheck
		_, err := bw.WriteString("\r\n")
		if err != nil {
			w.err = err
		}
		return
	}
	if _, err := bw.Write(p); err != nil {
		w.err = err
	}
}

// finish completes the answer after the handler has returned, and reports
// whether the connection can carry another request.
func (w *response) finish(keep bool) bool {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !keep {
		w.closeAfter = true
	}
	if !w.sent {
		w.send(true)
	} else if w.chunked && w.err == nil {
		w.c.bw.WriteString("0\r\n\r\n") //nolint:errcheck // a failed write fails the flush
	}
	if err := w.c.bw.Flush(); err != nil && w.err == nil {
		w.err = err
	}
	if w.declared >= 0 && w.written < w.declared && bodyAllowed(w.status) && w.req.Method != http.MethodHead {
		return false // the client waits for bytes that will not come: only the close tells it
	}
	return w.err == nil && !w.closeAfter && !w.req.Close
}

// release returns the held-back body's buffer.
func (w *response) release() {
	if w.buf != nil {
		*w.buf = (*w.buf)[:0]
		if cap(*w.buf) <= bufferLimit+4<<10 {
			answerPool.Put(w.buf)
		}
		w.buf = nil
	}
}

// writeStatusAndHeader writes the status line and the header fields, sorted
// by name; names that are not valid are left out and line breaks in values
// become spaces, as net/http does.
func (w *response) writeStatusAndHeader(code int) {
	bw := w.c.bw
	if w.req.ProtoAtLeast(1, 1) {
		bw.WriteString("HTTP/1.1 ") //nolint:errcheck // a failed write fails the flush
	} else {
		bw.WriteString("HTTP/1.0 ") //nolint:errcheck
	}
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10)) //nolint:errcheck
	bw.WriteByte(' ')                                                  //nolint:errcheck
	if text := http.StatusText(code); text != "" {
		bw.WriteString(text) //nolint:errcheck
	} else {
		bw.WriteString("status code ")                                     //nolint:errcheck
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10)) //nolint:errcheck
	}
	bw.WriteString("\r\n") //nolint:errcheck
	keys := w.c.keys[:0]
	for k := range w.header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !httpguts.ValidHeaderFieldName(k) || framingHeader(k) {
			continue
		}
		for _, v := range w.header[k] {
			bw.WriteString(k)    //nolint:errcheck
			bw.WriteString(": ") //nolint:errcheck
			writeHeaderValue(bw, v)
			bw.WriteString("\r\n") //nolint:errcheck
		}
	}
	clear(keys)
	w.c.keys = keys[:0]
}

// framingHeader reports whether the writer, not the handler, sends the
// header named k.
func framingHeader(k string) bool {
	switch k {
	case "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Trailer":
		return true
	}
	return false
}

// writeHeaderValue writes v trimmed, with CR and LF as spaces.
func writeHeaderValue(bw *bufio.Writer, v string) {
	v = strings.Trim(v, " \t")
	if strings.IndexAny(v, "\r\n") < 0 {
		bw.WriteString(v) //nolint:errcheck // a failed write fails the flush
		return
	}
	for i := 0; i < len(v); i++ {
		b := v[i]
		if b == '\r' || b == '\n' {
			b = ' '
		}
		bw.WriteByte(b) //nolint:errcheck
	}
}

// hasToken reports whether a comma-separated header value lists token.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

func bodyAllowed(status int) bool {
	return (status < 100 || status > 199) && status != http.StatusNoContent && status != http.StatusNotModified
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

// handoffListener passes connections to Fallback.
type handoffListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// prefixedConn is a connection whose first bytes were already read.
type prefixedConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixedConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
