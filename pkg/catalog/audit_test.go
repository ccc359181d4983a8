package catalog

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/testenv"
)

// allChanges reads the audit stream until it holds want records (it copies
// the bucket's writes asynchronously) or 5 s pass.
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
	if err := s.OpenAudit(ctx, 1, quiet); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)
	svc := &eventsv1.Service{Id: "acme/openai", Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: "https://api.openai.com"}
	if err := s.PutService(ctx, svc, Change{Actor: "operator:alice", At: at}); err != nil {
		t.Fatal(err)
	}
	const prices = 70 // more than the 64 revisions of an entry the bucket keeps
	for i := range prices {
		m := &eventsv1.Model{Name: "gpt-4.1", Service: "acme/openai", InputPricePerMillion: int64(i+1) * 1e9, MaxOutputTokens: 10}
		if err := s.PutModel(ctx, m, "", Change{Actor: "operator:bob", At: at.Add(time.Duration(i+1) * time.Minute)}, Unconditional); err != nil {
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

	// Pages: from a sequence on, limited, filtered.
	page, next, err := s.Changes(ctx, recs[2].Sequence, 3, func(r *Record) bool { return r.Kind == "model" })
	if err != nil || len(page) != 3 || page[0].Sequence != recs[2].Sequence || next != page[2].Sequence+1 {
		t.Fatalf("page from %d: %d records, next %d, %v", recs[2].Sequence, len(page), next, err)
	}
	rest, end, err := s.Changes(ctx, next, 100, func(*Record) bool { return true })
	if err != nil || len(rest) != len(recs)-5 || end != del.Sequence+1 {
		t.Fatalf("the rest: %d records, next %d, %v", len(rest), end, err)
	}

	// Read in small batches, the same records.
	defer func(n int) { scanBatch = n }(scanBatch)
	scanBatch = 7
	again, end2, err := s.Changes(ctx, 0, 1000, func(*Record) bool { return true })
	if err != nil || len(again) != len(recs) || end2 != end {
		t.Fatalf("in batches of 7: %d records, next %d, %v; want %d, %d", len(again), end2, err, len(recs), end)
	}
	for i := range again {
		if again[i].Sequence != recs[i].Sequence || again[i].EventID != recs[i].EventID {
			t.Fatalf("record %d in batches of 7: %+v, want %+v", i, again[i], recs[i])
		}
	}
	odd, _, err := s.Changes(ctx, 0, 5, func(r *Record) bool { return r.Sequence%2 == 1 })
	if err != nil || len(odd) != 5 || odd[4].Sequence != recs[8].Sequence {
		t.Fatalf("five odd sequences in batches of 7: %d records, %v", len(odd), err)
	}
}

// A write that expects a version of the catalog is refused once any write
// came since, to any entry: an admin call that checked one state must not
// write over another.
func TestWriteRefusedWhenTheCatalogChanged(t *testing.T) {
	s, ctx := openStore(t)
	version := func() uint64 {
		t.Helper()
		_, v, err := s.LoadVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := s.PutService(ctx, &eventsv1.Service{Id: "acme/openai", Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: "http://127.0.0.1:1"}, By("test")); err != nil {
		t.Fatal(err)
	}
	m := &eventsv1.Model{Name: "gpt-4", Service: "acme/openai", InputPricePerMillion: 30e9}
	v := version()
	if err := s.PutModel(ctx, m, "", By("first"), v); err != nil {
		t.Fatalf("put at the current version: %v", err)
	}
	if err := s.PutModel(ctx, m, "", By("second"), v); !errors.Is(err, ErrChanged) {
		t.Fatalf("a second put at the same version: %v, want ErrChanged", err)
	}
	v = version()
	// A write to another entry: a DeleteService that looked for the models
	// of a service must not delete it under a model added meanwhile.
	if err := s.PutService(ctx, &eventsv1.Service{Id: "acme/other", Adapter: eventsv1.Adapter_ADAPTER_HTTP, BaseUrl: "http://127.0.0.1:1"}, By("other")); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, ModelKey("gpt-4"), By("stale"), v); !errors.Is(err, ErrChanged) {
		t.Fatalf("delete at a stale version: %v, want ErrChanged", err)
	}
	if err := s.Delete(ctx, ModelKey("gpt-4"), By("current"), version()); err != nil {
		t.Fatalf("delete at the current version: %v", err)
	}
	if err := s.Delete(ctx, ModelKey("gpt-4"), By("again"), Unconditional); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting a deleted model: %v, want ErrNotFound", err)
	}
}

// A model moved to another account's service: the change names both
// accounts, so that the operators of the one that lost it see it too.
func TestMovedModelNamesBothAccounts(t *testing.T) {
	s, ctx := openStore(t)
	if err := s.OpenAudit(ctx, 1, quiet); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"acme/openai", "beta/openai"} {
		if err := s.PutService(ctx, &eventsv1.Service{Id: id, Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: "http://127.0.0.1:1"}, By("test")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutModel(ctx, &eventsv1.Model{Name: "m", Service: "beta/openai"}, "", By("test"), Unconditional); err != nil {
		t.Fatal(err)
	}
	if err := s.PutModel(ctx, &eventsv1.Model{Name: "m", Service: "acme/openai"}, "beta", By("test"), Unconditional); err != nil {
		t.Fatal(err)
	}
	recs := allChanges(t, ctx, s, 4)
	if r := recs[2]; r.Account != "beta" || r.Previous != "" {
		t.Errorf("the model's first put: account %q, previous %q", r.Account, r.Previous)
	}
	if r := recs[3]; r.Account != "acme" || r.Previous != "beta" {
		t.Errorf("the move: account %q, previous %q; want acme, beta", r.Account, r.Previous)
	}
}

// An audit stream that does not copy the bucket as it is (the bucket was
// deleted and made again, its sequences started over, and the stream skips
// every write up to the last it copied) is refused at start.
func TestAuditOfARecreatedBucketIsRefused(t *testing.T) {
	_, nc := testenv.NATS(t)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.OpenAudit(ctx, 1, quiet); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"acme/a", "acme/b"} {
		if err := s.PutService(ctx, &eventsv1.Service{Id: id, Adapter: eventsv1.Adapter_ADAPTER_HTTP, BaseUrl: "http://127.0.0.1:1"}, By("test")); err != nil {
			t.Fatal(err)
		}
	}
	if err := js.DeleteKeyValue(ctx, Bucket); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.PutService(ctx, &eventsv1.Service{Id: "acme/c", Adapter: eventsv1.Adapter_ADAPTER_HTTP, BaseUrl: "http://127.0.0.1:1"}, By("test")); err != nil {
		t.Fatal(err)
	}
	if err := s2.OpenAudit(ctx, 1, quiet); err == nil || !strings.Contains(err.Error(), "made again") {
		t.Fatalf("OpenAudit over a recreated bucket: %v, want it refused", err)
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
