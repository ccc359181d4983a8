package sink

import (
	"testing"

	"github.com/nats-io/nats.go"
)

func TestAckSeqs(t *testing.T) {
	for _, tc := range []struct {
		reply            string
		stream, consumer uint64
		ok               bool
	}{
		{"$JS.ACK.USAGE.sink_1.1.4107.12.1732435200000000000.99", 4107, 12, true},                           // v1
		{"$JS.ACK._.ABCDEF.USAGE.sink_1.1.4107.12.1732435200000000000.99.x7Yq", 4107, 12, true},             // v2
		{"$JS.ACK.hub.ABCDEF.USAGE.sink_1.2.18446744073709551615.1.17324.0", 18446744073709551615, 1, true}, // v2 without the last token
		{"$JS.ACK._.ABCDEF.USAGE.sink_1.1.5.6.7.8.tok.more", 5, 6, true},                                    // more tokens
		{"$JS.ACK.USAGE.sink_1.1.x4.12.1.0", 0, 12, true},                                                   // not a number: 0, as Metadata
		{"$JS.ACK.USAGE.sink_1.1.5.6.7", 0, 0, false},                                                       // 7 tokens
		{"$JS.ACK._.H.USAGE.sink.1.5.6.7", 0, 0, false},                                                     // 10 tokens
		{"_INBOX.abc.1.2.3.4.5.6.7", 0, 0, false},
		{"", 0, 0, false},
	} {
		s, c, ok := ackSeqs(tc.reply)
		if s != tc.stream || c != tc.consumer || ok != tc.ok {
			t.Errorf("ackSeqs(%q) = %d, %d, %v; want %d, %d, %v", tc.reply, s, c, ok, tc.stream, tc.consumer, tc.ok)
		}
		// The timestamp too, as nats.go's own parser reads it.
		meta, ok := ackMeta(tc.reply)
		ref, err := (&nats.Msg{Reply: tc.reply, Sub: &nats.Subscription{}}).Metadata()
		if ok != (err == nil) {
			t.Errorf("ackMeta(%q) ok %v, Metadata error %v", tc.reply, ok, err)
		} else if ok && (meta.stream != ref.Sequence.Stream || meta.consumer != ref.Sequence.Consumer || !meta.timestamp.Equal(ref.Timestamp)) {
			t.Errorf("ackMeta(%q) = %+v, Metadata %+v", tc.reply, meta, ref)
		}
	}
	if n := testing.AllocsPerRun(100, func() { ackSeqs("$JS.ACK._.ABCDEF.USAGE.sink_1.1.4107.12.1732435200000000000.99.x7Yq") }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}

// FuzzAckMeta checks ackMeta against nats.go's own parser on any subject.
func FuzzAckMeta(f *testing.F) {
	f.Add("$JS.ACK.USAGE.sink_1.1.4107.12.1732435200000000000.99")
	f.Add("$JS.ACK._.ABCDEF.USAGE.sink_1.1.4107.12.1732435200000000000.99.x7Yq")
	f.Add("$JS.ACK._.ABCDEF.USAGE.sink_1.1.5.6.7.8.tok.more")
	f.Add("$JS.ACK..........")
	f.Fuzz(func(t *testing.T, reply string) {
		meta, ok := ackMeta(reply)
		ref, err := (&nats.Msg{Reply: reply, Sub: &nats.Subscription{}}).Metadata()
		if ok != (err == nil) {
			t.Fatalf("ackMeta(%q) ok %v, Metadata error %v", reply, ok, err)
		}
		if ok && (meta.stream != ref.Sequence.Stream || meta.consumer != ref.Sequence.Consumer || !meta.timestamp.Equal(ref.Timestamp)) {
			t.Fatalf("ackMeta(%q) = %+v, Metadata %+v", reply, meta, ref)
		}
	})
}
