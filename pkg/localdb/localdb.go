package localdb

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"time"
)

// queryTimeout bounds administrative queries (CREATE/DROP DATABASE) whose
// context has no deadline: a wedged server must not hang a caller forever.
const queryTimeout = 30 * time.Second

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process may take it before it is used; the Start functions retry
// with fresh ports when that happens.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// databaseName is what CreateDatabase and DropDatabase accept: a plain
// identifier that needs no quoting rules and is valid in both servers
// (PostgreSQL truncates identifiers beyond 63 bytes).
var databaseName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

func checkDatabaseName(name string) error {
	if !databaseName.MatchString(name) {
		return fmt.Errorf("invalid database name %q: want letters, digits and _ (not first), at most 63", name)
	}
	return nil
}

// withDefaultTimeout adds queryTimeout to ctx unless it already has a deadline.
func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, queryTimeout)
}

func loggerOrDiscard(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}
