package dev

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/catalog"
	"github.com/tollgate/tollgate/pkg/mockllm"
)

// startMock serves the built-in mock upstream; it stops with ctx.
func startMock(ctx context.Context, addr string) (string, error) {
	h, err := mockllm.New(mockllm.Options{})
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("mock upstream: listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with Shutdown
	context.AfterFunc(ctx, func() { srv.Close() })
	return "http://" + ln.Addr().String(), nil
}

// The demo catalog: the mock answers for every model, at plausible list
// prices (dollars per million tokens).
var demoModels = []*eventsv1.Model{
	{Name: "gpt-4", Service: "default/mock-openai", InputPricePerMillion: 30e9, OutputPricePerMillion: 60e9, MaxOutputTokens: 8192},
	{Name: "gpt-3.5-turbo", Service: "default/mock-openai", InputPricePerMillion: 5e8, OutputPricePerMillion: 15e8, MaxOutputTokens: 4096},
	{Name: "gpt-4o-mini", Service: "default/mock-openai", InputPricePerMillion: 15e7, OutputPricePerMillion: 6e8, MaxOutputTokens: 16384},
	{Name: "claude-3-opus", Service: "default/mock-anthropic", InputPricePerMillion: 15e9, OutputPricePerMillion: 75e9, MaxOutputTokens: 4096},
}

// seedCatalog points the demo services at the mock (every start: its address
// may change) and adds the demo models that are not there yet, so a model an
// operator pointed at a real provider stays pointed there.
func seedCatalog(ctx context.Context, nc *nats.Conn, mockURL string) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	store, err := catalog.Open(ctx, js, 1)
	if err != nil {
		return err
	}
	for _, s := range []*eventsv1.Service{
		{Id: "default/mock-openai", Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: mockURL},
		{Id: "default/mock-anthropic", Adapter: eventsv1.Adapter_ADAPTER_ANTHROPIC, BaseUrl: mockURL},
		{Id: "default/echo", Adapter: eventsv1.Adapter_ADAPTER_HTTP, BaseUrl: mockURL, RequestPrice: 1_000_000},
	} {
		if err := store.PutService(ctx, s, catalog.By("dev-seed")); err != nil {
			return err
		}
	}
	snap, err := store.Load(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return err
	}
	for _, m := range demoModels {
		if snap != nil {
			if _, ok := snap.Models[m.GetName()]; ok {
				continue
			}
		}
		if err := store.PutModel(ctx, m, "", catalog.By("dev-seed"), catalog.Unconditional); err != nil {
			return err
		}
	}
	return nil
}
