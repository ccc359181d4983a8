// Package testenv gives integration tests real servers: one PostgreSQL and
// one ClickHouse per test binary (started on first use, with a fresh database
// per test) and embedded NATS JetStream servers per test.
//
// A package that uses Postgres or ClickHouse must call Main from TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// A server that cannot start fails the test; it is never skipped.
package testenv

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	mainCalled atomic.Bool
	dbSeq      atomic.Int64
	// logger reports only problems: server output goes to files in the
	// servers' directories, and a passing run should be quiet.
	logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
)

// shared is a server started at most once per test binary.
type shared[S any] struct {
	once sync.Once
	srv  S
	dir  string
	err  error
	stop func(context.Context) error
}

// get starts the server on first use and returns it, or fails t.
func (s *shared[S]) get(t testing.TB, what string, start func(ctx context.Context, dir string) (S, func(context.Context) error, error)) S {
	t.Helper()
	if !mainCalled.Load() {
		t.Fatalf("testenv: %s needs testenv.Main: add `func TestMain(m *testing.M) { testenv.Main(m) }` so the server is stopped when the tests end", what)
	}
	s.once.Do(func() {
		s.dir, s.err = os.MkdirTemp("", "tollgate-testenv-"+strings.ToLower(what)+"-")
		if s.err != nil {
			return
		}
		s.srv, s.stop, s.err = start(context.Background(), s.dir)
	})
	if s.err != nil {
		t.Fatalf("testenv: %s could not start (are the packages installed? see scripts/deps.sh): %v", what, s.err)
	}
	return s.srv
}

// shutdown stops the server if it was started and removes its directory.
func (s *shared[S]) shutdown(ctx context.Context, what string) {
	if s.stop != nil {
		if err := s.stop(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: stop %s: %v\n", what, err)
		}
	}
	if s.dir != "" {
		if err := os.RemoveAll(s.dir); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: remove %s: %v\n", s.dir, err)
		}
	}
}

// Main runs the tests, then stops the servers that were started, so that no
// process outlives the test binary, and exits with the tests' exit code.
func Main(m *testing.M) {
	if dir := os.Getenv(natsChildEnv); dir != "" {
		runNATSChild(dir)
	}
	mainCalled.Store(true)
	code := m.Run()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	var wg sync.WaitGroup
	wg.Go(func() { pg.shutdown(ctx, "PostgreSQL") })
	wg.Go(func() { ch.shutdown(ctx, "ClickHouse") })
	wg.Wait()
	cancel()
	os.Exit(code)
}

var notIdent = regexp.MustCompile(`[^a-z0-9]+`)

// databaseName makes a database name that is unique within the test binary
// (which owns its servers) and says which test it belongs to.
func databaseName(t testing.TB) string {
	base := strings.Trim(notIdent.ReplaceAllString(strings.ToLower(t.Name()), "_"), "_")
	if len(base) > 40 {
		base = base[:40]
	}
	return fmt.Sprintf("t_%s_%d", base, dbSeq.Add(1))
}

// adminContext bounds the CREATE/DROP DATABASE done for a test.
func adminContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}
