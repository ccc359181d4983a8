// Package edge is the edge role: an OpenAI- and Anthropic-compatible proxy
// that checks every key rule in memory, forwards, streams the answer back,
// prices it and publishes one usage event per request.
package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/catalog"
	"github.com/tollgate/tollgate/pkg/h1"
	"github.com/tollgate/tollgate/services/edge/internal/keyring"
	"github.com/tollgate/tollgate/services/edge/internal/usagepub"
)

// Server is a running edge's parts. New connects and prepares; Run serves.
type Server struct {
	cfg      Config
	log      *slog.Logger
	nc       *nats.Conn
	js       jetstream.JetStream
	keys     *keyring.Ring
	catalog  *catalog.View
	usage    *usagepub.Publisher
	publish  func(*eventsv1.UsageEvent) uint64 // usage.Publish; tests hold it
	upstream http.RoundTripper                 // h1.Transport; an in-memory one in benchmarks
	bases    sync.Map                          // service base URL -> *url.URL, parsed once
	creds    credentials
	bufs     sync.Pool
	listener net.Listener
	handler  http.Handler
	metrics  *metrics
	isLoaded atomic.Bool  // see loaded
	inflight atomic.Int64 // requests in handlers (track)
	// usageReady is closed once the USAGE stream is known to exist.
	usageReady chan struct{}
	// maxResponse bounds a buffered answer (maxResponseBytes; tests lower it).
	maxResponse int64
}

// Run runs the edge role until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	s, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Run(ctx)
}

// New connects to NATS, prepares the streams and listens. It does not wait
// for the bus: an edge started while NATS is away serves nothing until the
// keys arrive, but it comes up.
func New(ctx context.Context, cfg Config, log *slog.Logger) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("edge config: %w", err)
	}
	s := &Server{cfg: cfg, log: log, maxResponse: maxResponseBytes, usageReady: make(chan struct{})}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.nc, err = bus.Connect(cfg.NATSURL, "tollgate-edge", log, nats.RetryOnFailedConnect(true)); err != nil {
		return nil, err
	}
	if s.js, err = jetstream.New(s.nc); err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	s.catalog = catalog.NewView()
	s.keys = keyring.New([]byte(cfg.Pepper), log)
	if s.usage, err = usagepub.New(s.nc, usagepub.Config{Instance: cfg.Instance, SpoolDir: cfg.SpoolDir, Partitions: cfg.Partitions, BatchDelay: cfg.UsageBatchDelay}, log); err != nil {
		return nil, err
	}
	s.publish = s.usage.Publish
	s.upstream = newUpstream(cfg.UpstreamTimeout)
	s.bufs.New = func() any { b := make([]byte, 32<<10); return &b }
	s.metrics = newMetrics(s)
	s.handler = s.routes()
	if s.listener, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("edge listen on %s: %w", cfg.Listen, err)
	}
	return s, nil
}

// Addr is the address the proxy listens on.
func (s *Server) Addr() string { return s.listener.Addr().String() }

// Instance is this edge's id in usage events.
func (s *Server) Instance() string { return s.usage.Instance() }

// Handler serves the proxy (for in-memory tests and benchmarks).
func (s *Server) Handler() http.Handler { return s.handler }

// loadStep is one thing the edge reads before it serves, closed once read.
type loadStep struct {
	what string // for /readyz while it is not
	done <-chan struct{}
}

// loading is what the edge reads once before it serves: the keys, their
// balances and the catalog that existed at start, and the USAGE stream.
func (s *Server) loading() []loadStep {
	return []loadStep{
		{"keys: loading", s.keys.Ready()},
		{"balances: loading", s.keys.BalancesReady()},
		{"catalog: loading", s.catalog.Ready()},
		{"usage stream: not reached yet", s.usageReady},
	}
}

// WaitReady waits until everything in loading is loaded.
func (s *Server) WaitReady(ctx context.Context) error {
	for _, l := range s.loading() {
		select {
		case <-l.done:
		case <-ctx.Done():
			return fmt.Errorf("edge not ready: %w", ctx.Err())
		}
	}
	return nil
}

// loaded reports whether everything in loading has been loaded once; from
// then on it stays true (a lost bus keeps what was loaded), and costs one
// atomic load per request.
func (s *Server) loaded() bool {
	if s.isLoaded.Load() {
		return true
	}
	if s.notLoaded() != "" {
		return false
	}
	s.isLoaded.Store(true)
	return true
}

// notLoaded names the first thing in loading not loaded yet ("" when none).
func (s *Server) notLoaded() string {
	for _, l := range s.loading() {
		select {
		case <-l.done:
		default:
			return l.what
		}
	}
	return ""
}

func (s *Server) busUp() bool { return s.nc.Status() == nats.CONNECTED }

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	if what := s.notLoaded(); what != "" {
		http.Error(w, what, http.StatusServiceUnavailable)
		return
	}
	if !s.busUp() && s.cfg.FailClosed {
		http.Error(w, "nats: "+s.nc.Status().String(), http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}

// Run serves until ctx ends; then it drains in-flight requests (streams
// included) and flushes usage events, spooling what the bus does not take.
func (s *Server) Run(ctx context.Context) error {
	srv := s.httpServer()

	// The followers of the bus run until the server has drained, so that
	// requests still in flight keep seeing revocations.
	follow, stopFollowing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopFollowing()
	g, gctx := errgroup.WithContext(follow)
	g.Go(func() error {
		return keepRunning(gctx, s.log, "keyring", func(c context.Context) error { return s.keys.Run(c, s.js) })
	})
	g.Go(func() error {
		return keepRunning(gctx, s.log, "catalog", s.watchCatalog)
	})
	g.Go(func() error { return s.ensureUsageStream(gctx) })
	g.Go(func() error {
		return keepRunning(gctx, s.log, "balances", func(c context.Context) error { return s.keys.WatchBalances(c, s.js, s.Instance()) })
	})
	pubCtx, stopPublishing := context.WithCancel(context.WithoutCancel(ctx))
	pubDone := make(chan error, 1)
	go func() { pubDone <- s.usage.Run(pubCtx) }()

	serveErr := make(chan error, 1)
	go func() {
		s.log.Info("edge listening", "addr", s.Addr(), "instance", s.Instance())
		if err := srv.Serve(s.listener); !errors.Is(err, http.ErrServerClosed) {
			serveErr <- err
		}
		close(serveErr)
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		s.log.Warn("edge: requests still in flight at shutdown", "err", serr)
	}
	s.awaitHandlers(srv)
	stopPublishing() // every request has published its event: flush them
	if perr := <-pubDone; perr != nil {
		err = errors.Join(err, perr)
	}
	stopFollowing()
	g.Wait()
	return err
}

// watchCatalog opens the CATALOG bucket (creating it if need be) and keeps
// the edge's view of it current. It runs as a follower: an edge started while
// the bus is away comes up, answers 503 not_ready, and loads the catalog once
// the bus is there.
func (s *Server) watchCatalog(ctx context.Context) error {
	store, err := catalog.Bind(ctx, s.js, s.cfg.StreamReplicas)
	if err != nil {
		return err
	}
	return s.catalog.Watch(ctx, store, s.log)
}

// ensureUsageStream creates the USAGE stream if need be, retrying until the
// bus answers, then closes usageReady: the edge is not ready before (events
// would be spooled, no stream acknowledging them).
func (s *Server) ensureUsageStream(ctx context.Context) error {
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		_, err := bus.EnsureUsageStream(ctx, s.js, bus.UsageOptions{StreamOptions: bus.StreamOptions{Replicas: s.cfg.StreamReplicas}})
		if err == nil {
			close(s.usageReady)
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("edge: the usage stream could not be ensured; retrying", "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
	}
}

// awaitHandlers waits for the handlers still running after Shutdown: those
// of connections Shutdown does not drain (HTTP/2 ones, handed to the
// fallback server; net/http's server, which returns at its deadline and
// leaves them running). Closing the connections cancels the requests, which
// then settle and publish their usage events: the publisher must still be
// running for those. A handler that ignores its context for 10 s more is
// logged; its event may be lost.
func (s *Server) awaitHandlers(srv interface{ Close() error }) {
	if s.inflight.Load() == 0 {
		return
	}
	srv.Close() //nolint:errcheck // closing what is left; nothing to report
	for end := time.Now().Add(10 * time.Second); s.inflight.Load() > 0 && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.inflight.Load(); n > 0 {
		s.log.Error("edge: requests still running after shutdown; their usage events may be lost", "requests", n)
	}
}

// track counts the requests in handlers (awaitHandlers).
func (s *Server) track(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.inflight.Add(1)
		defer s.inflight.Add(-1)
		next.ServeHTTP(w, r)
	})
}

// httpServer is the server of the client-facing listener: the edge's own
// HTTP/1.1 server (h1.Server; HTTP/2 without TLS goes on to net/http's), or
// net/http's for everything with --http-server net/http.
func (s *Server) httpServer() interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
} {
	std := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		Protocols:         new(http.Protocols),
	}
	std.Protocols.SetHTTP1(true)
	std.Protocols.SetUnencryptedHTTP2(true)
	if s.cfg.HTTPServer == HTTPServerStd {
		return std
	}
	return &h1.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: std.ReadHeaderTimeout,
		IdleTimeout:       std.IdleTimeout,
		WatchInterval:     watchInterval,
		Fallback:          std,
		Log:               s.log,
	}
}

// watchInterval is how often h1.Server checks its timeouts and looks for
// clients that hung up (tests shorten it).
var watchInterval = 250 * time.Millisecond

// keepRunning runs a follower until ctx ends, restarting it after failures.
func keepRunning(ctx context.Context, log *slog.Logger, name string, run func(context.Context) error) error {
	backoff := 100 * time.Millisecond
	for {
		err := run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("edge: follower failed; restarting", "follower", name, "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// Close releases connections. It is safe on a partly built Server.
func (s *Server) Close() {
	if s.listener != nil {
		s.listener.Close()
	}
	if t, ok := s.upstream.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
	if s.nc != nil {
		s.nc.Close()
	}
}
