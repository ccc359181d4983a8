// Package sink is the sink role: it writes every usage event from the USAGE
// stream exactly once into ClickHouse, where the usage analytics are read
// (see pkg/usagestore and the comment at the top of sink.go).
package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/usagestore"
)

// Server is a running sink role's parts. New connects and migrates; Run
// consumes until its context ends.
type Server struct {
	cfg      Config
	log      *slog.Logger
	wopt     usagestore.WriterOptions
	nc       *nats.Conn
	sink     *Sink
	listener net.Listener

	mu sync.Mutex
	ch driver.Conn // nil until Run has reached ClickHouse
}

// Run runs the sink role until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	s, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Run(ctx)
}

// New connects to NATS and makes sure the USAGE stream exists. ClickHouse is
// reached by Run, which waits for it: a sink started before its database
// (or during an outage) starts writing once the database is there.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	return newServer(ctx, cfg, log, usagestore.WriterOptions{Timeout: cfg.WriteTimeout})
}

func newServer(ctx context.Context, cfg Config, log *slog.Logger, wopt usagestore.WriterOptions) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sink config: %w", err)
	}
	s := &Server{cfg: cfg, log: log, wopt: wopt}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.nc, err = bus.Connect(cfg.NATSURL, "tollgate-sink", log); err != nil {
		return nil, err
	}
	js, err := jetstream.New(s.nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if s.sink, err = newSink(ctx, cfg, js, log); err != nil {
		return nil, err
	}
	if cfg.Listen != "" {
		if s.listener, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("sink listen on %s: %w", cfg.Listen, err)
		}
	}
	return s, nil
}

// Sink is the running sink (for tests and dev mode).
func (s *Server) Sink() *Sink { return s.sink }

// Run consumes, and serves /healthz and /readyz if configured, until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		conn, err := s.connect(gctx)
		if err != nil {
			return ignoreCancel(err)
		}
		s.sink.w = usagestore.NewWriter(conn, s.cfg.Consumer, s.wopt)
		err = s.sink.run(gctx)
		if err == nil && ctx.Err() == nil {
			err = errors.New("sink stopped")
		}
		return err
	})
	if s.listener != nil {
		srv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(s.listener); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("sink health endpoint: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	return g.Wait()
}

// connect opens ClickHouse and migrates the usage schema, retrying until it
// succeeds or ctx ends.
func (s *Server) connect(ctx context.Context) (driver.Conn, error) {
	var conn driver.Conn
	err := s.sink.retry(ctx, "connect to clickhouse", func(ctx context.Context) error {
		c, err := usagestore.Open(ctx, s.cfg.ClickHouseDSN)
		if err != nil {
			return err
		}
		if err := usagestore.Migrate(ctx, c); err != nil {
			c.Close()
			return err
		}
		conn = c
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.ch = conn
	s.mu.Unlock()
	return conn, nil
}

func (s *Server) clickhouse() driver.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.sink.registry(), promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		var problems []error
		if s.nc.Status() != nats.CONNECTED {
			problems = append(problems, fmt.Errorf("nats: %s", s.nc.Status()))
		}
		if ch := s.clickhouse(); ch == nil {
			problems = append(problems, errors.New("clickhouse: not reached yet"))
		} else if err := ch.Ping(ctx); err != nil {
			problems = append(problems, errors.New("clickhouse: unreachable"))
		}
		if err := errors.Join(problems...); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		st := s.sink.Stats()
		fmt.Fprintf(w, "ready\nevents %d\nduplicates %d\nbatches %d\nrepairs %d\n",
			st.Events.Load(), st.Duplicates.Load(), st.Batches.Load(), st.Repairs.Load())
	})
	return mux
}

// Close releases connections. It is safe on a partly built Server.
func (s *Server) Close() {
	if s.listener != nil {
		s.listener.Close()
	}
	if ch := s.clickhouse(); ch != nil {
		ch.Close()
	}
	if s.nc != nil {
		s.nc.Close()
	}
}
