package admin

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	"github.com/tollgate/tollgate/gen/tollgate/admin/v1/adminv1connect"
	"github.com/tollgate/tollgate/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const (
	testToken     = "bootstrap-token-for-tests"
	testJWTSecret = "hs256-secret-for-operator-tokens"
)

// testServer is an admin role on a real embedded NATS and a fresh PostgreSQL
// database, serving on a loopback port.
type testServer struct {
	t      *testing.T
	cfg    Config
	srv    *Server
	url    string
	cancel context.CancelFunc
	done   chan error
}

func newTestConfig(t *testing.T, natsURL, dsn string) Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATSURL = natsURL
	cfg.PostgresDSN = dsn
	cfg.Pepper = "pepper-for-tests-0123456789abcdef0123456789"
	cfg.AdminToken = testToken
	cfg.JWTSecret = testJWTSecret
	return cfg
}

func startTestServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("start admin: %v", err)
	}
	ts := &testServer{t: t, cfg: cfg, srv: srv, url: "http://" + srv.Addr(), cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Run(ctx) }()
	t.Cleanup(ts.stop)
	if err := srv.WaitCaughtUp(ctxT(t)); err != nil {
		t.Fatalf("read model did not catch up: %v", err)
	}
	return ts
}

// stop shuts the server down and waits for it; safe to call twice.
func (ts *testServer) stop() {
	if ts.cancel == nil {
		return
	}
	ts.cancel()
	select {
	case err := <-ts.done:
		if err != nil {
			ts.t.Errorf("admin stopped with: %v", err)
		}
	case <-time.After(15 * time.Second):
		ts.t.Error("admin did not stop within 15s")
	}
	ts.srv.Close()
	ts.cancel = nil
}

// newAdmin starts NATS, a database and an admin server.
func newAdmin(t *testing.T) *testServer {
	_, nc := testenv.NATS(t)
	return startTestServer(t, newTestConfig(t, nc.ConnectedUrl(), testenv.Postgres(t)))
}

// client is a KeyService client that sends token; opts pick the protocol.
func (ts *testServer) client(token string, opts ...connect.ClientOption) adminv1connect.KeyServiceClient {
	opts = append(opts, connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if token != "" {
				req.Header().Set("Authorization", "Bearer "+token)
			}
			return next(ctx, req)
		}
	})))
	return adminv1connect.NewKeyServiceClient(http.DefaultClient, ts.url, opts...)
}

func mustCreate(t *testing.T, c adminv1connect.KeyServiceClient, req *adminv1.CreateKeyRequest) *adminv1.CreateKeyResponse {
	t.Helper()
	res, err := c.CreateKey(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("create key: %v", err)
	}
	return res.Msg
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func httpClient() *http.Client { return http.DefaultClient }
