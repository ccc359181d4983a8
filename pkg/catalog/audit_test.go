package catalog

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

// allChanges reads the audit stream until it holds want records (the mirror
// copies the bucket's writes asynchronously) or 5 s pass.
func allChanges(t *testing.T, ctx context.Context, s *Store, want int) []*Record {
	t.Helper()
	var recs []*Record
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var err error
		recs, _, err = s.Changes(ctx, 0, 1000, func(*Record) bool { return true })
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) >= want || time.Now().After(deadline) {
			break
		}
	}
	if len(recs) != want {
		t.Fatalf("the audit stream has %d changes, want %d: %+v", len(recs), want, recs)
	}
	return recs
}

// Every write of the catalog is kept with who made it, when, and for which
// account; more changes of one entry than the bucket's history keeps, and
// deletions too.
func TestEveryChangeIsRecordedWithItsActor(t *testing.T) {
	s, ctx := openStore(t)
	if err := s.OpenAudit(ctx, 1); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)
	svc := &eventsv1.Service{Id: "acme/openai", Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: "https://api.openai.com"}
	if err := s.PutService(ctx, svc, Change{Actor: "operator:alice", At: at}); err != nil {
		t.Fatal(err)
	}
	const prices = 8 // more than the bucket's history of 5
	for i := range prices {
		m := &eventsv1.Model{Name: "gpt-4.1", Service: "acme/openai", InputPricePerMillion: int64(i+1) * 1e9, MaxOutputTokens: 10}
		if err := s.PutModel(ctx, m, Change{Actor: "operator:bob", At: at.Add(time.Duration(i+1) * time.Minute)}, Unconditional); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, ModelKey("gpt-4.1"), Change{Actor: "bootstrap", At: at.Add(time.Hour)}, Unconditional); err != nil {
		t.Fatal(err)
	}

	recs := allChanges(t, ctx, s, 1+prices+1)
	first, del := recs[0], recs[len(recs)-1]
	if first.Kind != "service" || first.ID != "acme/openai" || first.Actor != "operator:alice" || !first.At.Equal(at) ||
		first.Account != "acme" || first.Deleted || first.Service.GetBaseUrl() != "https://api.openai.com" || first.Service.GetUpdatedBy() != "operator:alice" {
		t.Errorf("the service's change: %+v", first)
	}
	ids := map[string]bool{}
	for i, r := range recs[1 : 1+prices] {
		if r.Kind != "model" || r.ID != "gpt-4.1" || r.Actor != "operator:bob" || r.Account != "acme" || r.Model.GetInputPricePerMillion() != int64(i+1)*1e9 {
			t.Errorf("price change %d: %+v (model %v)", i, r, r.Model)
		}
		ids[r.EventID] = true
	}
	if len(ids) != prices {
		t.Errorf("%d distinct event ids for %d changes", len(ids), prices)
	}
	if del.Kind != "model" || del.ID != "gpt-4.1" || !del.Deleted || del.Actor != "bootstrap" || del.Account != "acme" || del.Model != nil {
		t.Errorf("the deletion: %+v", del)
	}
	// The mirror keeps the bucket's sequence numbers (a write waits for its
	// own number to be in the audit stream).
	if rev, _, err := s.Revision(ctx, ModelKey("gpt-4.1")); err != nil || rev != del.Sequence {
		t.Errorf("the deletion is revision %d of the bucket and %d of the audit stream (%v)", rev, del.Sequence, err)
	}

	// Pages: from a sequence on, limited, filtered.
	page, next, err := s.Changes(ctx, recs[2].Sequence, 3, func(r *Record) bool { return r.Kind == "model" })
	if err != nil || len(page) != 3 || page[0].Sequence != recs[2].Sequence || next != page[2].Sequence+1 {
		t.Fatalf("page from %d: %d records, next %d, %v", recs[2].Sequence, len(page), next, err)
	}
	rest, end, err := s.Changes(ctx, next, 100, func(*Record) bool { return true })
	if err != nil || len(rest) != len(recs)-5 || end != del.Sequence+1 {
		t.Fatalf("the rest: %d records, next %d, %v", len(rest), end, err)
	}
}

// A write that expects a revision is refused once the entry has changed
// since: an admin call that checked one state must not write over another.
func TestWriteRefusedWhenTheEntryChanged(t *testing.T) {
	s, ctx := openStore(t)
	if err := s.PutService(ctx, &eventsv1.Service{Id: "acme/openai", Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: "http://127.0.0.1:1"}, By("test")); err != nil {
		t.Fatal(err)
	}
	key := ModelKey("gpt-4")
	rev, exists, err := s.Revision(ctx, key)
	if err != nil || exists || rev != 0 {
		t.Fatalf("a model never written: revision %d, exists %v, %v", rev, exists, err)
	}
	m := &eventsv1.Model{Name: "gpt-4", Service: "acme/openai", InputPricePerMillion: 30e9}
	if err := s.PutModel(ctx, m, By("first"), rev); err != nil {
		t.Fatalf("create at revision 0: %v", err)
	}
	if err := s.PutModel(ctx, m, By("second"), rev); !errors.Is(err, ErrChanged) {
		t.Fatalf("a second create at revision 0: %v, want ErrChanged", err)
	}
	rev, exists, err = s.Revision(ctx, key)
	if err != nil || !exists || rev == 0 {
		t.Fatalf("after the put: revision %d, exists %v, %v", rev, exists, err)
	}
	if err := s.PutModel(ctx, m, By("other"), Unconditional); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, key, By("stale"), rev); !errors.Is(err, ErrChanged) {
		t.Fatalf("delete at a stale revision: %v, want ErrChanged", err)
	}
	rev, _, _ = s.Revision(ctx, key)
	if err := s.Delete(ctx, key, By("current"), rev); err != nil {
		t.Fatalf("delete at the current revision: %v", err)
	}
	rev, exists, err = s.Revision(ctx, key)
	if err != nil || exists || rev == 0 {
		t.Fatalf("after the deletion: revision %d, exists %v, %v", rev, exists, err)
	}
	if err := s.Delete(ctx, key, By("again"), Unconditional); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting a deleted model: %v, want ErrNotFound", err)
	}
	// Created again at the deletion's revision, as a first create would be.
	if err := s.PutModel(ctx, m, By("again"), rev); err != nil {
		t.Fatalf("re-create at the deletion's revision: %v", err)
	}
}

// Changes written before writes carried headers still read back, with the
// account taken from the entry; they have no actor.
func TestDecodeRecordWithoutHeaders(t *testing.T) {
	svc, _ := proto.Marshal(&eventsv1.Service{Id: "acme/openai"})
	model, _ := proto.Marshal(&eventsv1.Model{Name: "gpt-4", Service: "acme/openai"})
	del := nats.Header{"KV-Operation": []string{"DEL"}}
	for _, tt := range []struct {
		name    string
		msg     jetstream.RawStreamMsg
		ok      bool
		want    Record
		hasData bool
	}{
		{"service", jetstream.RawStreamMsg{Subject: "$KV.CATALOG." + ServiceKey("acme/openai"), Data: svc}, true,
			Record{Kind: "service", ID: "acme/openai", Account: "acme"}, true},
		{"model", jetstream.RawStreamMsg{Subject: "$KV.CATALOG." + ModelKey("gpt-4"), Data: model}, true,
			Record{Kind: "model", ID: "gpt-4", Account: "acme"}, true},
		{"deleted service", jetstream.RawStreamMsg{Subject: "$KV.CATALOG." + ServiceKey("acme/openai"), Header: del}, true,
			Record{Kind: "service", ID: "acme/openai", Account: "acme", Deleted: true}, false},
		{"deleted model: no account to tell", jetstream.RawStreamMsg{Subject: "$KV.CATALOG." + ModelKey("gpt-4"), Header: del}, true,
			Record{Kind: "model", ID: "gpt-4", Deleted: true}, false},
		{"undecodable model", jetstream.RawStreamMsg{Subject: "$KV.CATALOG." + ModelKey("gpt-4"), Data: []byte{0xff}}, false, Record{}, false},
		{"not a catalog key", jetstream.RawStreamMsg{Subject: "$KV.CATALOG.other", Data: svc}, false, Record{}, false},
	} {
		r, ok := decodeRecord(&tt.msg)
		if ok != tt.ok {
			t.Errorf("%s: ok %v, want %v", tt.name, ok, tt.ok)
			continue
		}
		if !ok {
			continue
		}
		if r.Kind != tt.want.Kind || r.ID != tt.want.ID || r.Account != tt.want.Account || r.Deleted != tt.want.Deleted || r.Actor != "" ||
			(r.Service != nil || r.Model != nil) != tt.hasData {
			t.Errorf("%s: %+v, want %+v", tt.name, r, tt.want)
		}
	}
}
