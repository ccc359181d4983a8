package catalog

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var quiet = slog.New(slog.DiscardHandler)

func openStore(t *testing.T) (*Store, context.Context) {
	t.Helper()
	_, nc := testenv.NATS(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	s, err := Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	return s, ctx
}

// watch runs v.Watch until the returned stop is called, and waits for the
// view to be ready.
func watch(t *testing.T, ctx context.Context, v *View, s *Store) (stop func()) {
	t.Helper()
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- v.Watch(wctx, s, quiet) }()
	select {
	case <-v.Ready():
	case err := <-done:
		t.Fatalf("watch ended before the view was ready: %v", err)
	case <-ctx.Done():
		t.Fatal("view not ready")
	}
	return func() {
		cancel()
		<-done
	}
}

// eventually polls cond until it holds or 5 s pass.
func eventually(t *testing.T, what string, cond func(*Snapshot) bool, v *View) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(v.Snapshot()); {
		if time.Now().After(deadline) {
			t.Fatalf("the view never showed %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func price(s *Snapshot, model string) int64 {
	m, _, ok := s.Model(model)
	if !ok {
		return -1
	}
	return m.GetInputPricePerMillion()
}

func TestViewFollowsChangesWithoutRestart(t *testing.T) {
	s, ctx := openStore(t)
	put := func(x any) {
		t.Helper()
		var err error
		switch x := x.(type) {
		case *eventsv1.Service:
			err = s.PutService(ctx, x, By("test"))
		case *eventsv1.Model:
			err = s.PutModel(ctx, x, "", By("test"), Unconditional)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	put(&eventsv1.Service{Id: "acme/openai", Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: "http://127.0.0.1:1"})
	put(&eventsv1.Model{Name: "gpt-4", Service: "acme/openai", InputPricePerMillion: 30e9, OutputPricePerMillion: 60e9})

	v := NewView()
	defer watch(t, ctx, v, s)()
	if got := price(v.Snapshot(), "gpt-4"); got != 30e9 {
		t.Fatalf("initial gpt-4 input price %d, want 30e9", got)
	}

	put(&eventsv1.Model{Name: "gpt-4", Service: "acme/openai", InputPricePerMillion: 10e9, OutputPricePerMillion: 30e9})
	eventually(t, "the new gpt-4 price", func(s *Snapshot) bool { return price(s, "gpt-4") == 10e9 }, v)

	put(&eventsv1.Model{Name: "gpt-4o-mini", Service: "acme/openai", InputPricePerMillion: 15e7})
	eventually(t, "the added model", func(s *Snapshot) bool { return price(s, "gpt-4o-mini") == 15e7 }, v)

	if err := s.Delete(ctx, ModelKey("gpt-4o-mini"), By("test"), Unconditional); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the model deleted", func(s *Snapshot) bool { return price(s, "gpt-4o-mini") == -1 }, v)

	if err := s.Delete(ctx, ServiceKey("acme/openai"), By("test"), Unconditional); err != nil {
		t.Fatal(err)
	}
	// The model still names the service, but a model without its service is
	// not served.
	eventually(t, "the service deleted", func(s *Snapshot) bool { return price(s, "gpt-4") == -1 }, v)
}

// The edge restarts a watch that ended (the bus went away, the consumer was
// lost): the second Watch on the same view must rebuild it, including what
// changed and what was deleted meanwhile, and must not close Ready again.
func TestWatchAgainAfterAWatchEnded(t *testing.T) {
	s, ctx := openStore(t)
	if err := s.PutService(ctx, &eventsv1.Service{Id: "acme/openai", Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: "http://127.0.0.1:1"}, By("test")); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*eventsv1.Model{
		{Name: "gpt-4", Service: "acme/openai", InputPricePerMillion: 30e9},
		{Name: "gpt-3.5-turbo", Service: "acme/openai", InputPricePerMillion: 5e8},
	} {
		if err := s.PutModel(ctx, m, "", By("test"), Unconditional); err != nil {
			t.Fatal(err)
		}
	}
	v := NewView()
	watch(t, ctx, v, s)() // loaded, then ended

	// While nobody watches: a price changes and a model goes.
	if err := s.PutModel(ctx, &eventsv1.Model{Name: "gpt-4", Service: "acme/openai", InputPricePerMillion: 20e9}, "", By("test"), Unconditional); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, ModelKey("gpt-3.5-turbo"), By("test"), Unconditional); err != nil {
		t.Fatal(err)
	}
	defer watch(t, ctx, v, s)()
	eventually(t, "the changes made while no watch ran", func(s *Snapshot) bool {
		return price(s, "gpt-4") == 20e9 && price(s, "gpt-3.5-turbo") == -1
	}, v)
}
