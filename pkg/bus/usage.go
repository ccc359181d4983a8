package bus

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The USAGE stream carries one event per request from the edges.
const (
	UsageStream        = "USAGE"
	UsageSubjectPrefix = "tollgate.usage."
)

// UsageOptions bound the USAGE stream: it is a buffer between edges and the
// folds (metering, sink), not the system of record.
type UsageOptions struct {
	StreamOptions
	MaxAge   time.Duration
	MaxBytes int64
}

// EnsureUsageStream creates the USAGE stream or updates its settings.
func EnsureUsageStream(ctx context.Context, js jetstream.JetStream, opt UsageOptions) (jetstream.Stream, error) {
	if opt.MaxAge == 0 {
		opt.MaxAge = 30 * 24 * time.Hour
	}
	if opt.MaxBytes == 0 {
		opt.MaxBytes = -1
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        UsageStream,
		Description: "Tollgate usage events from the edges",
		Subjects:    []string{UsageSubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      opt.MaxAge,
		MaxBytes:    opt.MaxBytes,
		Replicas:    max(opt.Replicas, 1),
		Duplicates:  2 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", UsageStream, err)
	}
	return s, nil
}

// Partition spreads keys over n partitions, stably, so that each metering
// worker can own some partitions and see every event of its keys.
func Partition(keyID string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(keyID))
	return int(h.Sum32() % uint32(max(n, 1)))
}

// UsageSubject is the subject of a usage event.
func UsageSubject(partition int, account, keyID string) string {
	return UsageSubjectPrefix + strconv.Itoa(partition) + "." + account + "." + keyID
}
