// Package h1 is the edge's HTTP/1.1: a server for its clients (Server, in
// server.go) and a client to its upstreams (Transport): an
// http.RoundTripper whose caller's goroutine writes the request and reads the
// answer itself, on a pooled keep-alive connection.
//
// net/http's Transport gives every connection a reading and a writing
// goroutine, so one request costs three goroutine hand-offs (to the writer,
// from the reader to the caller, and back to the reader when the body has
// been read), each a thread wake-up when the machine is not saturated. On
// loopback that was a large part of what the edge added to a request. Here
// the request is serialized by (*http.Request).Write and the answer parsed by
// http.ReadResponse, so the protocol handling is the standard library's; only
// the connection management is this package's.
//
// What it does not do, by design: HTTP/2 (upstreams are spoken to in
// HTTP/1.1, as most gateways do), automatic decompression (the edge reads
// usage from the bytes it passes on), redirects (an upstream's redirect goes
// back to the client as it is), protocol upgrades (a 101 answer is an
// error: the edge never asks for one), and retries of a request that may
// have reached the upstream. A request through an HTTP proxy (HTTP_PROXY,
// HTTPS_PROXY and NO_PROXY, read once at start) goes through Fallback.
package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"syscall"
	"time"
)

// Transport is an HTTP/1.1 RoundTripper with per-host pools of idle
// connections. The zero value is not usable: use New.
type Transport struct {
	// DialTimeout bounds connecting, TLS included.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the answer's headers once
	// the request is written (0: no limit but the request's context).
	ResponseHeaderTimeout time.Duration
	// IdleTimeout is how long an idle connection is kept.
	IdleTimeout time.Duration
	// MaxIdlePerHost bounds the idle connections kept per upstream.
	MaxIdlePerHost int
	// MaxResponseHeaderBytes bounds what an answer's headers may take from
	// the connection, its informational answers (1xx) included, as
	// net/http's field of that name does (0: 1 MB).
	MaxResponseHeaderBytes int64
	// TLSClientConfig is cloned for each TLS connection.
	TLSClientConfig *tls.Config
	// Fallback carries requests this transport does not: through an HTTP
	// proxy, or to a scheme other than http and https.
	Fallback http.RoundTripper

	proxy  func(*url.URL) (*url.URL, error) // nil: no proxy configured
	dialer net.Dialer
	dialFn func(ctx context.Context, network, addr string) (net.Conn, error) // tests: in place of dialer
	watch  headerWatch

	mu   sync.Mutex
	idle map[string][]*conn // by scheme and host:port; the most recently used last
}

// New returns a Transport with production defaults, and proxy reads the
// proxy settings of the environment (nil: none).
func New(responseHeaderTimeout time.Duration, proxy func(*url.URL) (*url.URL, error)) *Transport {
	t := &Transport{
		DialTimeout:           10 * time.Second,
		ResponseHeaderTimeout: responseHeaderTimeout,
		IdleTimeout:           90 * time.Second,
		MaxIdlePerHost:        1024,
		proxy:                 proxy,
		dialer:                net.Dialer{KeepAlive: 30 * time.Second},
		idle:                  map[string][]*conn{},
	}
	return t
}

// headerWatch enforces ResponseHeaderTimeout without a timer per request: a
// read deadline set and cleared on every request costs two timer changes,
// each of which can wake the network poller with a system call. Instead a
// request waiting for its answer's headers is registered here, and a
// goroutine that runs while any is registered closes, a few times per
// timeout, the connections of those past their time. The timeout is so
// enforced within a quarter of itself (a second at most) late.
type headerWatch struct {
	mu       sync.Mutex
	waiting  map[*conn]time.Time // deadline of each request waiting for headers
	expired  map[*conn]bool      // closed by the watch, until the request notices
	running  bool
	interval time.Duration
}

// add registers c as waiting for headers for at most d.
func (w *headerWatch) add(c *conn, d time.Duration) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.waiting == nil {
		w.waiting, w.expired = map[*conn]time.Time{}, map[*conn]bool{}
	}
	w.waiting[c] = now.Add(d)
	if !w.running {
		w.running, w.interval = true, min(max(d/4, time.Millisecond), time.Second)
		go w.run()
	}
}

// remove unregisters c and reports whether the watch closed it.
func (w *headerWatch) remove(c *conn) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.waiting, c)
	expired := w.expired[c]
	delete(w.expired, c)
	return expired
}

func (w *headerWatch) run() {
	tick := time.NewTicker(w.interval)
	defer tick.Stop()
	for now := range tick.C {
		w.mu.Lock()
		if len(w.waiting) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		for c, deadline := range w.waiting {
			if now.After(deadline) {
				delete(w.waiting, c)
				w.expired[c] = true
				c.nc.Close() // ends the read of the request waiting on it
			}
		}
		w.mu.Unlock()
	}
}

// conn is one connection to an upstream.
type conn struct {
	key  string
	nc   net.Conn
	raw  syscall.RawConn // the TCP connection's (under TLS), for peeks at its socket; nil if it has none
	br   *bufio.Reader
	bw   *writeBuffer
	used time.Time // when it was last put back idle

	// pre is what br reads from on a connection without TLS: readable reads
	// into it instead of peeking (prefetch.go).
	pre *prefetch
	// lim is what br reads through: it bounds the answer's headers.
	lim headerLimit

	// For readable's peek under TLS (alive_unix.go), made on first use.
	peek    func(fd uintptr)
	peekBuf [1]byte
	ready   bool
}

// quiet reports whether nothing the upstream sent is waiting to be read:
// bytes beyond an answer's end, unasked, mean the connection cannot carry
// another request (they would be read as the next request's answer).
func (c *conn) quiet() bool {
	if c.br.Buffered() > 0 || c.pre != nil && c.pre.pending() || !alive(c.raw) {
		return false
	}
	if _, ok := c.nc.(*tls.Conn); ok {
		return c.tlsQuiet()
	}
	return true
}

// tlsQuiet looks for what the TLS layer read ahead from the socket and
// holds, which neither br nor a peek at the socket sees: a read that must
// not wait (its deadline passed) returns it, or fails at once. A timeout is
// not a lasting error for a TLS connection, and what the read returned
// stays in br: either way the connection is as it was.
func (c *conn) tlsQuiet() bool {
	if c.nc.SetReadDeadline(aLongTimeAgo) != nil {
		return false
	}
	_, err := c.br.Peek(1)
	if c.nc.SetReadDeadline(time.Time{}) != nil {
		return false
	}
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// headerLimit passes reads through while left is negative, and otherwise
// takes at most left bytes in all.
type headerLimit struct {
	r    io.Reader
	left int64
}

var errHeadersTooLong = errors.New("h1: answer headers too long")

func (l *headerLimit) Read(p []byte) (int, error) {
	if l.left < 0 {
		return l.r.Read(p)
	}
	if l.left == 0 {
		return 0, errHeadersTooLong
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

func (t *Transport) maxResponseHeaderBytes() int64 {
	if t.MaxResponseHeaderBytes > 0 {
		return t.MaxResponseHeaderBytes
	}
	return 1 << 20
}

// RoundTrip sends req and returns the answer; the body must be read to its
// end or closed, as with any RoundTripper. Only a body read to its end lets
// the connection be used again.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" || t.viaProxy(req) {
		if t.Fallback == nil {
			return nil, fmt.Errorf("h1: cannot send %s://%s requests", req.URL.Scheme, req.URL.Host)
		}
		return t.Fallback.RoundTrip(req)
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err // before taking a pooled connection that it would spoil
	}
	key := req.URL.Scheme + "://" + req.URL.Host
	for {
		c, reused, err := t.get(ctx, key, req.URL)
		if err != nil {
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, err
		}
		res, err := t.exchange(ctx, c, req)
		if err == nil {
			return res, nil
		}
		c.nc.Close()
		var nw notWritten
		if reused && errors.As(err, &nw) && req.GetBody != nil && ctx.Err() == nil {
			// The upstream closed the idle connection just before it was
			// used: the request did not go out; send it on another one.
			if req.Body, err = req.GetBody(); err == nil {
				continue
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
}

// viaProxy reports whether the environment sends req through a proxy.
func (t *Transport) viaProxy(req *http.Request) bool {
	if t.proxy == nil {
		return false
	}
	u, err := t.proxy(req.URL)
	return err != nil || u != nil
}

// notWritten is a failure to write a request: the upstream cannot have
// acted on it.
type notWritten struct{ err error }

func (e notWritten) Error() string { return "write request: " + e.err.Error() }
func (e notWritten) Unwrap() error { return e.err }

// exchange writes req on c and reads the answer's headers. While the request
// is in flight, cancelling ctx closes the connection's deadlines, which ends
// any read or write at once.
func (t *Transport) exchange(ctx context.Context, c *conn, req *http.Request) (*http.Response, error) {
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo) }) //nolint:errcheck // the connection is dropped anyway
	if err := req.Write(c.bw); err != nil {
		stop()
		return nil, notWritten{err}
	}
	if err := c.bw.Flush(); err != nil {
		stop()
		return nil, notWritten{err}
	}
	if t.ResponseHeaderTimeout > 0 {
		t.watch.add(c, t.ResponseHeaderTimeout)
	}
	c.lim.left = t.maxResponseHeaderBytes()
	res, err := http.ReadResponse(c.br, req)
	for err == nil && res.StatusCode >= 100 && res.StatusCode < 200 && res.StatusCode != http.StatusSwitchingProtocols {
		// An informational answer (103 Early Hints, a stray 100
		// Continue) comes before the real one and has no body.
		res, err = http.ReadResponse(c.br, req)
	}
	c.lim.left = -1
	timedOut := t.ResponseHeaderTimeout > 0 && t.watch.remove(c)
	switch {
	case errors.Is(err, errHeadersTooLong):
		err = fmt.Errorf("upstream's answer headers exceed %d bytes", t.maxResponseHeaderBytes())
	case err != nil:
	case res.StatusCode < 100 || res.StatusCode > 999:
		// ReadResponse takes any three digits; net/http's server panics
		// on writing such a status to the client. (Found by the fuzzer.)
		err = fmt.Errorf("upstream answered with status %d", res.StatusCode)
	case res.StatusCode == http.StatusSwitchingProtocols:
		// Never asked for: what follows on the connection is another
		// protocol, neither an answer to pass on nor a connection to
		// use again.
		err = errors.New("upstream switched protocols (101) without being asked to")
	}
	if err != nil {
		stop()
		if timedOut && ctx.Err() == nil {
			return nil, fmt.Errorf("%w within %v", ErrNoAnswer, t.ResponseHeaderTimeout)
		}
		return nil, err
	}
	if timedOut { // the answer came just as the watch closed the connection
		stop()
		return nil, fmt.Errorf("%w within %v", ErrNoAnswer, t.ResponseHeaderTimeout)
	}
	keep := !res.Close && !req.Close
	if res.Body == http.NoBody { // HEAD, 204, 304: the answer is complete
		if stop() && keep {
			t.put(c)
		} else {
			c.nc.Close()
		}
		return res, nil
	}
	res.Body = &body{ReadCloser: res.Body, t: t, c: c, stop: stop, keep: keep}
	return res, nil
}

var aLongTimeAgo = time.Unix(1, 0)

// ErrNoAnswer is the error of a request that was sent and got no answer's
// headers within ResponseHeaderTimeout: unlike a failure to connect, the
// upstream may have acted on it.
var ErrNoAnswer = errors.New("upstream sent no answer")

// body hands the connection back to the pool once the answer has been read
// to its end, and closes it when the reader gives up before.
type body struct {
	io.ReadCloser
	t    *Transport
	c    *conn
	stop func() bool
	keep bool
	done bool
	err  error // what a Read returns once done: the first failure, io.EOF, or errBodyClosed
}

var errBodyClosed = errors.New("h1: read on a closed answer body")

func (b *body) Read(p []byte) (int, error) {
	if b.done {
		return 0, b.err
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.finish(true)
		b.err = io.EOF
	} else if err != nil {
		b.finish(false)
		b.err = err
	}
	return n, err
}

// Arrived reports whether more of the answer has already arrived and can
// be read without waiting: bytes buffered from the connection, or waiting in
// its socket (the end of the connection counts: a read returns at once). A
// proxy copying a stream asks before it flushes what it read, so that what
// came in together goes out together, in one write instead of one per read.
// It costs at most one non-blocking read (under TLS, a peek), whose bytes
// the next Read hands on without another, and never waits. Under TLS, what
// the TLS layer has decrypted and not yet handed on is not seen: a missed
// chance to write together, never a wait.
func (b *body) Arrived() bool {
	if b.done {
		return false
	}
	return b.c.br.Buffered() > 0 || b.c.readable()
}

func (b *body) Close() error {
	if !b.done {
		b.finish(false)
		b.err = errBodyClosed
	}
	return nil
}

// finish releases the connection: back to the pool when the answer was read
// to its end, the upstream keeps the connection open, and the request's
// context did not end (its deadline would be on the connection).
func (b *body) finish(complete bool) {
	if b.done {
		return
	}
	b.done = true
	if b.stop() && complete && b.keep {
		b.t.put(b.c)
		return
	}
	b.c.nc.Close()
}

// get returns an idle connection to key, or dials one.
func (t *Transport) get(ctx context.Context, key string, u *url.URL) (*conn, bool, error) {
	now := time.Now()
	for {
		t.mu.Lock()
		list := t.idle[key]
		if len(list) == 0 {
			t.mu.Unlock()
			break
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		t.idle[key] = list[:len(list)-1]
		t.mu.Unlock()
		if now.Sub(c.used) < t.IdleTimeout && c.quiet() {
			return c, true, nil
		}
		c.nc.Close()
	}
	c, err := t.dial(ctx, key, u)
	return c, false, err
}

// put keeps c for the next request to its host, unless enough are kept.
func (t *Transport) put(c *conn) {
	c.used = time.Now()
	t.mu.Lock()
	list := t.idle[c.key]
	// The oldest are at the front: drop those idle for too long.
	expired := 0
	for expired < len(list) && c.used.Sub(list[expired].used) >= t.IdleTimeout {
		expired++
	}
	old := list[:expired]
	var dropped *conn
	if len(list)-expired >= t.MaxIdlePerHost {
		dropped = c
	} else {
		list = append(list[expired:], c)
	}
	t.idle[c.key] = list
	t.mu.Unlock()
	for _, o := range old {
		o.nc.Close()
	}
	if dropped != nil {
		dropped.nc.Close()
	}
}

// CloseIdleConnections closes the connections kept for later requests.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*conn{}
	t.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.nc.Close()
		}
	}
	if f, ok := t.Fallback.(interface{ CloseIdleConnections() }); ok {
		f.CloseIdleConnections()
	}
}

func (t *Transport) dial(ctx context.Context, key string, u *url.URL) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, t.DialTimeout)
	defer cancel()
	host := u.Hostname()
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	dial := t.dialer.DialContext
	if t.dialFn != nil {
		dial = t.dialFn
	}
	nc, err := dial(ctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, err
	}
	c := &conn{key: key, nc: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn() // once: each call allocates
	}
	if u.Scheme == "https" {
		cfg := &tls.Config{}
		if t.TLSClientConfig != nil {
			cfg = t.TLSClientConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
		c.nc = tc
	}
	c.lim = headerLimit{r: c.nc, left: -1}
	if c.nc == nc && c.raw != nil {
		c.pre = &prefetch{nc: nc}
		c.lim.r = c.pre
	}
	c.br = bufio.NewReaderSize(&c.lim, 16<<10)
	c.bw = newOwnWriteBuffer(c.nc, 8<<10) // its own, not pooled: it lives as long as the connection
	return c, nil
}
