package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/keys"
)

// KeyLog appends key events to the KEYS stream and reads a key's current
// state from it. A key's revision is the stream sequence of its last event.
type KeyLog struct {
	js     jetstream.JetStream
	stream jetstream.Stream
}

// NewKeyLog ensures the KEYS stream and returns a KeyLog on it.
func NewKeyLog(ctx context.Context, js jetstream.JetStream, opt StreamOptions) (*KeyLog, error) {
	s, err := EnsureKeysStream(ctx, js, opt)
	if err != nil {
		return nil, err
	}
	return &KeyLog{js: js, stream: s}, nil
}

// Append publishes ev only if the key's last event is still expectedRev (0: the
// key must not exist yet). A lost race returns *keys.ConflictError.
func (l *KeyLog) Append(ctx context.Context, ev *eventsv1.KeyEvent, expectedRev uint64) (uint64, error) {
	data, err := proto.Marshal(ev)
	if err != nil {
		return 0, fmt.Errorf("marshal key event: %w", err)
	}
	k := ev.GetKey()
	ack, err := l.js.Publish(ctx, KeySubject(k.GetAccount(), k.GetId()), data,
		jetstream.WithExpectLastSequencePerSubject(expectedRev),
		jetstream.WithMsgID(ev.GetEventId()))
	if err != nil {
		if IsWrongLastSequence(err) {
			return 0, &keys.ConflictError{KeyID: k.GetId(), Expected: expectedRev}
		}
		return 0, fmt.Errorf("append key event for %s: %w", k.GetId(), err)
	}
	return ack.Sequence, nil
}

// Last returns the key's last event and its revision, or keys.ErrNotFound.
func (l *KeyLog) Last(ctx context.Context, account, keyID string) (*eventsv1.KeyEvent, uint64, error) {
	msg, err := l.stream.GetLastMsgForSubject(ctx, KeySubject(account, keyID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, keys.ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read key %s: %w", keyID, err)
	}
	ev := new(eventsv1.KeyEvent)
	if err := proto.Unmarshal(msg.Data, ev); err != nil {
		return nil, 0, fmt.Errorf("decode key event %d: %w", msg.Sequence, err)
	}
	return ev, msg.Sequence, nil
}

// IsWrongLastSequence reports whether err is JetStream's answer to a failed
// expected-last-sequence check. There is no sentinel for it, and replicated
// streams answer with a different code.
func IsWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// LastSequence is the sequence of the newest event in the KEYS stream.
func (l *KeyLog) LastSequence(ctx context.Context) (uint64, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read %s stream info: %w", KeysStream, err)
	}
	return info.State.LastSeq, nil
}
