// Package admin is the admin role: KeyService over Connect (and gRPC,
// gRPC-Web), Enclava's REST routes, and the projector that keeps the key read
// model in PostgreSQL.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/tollgate/tollgate/gen/tollgate/admin/v1/adminv1connect"
	"github.com/tollgate/tollgate/pkg/auth"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/catalog"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/pgdb"
	"github.com/tollgate/tollgate/services/admin/internal/readmodel"
	"github.com/tollgate/tollgate/services/metering"
)

// Server is a running admin role's parts. New connects and prepares; Run
// serves until its context ends.
type Server struct {
	cfg       Config
	log       *slog.Logger
	nc        *nats.Conn
	pool      *pgxpool.Pool
	projector *readmodel.Projector
	startSeq  uint64 // the KEYS stream's last sequence when this server started
	listener  net.Listener
	handler   http.Handler
	usage     *usageService
}

// Run runs the admin role until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	s, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Run(ctx)
}

// New connects to NATS and PostgreSQL, migrates the read model and listens.
func New(ctx context.Context, cfg Config, log *slog.Logger) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("admin config: %w", err)
	}
	s := &Server{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	hasher, err := keys.NewHasher([]byte(cfg.Pepper), cfg.PepperID)
	if err != nil {
		return nil, err
	}
	pub, err := cfg.rsaPublicKey()
	if err != nil {
		return nil, err
	}
	if s.nc, err = bus.Connect(cfg.NATSURL, "tollgate-admin", log); err != nil {
		return nil, err
	}
	js, err := jetstream.New(s.nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	keyLog, err := bus.NewKeyLog(ctx, js, bus.StreamOptions{Replicas: cfg.StreamReplicas})
	if err != nil {
		return nil, err
	}
	if s.startSeq, err = keyLog.LastSequence(ctx); err != nil {
		return nil, err
	}
	if s.pool, err = pgdb.Open(ctx, cfg.PostgresDSN); err != nil {
		return nil, err
	}
	if err := readmodel.Migrate(ctx, s.pool); err != nil {
		return nil, err
	}
	if err := metering.Migrate(ctx, s.pool); err != nil {
		return nil, err
	}
	if cfg.RebuildReadModel {
		log.Info("rebuilding the key read model from the KEYS stream")
		if err := readmodel.Reset(ctx, s.pool); err != nil {
			return nil, err
		}
	}
	store := readmodel.NewStore(s.pool, time.Now)
	s.projector = readmodel.NewProjector(s.pool, js, log)
	svc := &keyService{keyLog: keyLog, store: store, projector: s.projector, hasher: hasher,
		now: time.Now, defaultPrefix: cfg.DefaultPrefix, logger: log, pool: s.pool}
	authn := auth.New(auth.Config{BootstrapToken: cfg.AdminToken, DefaultAccount: cfg.DefaultAccount,
		JWTSecret: []byte(cfg.JWTSecret), JWTPublicKey: pub, Hasher: hasher, Keys: store})
	s.usage = newUsageService(cfg.ClickHouseDSN, authn, log)
	cat, err := catalog.Open(ctx, js, cfg.StreamReplicas)
	if err != nil {
		return nil, err
	}
	if err := cat.OpenAudit(ctx, cfg.StreamReplicas, log); err != nil {
		return nil, err
	}
	s.handler = s.routes(svc, authn, &catalogHandler{store: cat, auth: authn, log: log, now: time.Now})
	if s.listener, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("admin listen on %s: %w", cfg.Listen, err)
	}
	return s, nil
}

func (s *Server) routes(svc *keyService, authn *auth.Authenticator, cat *catalogHandler) http.Handler {
	mux := http.NewServeMux()
	m := newMetrics()
	counted := connect.WithInterceptors(m.interceptor())
	mux.Handle(adminv1connect.NewKeyServiceHandler(&keyHandler{svc: svc, auth: authn, log: s.log}, counted))
	mux.Handle(adminv1connect.NewCatalogServiceHandler(cat, counted))
	mux.Handle(adminv1connect.NewUsageServiceHandler(s.usage, counted))
	mux.Handle("GET /metrics", m.handler())
	(&restHandler{svc: svc, auth: authn, log: s.log}).register(mux)
	services := []string{adminv1connect.KeyServiceName, adminv1connect.CatalogServiceName, adminv1connect.UsageServiceName}
	mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker(services...)))
	mux.Handle(grpcreflect.NewHandlerV1(grpcreflect.NewStaticReflector(services...)))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(grpcreflect.NewStaticReflector(services...)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.ready)
	return mux
}

// ready answers 200 when NATS and PostgreSQL are reachable and the read model
// has caught up with the events that existed when the server started.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var problems []error
	if pos := s.projector.Position(); pos < s.startSeq {
		problems = append(problems, fmt.Errorf("read model: catching up (%d of %d)", pos, s.startSeq))
	}
	if s.nc.Status() != nats.CONNECTED {
		problems = append(problems, fmt.Errorf("nats: %s", s.nc.Status()))
	}
	if err := s.pool.Ping(ctx); err != nil {
		problems = append(problems, errors.New("postgres: unreachable"))
	}
	if err := errors.Join(problems...); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}

// Addr is the address the API listens on.
func (s *Server) Addr() string { return s.listener.Addr().String() }

// Handler serves the whole admin API (for in-memory tests).
func (s *Server) Handler() http.Handler { return s.handler }

// WaitCaughtUp waits until the read model includes every key event that
// existed when the server started.
func (s *Server) WaitCaughtUp(ctx context.Context) error {
	return s.projector.WaitFor(ctx, s.startSeq)
}

// Projector is the read model's projector.
func (s *Server) Projector() *readmodel.Projector { return s.projector }

// Run serves and projects until ctx ends, then drains in-flight requests.
func (s *Server) Run(ctx context.Context) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		Protocols:         new(http.Protocols),
	}
	// HTTP/1.1 for curl and REST, unencrypted HTTP/2 for gRPC clients.
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := s.projector.Run(gctx)
		if gctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("key projector stopped: %w", err)
	})
	g.Go(func() error {
		s.log.Info("admin API listening", "addr", s.Addr())
		if err := srv.Serve(s.listener); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("admin serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	return g.Wait()
}

// Close releases connections. It is safe on a partly built Server.
func (s *Server) Close() {
	if s.usage != nil {
		s.usage.Close()
	}
	if s.listener != nil {
		s.listener.Close()
	}
	if s.pool != nil {
		s.pool.Close()
	}
	if s.nc != nil {
		s.nc.Close()
	}
}
