package h1

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
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
	stateIdle     int32 = iota // waiting for the next request's first byte
	stateNew                   // a new connection waiting for its first request's first byte
	stateHeader                // reading a request's line and headers
	stateActive                // the handler runs; the body is not read to its end
	stateBodyRead              // the handler runs; the body was read to its end (or there is none)
	stateDraining              // reading what the handler left of the body
	stateClosed                // closed by Shutdown while idle
)

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
		// The connection first: a handler that its cancelled context
		// wakes must find it closed, not answer on it.
		c.nc.Close()
		c.cancel()
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

// newConnGrace is how long Shutdown lets a new connection send its first
// request (net/http's figure): a client that has just connected has its
// request on the way, and one closed under it is lost.
const newConnGrace = 5 * time.Second

// closeIdle closes the connections waiting for a request (new ones after
// newConnGrace) and returns how many connections are left.
func (s *Server) closeIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := mono()
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosed) ||
			now-c.since.Load() > int64(newConnGrace) && c.state.CompareAndSwap(stateNew, stateClosed) {
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
			case stateNew:
				// As net/http, whose ReadHeaderTimeout starts at accept: a
				// client that connects and says nothing holds a connection
				// for the header timeout, not the idle timeout.
				if age > header && c.state.CompareAndSwap(stateNew, stateClosed) {
					c.nc.Close()
				}
			case stateHeader, stateDraining:
				if age > header {
					c.timedOut.Store(true)
					c.nc.Close()
				}
			case stateBodyRead:
				if age > int64(interval) && c.raw != nil && !c.gone.Load() && hungUp(c.raw) {
					c.gone.Store(true)
					c.cancel()
				}
			}
		}
		clear(conns)
	}
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
