package sink

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/usagestore"
)

// toEvent is how the sink decoded a message before it had a decoder: the
// reference the decoder must agree with.
func toEvent(m *nats.Msg) (usagestore.Event, error) {
	var ev eventsv1.UsageEvent
	if err := proto.Unmarshal(m.Data, &ev); err != nil {
		return usagestore.Event{}, err
	}
	e := usagestore.Event{
		Account: ev.GetAccount(), KeyID: ev.GetKeyId(),
		EdgeInstance: ev.GetEdgeInstance(), Partition: ev.GetPartition(), Sequence: ev.GetSequence(),
		Service: ev.GetService(), Model: ev.GetModel(), Endpoint: ev.GetEndpoint(),
		InputTokens: ev.GetInputTokens(), OutputTokens: ev.GetOutputTokens(), Cost: ev.GetCost(),
		RequestBytes: ev.GetRequestBytes(), ResponseBytes: ev.GetResponseBytes(),
		Status: uint16(min(max(ev.GetStatus(), 0), 65535)), LatencyUS: ev.GetLatencyUs(),
		Streamed: ev.GetStreamed(), Estimated: ev.GetEstimated(),
	}
	var meta *nats.MsgMetadata
	if ev.GetOccurredAt() == nil || e.EdgeInstance == "" {
		var err error
		if meta, err = m.Metadata(); err != nil {
			return usagestore.Event{}, fmt.Errorf("message metadata: %w", err)
		}
	}
	if ev.GetOccurredAt() != nil {
		e.OccurredAt = ev.GetOccurredAt().AsTime()
	} else {
		e.OccurredAt = meta.Timestamp.UTC()
	}
	if e.EdgeInstance == "" {
		e.EdgeInstance, e.Partition, e.Sequence = "stream:"+bus.UsageStream, 0, meta.Sequence.Stream
	}
	return e, nil
}

// msgAt is data as the stream's message seq, stored at a time in Berlin,
// as a pull consumer delivers it. Its Sub is set so that nats.Msg.Metadata,
// the reference, parses it.
func msgAt(data []byte, seq uint64) *nats.Msg {
	stored := time.Date(2025, 4, 1, 12, 0, 0, 5, time.FixedZone("CEST", 2*3600))
	return &nats.Msg{
		Subject: "tollgate.usage.0.acme.key_x", Data: data, Sub: &nats.Subscription{},
		Reply: fmt.Sprintf("$JS.ACK._.HASH.USAGE.test.1.%d.%d.%d.0.tok", seq, seq, stored.UnixNano()),
	}
}

// unbound is data in a message that did not come from a stream: without
// metadata.
func unbound(data []byte) *nats.Msg {
	return &nats.Msg{Subject: "tollgate.usage.0.acme.key_x", Data: data}
}

func fullEvent() *eventsv1.UsageEvent {
	return &eventsv1.UsageEvent{
		EventId: "edge-a:2:41", OccurredAt: timestamppb.New(time.Date(2025, 3, 31, 23, 59, 59, 999_999_999, time.UTC)),
		SchemaVersion: 1, EdgeInstance: "edge-a", Sequence: 41, KeyId: "key_acme_3", Account: "acme",
		Service: "acme/openai", Model: "gpt-4o", Endpoint: "chat.completions",
		InputTokens: 1234, OutputTokens: 567, Cost: 42_000_000, RequestBytes: 2048, ResponseBytes: -1,
		Status: 499, LatencyUs: 1_500_000, Streamed: true, Estimated: true, Partition: 2,
	}
}

func marshal(t testing.TB, ev *eventsv1.UsageEvent) []byte {
	t.Helper()
	b, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Wire format pieces for what proto.Marshal does not write.
func varintField(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

func bytesField(num protowire.Number, v string) []byte {
	return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), v)
}

func join(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// stale is what a decoder decodes into: an event of before.
var stale = usagestore.Event{
	Account: "stale", KeyID: "stale", OccurredAt: time.Now(), EdgeInstance: "stale", Partition: 1, Sequence: 1,
	Service: "stale", Model: "stale", Endpoint: "stale", InputTokens: 1, OutputTokens: 1, Cost: 1,
	RequestBytes: 1, ResponseBytes: 1, Status: 1, LatencyUS: 1, Streamed: true, Estimated: true,
}

// checkDecode decodes m with d and with the reference, and fails unless
// both fail or both give the same event.
func checkDecode(t *testing.T, d *decoder, m *nats.Msg) (usagestore.Event, error) {
	t.Helper()
	want, wantErr := toEvent(m)
	got := stale
	k, err := d.event(m, &got)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("decoder error %v, proto.Unmarshal error %v, for % x", err, wantErr, m.Data)
	}
	if err != nil {
		return got, err
	}
	if got != want {
		t.Fatalf("decoded\n%+v\nwant\n%+v\nfor % x", got, want, m.Data)
	}
	if ref := d.edges[got.EdgeInstance]; ref.name != got.EdgeInstance || k != (eventKey{edge: ref.n, partition: got.Partition, seq: got.Sequence}) {
		t.Fatalf("key %+v for %+v (edge numbered %d)", k, got, ref.n)
	}
	return got, nil
}

func TestDecodeAgreesWithProto(t *testing.T) {
	full := marshal(t, fullEvent())
	noTime := fullEvent()
	noTime.OccurredAt = nil
	noEdge := fullEvent()
	noEdge.EdgeInstance = ""
	clamped, negative := fullEvent(), fullEvent()
	clamped.Status, negative.Status = 70_000, -5
	epoch := fullEvent()
	epoch.OccurredAt = &timestamppb.Timestamp{}
	unknown := [][]byte{
		varintField(100, 1<<63),
		protowire.AppendFixed32(protowire.AppendTag(nil, 101, protowire.Fixed32Type), 7),
		protowire.AppendFixed64(protowire.AppendTag(nil, 102, protowire.Fixed64Type), 7),
		bytesField(103, "\xff not UTF-8: not a string field"),
		protowire.AppendTag(join(protowire.AppendTag(nil, 104, protowire.StartGroupType), varintField(1, 1), bytesField(2, "x")), 104, protowire.EndGroupType),
	}
	tests := []struct {
		name    string
		data    []byte
		wantErr bool
	}{
		{name: "full", data: full},
		{name: "empty", data: nil},
		{name: "no time", data: marshal(t, noTime)},
		{name: "no edge", data: marshal(t, noEdge)},
		{name: "empty edge written", data: join(full, bytesField(4, ""))},
		{name: "epoch", data: marshal(t, epoch)},
		{name: "status above 16 bits", data: marshal(t, clamped)},
		{name: "negative status", data: marshal(t, negative)},
		{name: "status beyond int32", data: join(full, varintField(16, 1<<32+404))},
		{name: "repeated fields, last wins", data: join(full, bytesField(7, "globex"), varintField(5, 9), bytesField(4, "edge-b"), varintField(18, 0))},
		{name: "timestamps merged", data: join(full, bytesField(2, string(varintField(2, 7))), bytesField(2, string(varintField(1, 5))))},
		{name: "timestamp nanos beyond a second", data: join(full, bytesField(2, string(varintField(2, 3_000_000_000))))},
		{name: "unknown fields", data: join(append([][]byte{full}, unknown...)...)},
		{name: "unknown fields in the timestamp", data: join(full, bytesField(2, string(join(unknown...))))},
		{name: "known fields of another wire type", data: join(full, varintField(4, 1), bytesField(5, "x"), varintField(2, 3),
			protowire.AppendFixed32(protowire.AppendTag(nil, 16, protowire.Fixed32Type), 200))},
		{name: "end of a group not begun", data: join(full, protowire.AppendTag(nil, 104, protowire.EndGroupType)), wantErr: true},
		{name: "group not ended", data: join(full, protowire.AppendTag(nil, 104, protowire.StartGroupType)), wantErr: true},
		{name: "reserved wire type", data: join(full, protowire.AppendTag(nil, 104, 6)), wantErr: true},
		{name: "field number 0", data: join(full, []byte{0x00, 0x01}), wantErr: true},
		{name: "field number above the largest", data: join(full, varintField(protowire.MaxValidNumber+1, 1)), wantErr: true},
		{name: "varint overflow", data: join(full, protowire.AppendTag(nil, 5, protowire.VarintType), []byte(strings.Repeat("\xff", 10)+"\x01")), wantErr: true},
	}
	used := newDecoder() // by the cases before: nothing of an event may leak into the next
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := checkDecode(t, newDecoder(), msgAt(tt.data, 7)); (err != nil) != tt.wantErr {
				t.Errorf("error %v, want error %v", err, tt.wantErr)
			}
			checkDecode(t, used, msgAt(tt.data, 7))
			checkDecode(t, used, unbound(tt.data)) // fails where the stream's metadata is needed
		})
	}
}

// Every prefix of an event: one cut between fields is a shorter event, one
// cut inside a field an error.
func TestDecodeTruncated(t *testing.T) {
	full := join(marshal(t, fullEvent()), bytesField(2, string(varintField(1, 5))))
	d := newDecoder()
	for n := range len(full) {
		checkDecode(t, d, msgAt(full[:n], 1))
	}
	if _, _, err := d.decode(full[:len(full)-1], new(usagestore.Event)); err == nil {
		t.Error("an event cut inside its last field decoded")
	}
}

func TestDecodeRejectsInvalidUTF8(t *testing.T) {
	warm := newDecoder() // has the valid strings interned
	checkDecode(t, warm, msgAt(marshal(t, fullEvent()), 1))
	for _, num := range []protowire.Number{1, 4, 6, 7, 8, 9, 10} {
		for _, bad := range []string{"\xff", "acme\xc3", "edge-a\xed\xa0\x80"} {
			data := join(marshal(t, fullEvent()), bytesField(num, bad))
			for _, d := range []*decoder{newDecoder(), warm} {
				if _, err := checkDecode(t, d, msgAt(data, 1)); !errors.Is(err, errUTF8) {
					t.Errorf("field %d = %q: error %v, want %v", num, bad, err, errUTF8)
				}
			}
		}
	}
}

func TestDecodeInternsStrings(t *testing.T) {
	d := newDecoder()
	data := marshal(t, fullEvent())
	var first, second usagestore.Event
	if _, _, err := d.decode(data, &first); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := d.decode(data, &second); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("decoding an event again allocates %v times, want 0", allocs)
	}
	if first != second {
		t.Fatalf("decoded again %+v, first %+v", second, first)
	}
	for _, s := range [][2]string{{first.Account, second.Account}, {first.KeyID, second.KeyID}, {first.EdgeInstance, second.EdgeInstance},
		{first.Service, second.Service}, {first.Model, second.Model}, {first.Endpoint, second.Endpoint}} {
		if unsafe.StringData(s[0]) != unsafe.StringData(s[1]) {
			t.Errorf("%q was not interned", s[0])
		}
	}
}

func TestDecodeBoundsItsTables(t *testing.T) {
	d := newDecoder()
	var e usagestore.Event
	for i := range maxInterned + 10 {
		if _, _, err := d.decode(bytesField(7, fmt.Sprint("account-", i)), &e); err != nil {
			t.Fatal(err)
		}
	}
	if len(d.strs) > maxInterned {
		t.Errorf("%d strings interned, want at most %d", len(d.strs), maxInterned)
	}
	long := strings.Repeat("a", maxInternedLen+1)
	if _, _, err := d.decode(bytesField(7, long), &e); err != nil || e.Account != long {
		t.Fatalf("long account decoded as %q, %v", e.Account, err)
	}
	if _, ok := d.strs[long]; ok {
		t.Error("a string longer than maxInternedLen was interned")
	}
}

func TestDecodeNumbersEdgesPerBatch(t *testing.T) {
	d := newDecoder()
	number := func(edge string) uint32 {
		t.Helper()
		n, _, err := d.decode(bytesField(4, edge), new(usagestore.Event))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	a, b := number("edge-a"), number("edge-b")
	if a == b || number("edge-a") != a {
		t.Errorf("edge-a numbered %d then %d, edge-b %d", a, number("edge-a"), b)
	}
	d.newBatch()
	if len(d.edges) != 0 || number("edge-b") != 0 {
		t.Error("a new batch does not number edges from 0")
	}
}

// A batch keeps the first of the events with one identity, takes the
// stream's identity for an event without one, and skips what is not an event.
func TestDecodeBatch(t *testing.T) {
	s := &Sink{log: testLog()}
	ev := fullEvent()
	other := fullEvent()
	other.EdgeInstance = "edge-b"
	replay := fullEvent()
	replay.Cost = 1
	anon := fullEvent()
	anon.EdgeInstance = ""
	stamped := fullEvent()
	stamped.EdgeInstance, stamped.Partition, stamped.Sequence = streamEdge, 0, 3
	msgs := []*nats.Msg{
		msgAt(marshal(t, ev), 1), msgAt(marshal(t, other), 2), msgAt(marshal(t, anon), 3),
		msgAt([]byte("\xff\xff"), 4), msgAt(marshal(t, replay), 5), msgAt(marshal(t, stamped), 6),
	}
	d := newDecoder()
	for range 2 { // the second time with the strings interned
		bb := s.newBatch(d)
		bb.add(msgs[:2]) // in two pulls
		bb.add(msgs[2:])
		b := bb.b
		if b.from != 1 || b.to != 6 || len(b.events) != 3 {
			t.Fatalf("batch %d..%d of %d events, want 1..6 of 3", b.from, b.to, len(b.events))
		}
		if b.events[0].Cost != ev.Cost || b.events[1].EdgeInstance != "edge-b" || b.events[2].Sequence != 3 {
			t.Errorf("batch kept %+v", b.events)
		}
	}
	if s.stats.Invalid.Load() != 2 || s.stats.Duplicates.Load() != 4 {
		t.Errorf("invalid %d, duplicates %d; want 2 and 4", s.stats.Invalid.Load(), s.stats.Duplicates.Load())
	}
}

// realisticEvents are messages of events like edges publish.
func realisticEvents(t testing.TB, n int) []*nats.Msg {
	f := &feed{rng: rand.New(rand.NewPCG(1, 2)), seq: map[string]uint64{}, accounts: []string{"acme", "globex", "initech"}}
	var out []*nats.Msg
	for i, ev := range f.make("edge-a", n, base) {
		out = append(out, msgAt(marshal(t, ev), uint64(i+1)))
	}
	return out
}

func FuzzDecodeUsageEvent(f *testing.F) {
	for _, m := range realisticEvents(f, 3) {
		f.Add(m.Data)
	}
	full := marshal(f, fullEvent())
	f.Add(full)
	f.Add(join(full, varintField(100, 1), bytesField(101, "x"), bytesField(2, string(varintField(2, 7))),
		protowire.AppendTag(join(protowire.AppendTag(nil, 104, protowire.StartGroupType), varintField(1, 1)), 104, protowire.EndGroupType)))
	f.Add(marshal(f, &eventsv1.UsageEvent{Account: "acme"}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		d := newDecoder()
		first, err := checkDecode(t, d, msgAt(data, 9))
		if err != nil {
			return
		}
		if again, _ := checkDecode(t, d, msgAt(data, 9)); again != first {
			t.Fatalf("decoded again %+v, first %+v", again, first)
		}
	})
}

func BenchmarkDecodeUsageEvent(b *testing.B) {
	msgs := realisticEvents(b, 1000)
	d := newDecoder()
	var e usagestore.Event
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := d.event(msgs[i%len(msgs)], &e); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkDecodeUsageEventProto is how the sink decoded before.
func BenchmarkDecodeUsageEventProto(b *testing.B) {
	msgs := realisticEvents(b, 1000)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := toEvent(msgs[i%len(msgs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
