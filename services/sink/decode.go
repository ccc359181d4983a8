package sink

import (
	"errors"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tollgate/tollgate/pkg/usagestore"
)

// A decoder keeps at most maxInterned strings, none longer than
// maxInternedLen: the values that repeat (accounts, keys, models) are few and
// short, and a stream of distinct ones must not hold memory for ever.
const (
	maxInterned    = 100_000
	maxInternedLen = 256
)

var (
	errFieldNumber = errors.New("field number out of range")
	errUTF8        = errors.New("string field is not valid UTF-8")
)

// decoder decodes usage events (tollgate.events.v1.UsageEvent) from their
// wire format straight into usagestore.Events, with the result that
// proto.Unmarshal and a copy of the message's fields give, for much less:
// proto.Unmarshal allocates the message, its Timestamp and every string,
// where the decoder makes a string only the first time it sees it. One
// goroutine uses it.
type decoder struct {
	strs  map[string]string       // values of the string fields but edge_instance
	edges map[string]internedEdge // the batch's edge instances
	seen  map[eventKey]bool       // the batch's identities
	// Of the event being decoded.
	sec     int64
	nsec    int32
	hasTime bool
	edge    uint32
}

// internedEdge is an edge instance and its number in the batch: the batch's
// identities are keyed by the number, which hashes faster than the string.
type internedEdge struct {
	name string
	n    uint32
}

func newDecoder() *decoder {
	return &decoder{strs: map[string]string{}, edges: map[string]internedEdge{}}
}

// newBatch starts a batch: edges are numbered again from 0, so that the
// table holds only the batch's, and no identity is seen yet.
func (d *decoder) newBatch() {
	clear(d.edges)
	if d.seen == nil {
		d.seen = map[eventKey]bool{}
	}
	clear(d.seen) // keeps its room: batches are alike
}

// decode decodes a UsageEvent's wire format into e. It reports the number
// of e.EdgeInstance in the batch (when present), and whether occurred_at is
// present. As with proto.Unmarshal, a field that occurs twice keeps its last
// value (occurred_at, a message, is merged), and an unknown field, or a known
// one with another wire type, is skipped.
func (d *decoder) decode(b []byte, e *usagestore.Event) (edge uint32, hasTime bool, err error) {
	*e = usagestore.Event{}
	d.sec, d.nsec, d.hasTime, d.edge = 0, 0, false, 0
	for len(b) > 0 {
		n, err := d.field(b, e)
		if err != nil {
			return 0, false, err
		}
		b = b[n:]
	}
	if d.hasTime {
		e.OccurredAt = time.Unix(d.sec, int64(d.nsec)).UTC() // as Timestamp.AsTime
	}
	return d.edge, d.hasTime, nil
}

// field decodes the field at the start of b into e and returns its length.
func (d *decoder) field(b []byte, e *usagestore.Event) (int, error) {
	num, typ, n, err := consumeTag(b)
	if err != nil {
		return 0, err
	}
	b = b[n:]
	var m int
	switch typ {
	case protowire.VarintType:
		var v uint64
		if v, m = protowire.ConsumeVarint(b); m >= 0 {
			setVarint(e, num, v)
		}
	case protowire.BytesType:
		var v []byte
		if v, m = protowire.ConsumeBytes(b); m >= 0 {
			err = d.setBytes(e, num, v)
		}
	default: // no field of the message has another wire type
		m = protowire.ConsumeFieldValue(num, typ, b)
	}
	if m < 0 {
		return 0, protowire.ParseError(m)
	}
	return n + m, err
}

// consumeTag reads a field's tag. protowire takes field numbers up to
// 2^31-1; proto.Unmarshal rejects those above MaxValidNumber.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, 0, protowire.ParseError(n)
	}
	if num > protowire.MaxValidNumber {
		return 0, 0, 0, errFieldNumber
	}
	return num, typ, n, nil
}

// setVarint sets e's field num, of the varint wire type, as proto.Unmarshal
// converts it (schema_version, 3, is not stored).
func setVarint(e *usagestore.Event, num protowire.Number, v uint64) {
	switch num {
	case 5: // sequence
		e.Sequence = v
	case 11: // input_tokens
		e.InputTokens = int64(v)
	case 12: // output_tokens
		e.OutputTokens = int64(v)
	case 13: // cost
		e.Cost = int64(v)
	case 14: // request_bytes
		e.RequestBytes = int64(v)
	case 15: // response_bytes
		e.ResponseBytes = int64(v)
	case 16: // status, an int32
		e.Status = uint16(min(max(int32(v), 0), 65535))
	case 17: // latency_us
		e.LatencyUS = int64(v)
	case 18: // streamed
		e.Streamed = v != 0
	case 19: // estimated
		e.Estimated = v != 0
	case 20: // partition
		e.Partition = uint32(v)
	}
}

// setBytes sets e's field num, of the length-delimited wire type.
func (d *decoder) setBytes(e *usagestore.Event, num protowire.Number, v []byte) (err error) {
	switch num {
	case 1: // event_id: not stored, but proto.Unmarshal checks it too
		if !utf8.Valid(v) {
			err = errUTF8
		}
	case 2: // occurred_at
		err = d.timestamp(v)
	case 4: // edge_instance
		e.EdgeInstance, d.edge, err = d.internEdge(v)
	case 6: // key_id
		e.KeyID, err = d.intern(v)
	case 7: // account
		e.Account, err = d.intern(v)
	case 8: // service
		e.Service, err = d.intern(v)
	case 9: // model
		e.Model, err = d.intern(v)
	case 10: // endpoint
		e.Endpoint, err = d.intern(v)
	}
	return err
}

// timestamp merges a google.protobuf.Timestamp (seconds 1, nanos 2) into the
// event's, as proto.Unmarshal merges a message field that occurs twice.
func (d *decoder) timestamp(b []byte) error {
	d.hasTime = true
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		var v uint64
		switch {
		case typ == protowire.VarintType && num == 1:
			v, n = protowire.ConsumeVarint(b)
			d.sec = int64(v)
		case typ == protowire.VarintType && num == 2:
			v, n = protowire.ConsumeVarint(b)
			d.nsec = int32(v)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// intern returns b as a string, the same one each time b repeats: a
// repeated value costs neither an allocation nor a UTF-8 check (the lookup
// with string(b) does not allocate).
func (d *decoder) intern(b []byte) (string, error) {
	if s, ok := d.strs[string(b)]; ok {
		return s, nil
	}
	if !utf8.Valid(b) {
		return "", errUTF8
	}
	s := string(b)
	if len(s) <= maxInternedLen {
		if len(d.strs) >= maxInterned {
			clear(d.strs)
		}
		d.strs[s] = s
	}
	return s, nil
}

// internEdge interns an edge instance as intern does, and numbers it.
func (d *decoder) internEdge(b []byte) (string, uint32, error) {
	if e, ok := d.edges[string(b)]; ok {
		return e.name, e.n, nil
	}
	if !utf8.Valid(b) {
		return "", 0, errUTF8
	}
	e := internedEdge{name: string(b), n: uint32(len(d.edges))}
	d.edges[e.name] = e
	return e.name, e.n, nil
}
