package usagepub

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/testenv"
)

// TestAckOKWithTheServersAnswers asks a real server for each kind of answer
// a publish can get and checks how ackOK reads it, and that the server's
// acknowledgements take the fast path.
func TestAckOKWithTheServersAnswers(t *testing.T) {
	nc, _, _ := usageBus(t)
	subject := bus.UsageSubject(3, "acme", "key_1")
	ask := func(h nats.Header) *nats.Msg {
		t.Helper()
		m, err := nc.RequestMsg(&nats.Msg{Subject: subject, Header: h, Data: []byte("x")}, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	stored := ask(nats.Header{jetstream.MsgIDHeader: []string{"e1:3:1"}})
	duplicate := ask(nats.Header{jetstream.MsgIDHeader: []string{"e1:3:1"}})
	wrongStream := ask(nats.Header{jetstream.MsgIDHeader: []string{"e1:3:2"}, jetstream.ExpectedStreamHeader: []string{"OTHER"}})
	noStream, err := nc.RequestMsg(&nats.Msg{Subject: "not.a.stream", Data: []byte("x")}, 5*time.Second)
	if err != nats.ErrNoResponders {
		t.Fatalf("a subject without a stream: %v, %v; want no responders", noStream, err)
	}

	for _, tc := range []struct {
		name     string
		data     string
		ok, fast bool
	}{
		{"stored", string(stored.Data), true, true},
		{"duplicate", string(duplicate.Data), true, true},
		{"error", string(wrongStream.Data), false, false},
		{"no responders (empty body)", "", false, false},
		{"another stream, decoded", `{"stream":"OTHER","seq":5}`, true, false},
		{"with a domain, decoded", `{"stream":"USAGE","domain":"hub","seq":5}`, true, false},
		{"no stream", `{"seq":5}`, false, false},
		{"error with a stream", `{"error":{"code":503,"description":"x"},"stream":"USAGE","seq":0}`, false, false},
		{"not JSON", `{"stream":"USAGE","seq":5`, false, false},
		{"sequence too large", `{"stream":"USAGE","seq":99999999999999999999}`, false, false},
		{"leading zero", `{"stream":"USAGE","seq":05}`, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ackOK([]byte(tc.data)); got != tc.ok {
				t.Errorf("ackOK(%s) = %v, want %v", tc.data, got, tc.ok)
			}
			if got := fastAck([]byte(tc.data)); got != tc.fast {
				t.Errorf("fastAck(%s) = %v, want %v", tc.data, got, tc.fast)
			}
		})
	}
}

// FuzzAckOK: the fast path accepts nothing that nats.go's decoding rule
// refuses, and ackOK is that rule.
func FuzzAckOK(f *testing.F) {
	for _, s := range []string{
		`{"stream":"USAGE","seq":12}`, `{"stream":"USAGE","seq":12,"duplicate": true}`,
		`{"stream":"USAGE","seq":0}`, `{"error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}`,
		`{"stream":"USAGE","seq":18446744073709551615}`, `{"stream":"","seq":1}`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		decoded := decodedAckOK(data)
		if fastAck(data) && !decoded {
			t.Fatalf("fastAck accepts %q, which nats.go does not", data)
		}
		if ackOK(data) != decoded {
			t.Fatalf("ackOK(%q) = %v, decoding says %v", data, !decoded, decoded)
		}
	})
}

// TestPublishReturnsWhatWasNotAcknowledged: without a stream nothing is
// acknowledged and every event comes back; with one, none does, and
// publishing the same events again is acknowledged as duplicates without
// storing them twice.
func TestPublishReturnsWhatWasNotAcknowledged(t *testing.T) {
	_, nc := testenv.NATS(t)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := New(nc, Config{SpoolDir: t.TempDir(), AckTimeout: 2 * time.Second}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	evs := make([]*eventsv1.UsageEvent, 5)
	for i := range evs {
		evs[i] = &eventsv1.UsageEvent{KeyId: "key_x", Account: "acme", Cost: int64(i)} // one partition: sequences 1 to 5
		p.Publish(evs[i])
	}
	if failed := p.publish(ctx, evs); len(failed) != len(evs) {
		t.Fatalf("no stream yet: %d of %d events came back, want all", len(failed), len(evs))
	}
	if _, err := bus.EnsureUsageStream(ctx, js, bus.UsageOptions{}); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		if failed := p.publish(ctx, evs); len(failed) != 0 {
			t.Fatalf("round %d: %d events came back, want none", round, len(failed))
		}
	}
	if published, _ := p.Stats(); published != 10 {
		t.Errorf("published %d, want 10 acknowledgements (5 stored, 5 duplicates)", published)
	}
	got := streamSequences(t, js)[p.Instance()]
	if len(got) != len(evs) {
		t.Fatalf("stream holds %d distinct events, want %d: %v", len(got), len(evs), got)
	}
	for seq, n := range got {
		if n != 1 {
			t.Errorf("sequence %d stored %d times", seq, n)
		}
	}
}
