package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Names of metering's outputs on the bus.
const (
	BalancesBucket      = "BALANCES"
	AlertsStream        = "ALERTS"
	AlertsSubjectPrefix = "tollgate.alerts."
)

// AlertSubject is the subject of a key's alerts.
func AlertSubject(account, keyID string) string { return AlertsSubjectPrefix + account + "." + keyID }

// EnsureBalances creates the BALANCES bucket: the latest balance of each key,
// for edges to watch. Only the latest value matters.
func EnsureBalances(ctx context.Context, js jetstream.JetStream, opt StreamOptions) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: BalancesBucket, Description: "Tollgate authoritative balances per key (from metering)",
		History: 1, Storage: jetstream.FileStorage, Replicas: max(opt.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("ensure bucket %s: %w", BalancesBucket, err)
	}
	return kv, nil
}

// EnsureAlertsStream creates the ALERTS stream.
func EnsureAlertsStream(ctx context.Context, js jetstream.JetStream, opt StreamOptions) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: AlertsStream, Description: "Tollgate limit alerts",
		Subjects: []string{AlertsSubjectPrefix + ">"}, Storage: jetstream.FileStorage,
		MaxAge: 90 * 24 * time.Hour, Replicas: max(opt.Replicas, 1), Duplicates: 10 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", AlertsStream, err)
	}
	return s, nil
}
