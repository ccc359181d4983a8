// Package bus names the streams and buckets Tollgate keeps on NATS JetStream
// (DESIGN.md section 2) and holds the small adapters every role shares.
package bus

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream and subject names.
const (
	KeysStream        = "KEYS"
	KeysSubjectPrefix = "tollgate.keys."
)

// KeySubject is the subject of one key's events.
func KeySubject(account, keyID string) string {
	return KeysSubjectPrefix + account + "." + keyID
}

// StreamOptions are the deployment's choices for every stream.
type StreamOptions struct {
	// Replicas is 1 for a single server, 3 for a production cluster.
	Replicas int
}

// EnsureKeysStream creates the KEYS stream or updates its settings. It keeps
// every event forever: key state is rebuilt from it.
func EnsureKeysStream(ctx context.Context, js jetstream.JetStream, opt StreamOptions) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        KeysStream,
		Description: "Tollgate key lifecycle events",
		Subjects:    []string{KeysSubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    max(opt.Replicas, 1),
		Duplicates:  2 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", KeysStream, err)
	}
	return s, nil
}

// Connect dials NATS and logs connection changes. url may be a comma-separated
// list of servers.
func Connect(url, name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
	}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	return nc, nil
}
