package admin

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	"github.com/tollgate/tollgate/gen/tollgate/admin/v1/adminv1connect"
	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

func (ts *testServer) catalogClient(token string) adminv1connect.CatalogServiceClient {
	return adminv1connect.NewCatalogServiceClient(http.DefaultClient, ts.url, connect.WithInterceptors(connect.UnaryInterceptorFunc(
		func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx2 context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("Authorization", "Bearer "+token)
				return next(ctx2, req)
			}
		})))
}

func TestCatalog(t *testing.T) {
	ts := newAdmin(t)
	ctx := ctxT(t)
	root := ts.catalogClient(testToken)
	svc := &adminv1.Service{Id: "acme/openai", Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: "https://api.openai.com",
		Credential: &eventsv1.Credential{Source: &eventsv1.Credential_Env{Env: "OPENAI_API_KEY"}}}
	if _, err := root.PutService(ctx, connect.NewRequest(&adminv1.PutServiceRequest{Service: svc})); err != nil {
		t.Fatal(err)
	}
	m, err := root.PutModel(ctx, connect.NewRequest(&adminv1.PutModelRequest{Model: &adminv1.Model{Name: "gpt-4o-mini", Service: "acme/openai",
		InputPricePerMillion: "0.15", OutputPricePerMillion: "0.60", MaxOutputTokens: 16384}}))
	if err != nil || m.Msg.GetModel().GetOutputPricePerMillion() != "0.6" {
		t.Fatalf("put model: %v %v", m, err)
	}
	list, err := root.ListModels(ctx, connect.NewRequest(&adminv1.ListModelsRequest{}))
	if err != nil || len(list.Msg.GetModels()) != 1 {
		t.Fatalf("list models: %v %v", list, err)
	}

	bad := []*adminv1.PutModelRequest{
		{Model: &adminv1.Model{Name: "m", Service: "acme/missing", MaxOutputTokens: 1}},
		{Model: &adminv1.Model{Name: "m", Service: "acme/openai", InputPricePerMillion: "-1", MaxOutputTokens: 1}},
		{Model: &adminv1.Model{Name: "m", Service: "acme/openai"}},
	}
	for _, r := range bad {
		if _, err := root.PutModel(ctx, connect.NewRequest(r)); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("%v: want InvalidArgument, got %v", r, err)
		}
	}
	if _, err := root.PutService(ctx, connect.NewRequest(&adminv1.PutServiceRequest{Service: &adminv1.Service{Id: "nope", BaseUrl: "ftp://x"}})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("bad service: want InvalidArgument, got %v", err)
	}

	// An operator of another account may not touch acme's services or models.
	other := ts.catalogClient(operatorJWT(t, "bob", "other", time.Now().Add(time.Hour)))
	if _, err := other.PutService(ctx, connect.NewRequest(&adminv1.PutServiceRequest{Service: svc})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("other account's operator: want PermissionDenied, got %v", err)
	}
	if _, err := other.DeleteModel(ctx, connect.NewRequest(&adminv1.DeleteModelRequest{Name: "gpt-4o-mini"})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("other account deleting a model: want PermissionDenied, got %v", err)
	}
	// An operator of one account may point its services only at credentials
	// of its own namespace: the edges' environment holds every account's.
	bob := ts.catalogClient(operatorJWT(t, "bob", "bob", time.Now().Add(time.Hour)))
	for _, tt := range []struct {
		cred    *eventsv1.Credential
		allowed bool
	}{
		{&eventsv1.Credential{Source: &eventsv1.Credential_Env{Env: "OPENAI_API_KEY"}}, false},
		{&eventsv1.Credential{Source: &eventsv1.Credential_Env{Env: "TOLLGATE_CRED_ACME_OPENAI"}}, false},
		{&eventsv1.Credential{Source: &eventsv1.Credential_File{File: "/run/secrets/openai"}}, false},
		{&eventsv1.Credential{Source: &eventsv1.Credential_Env{Env: "TOLLGATE_CRED_BOB_OPENAI"}}, true},
	} {
		_, err := bob.PutService(ctx, connect.NewRequest(&adminv1.PutServiceRequest{Service: &adminv1.Service{Id: "bob/x",
			Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: "https://evil.example", Credential: tt.cred}}))
		switch {
		case tt.allowed && err != nil:
			t.Errorf("bob's operator naming %v: %v, want it allowed", tt.cred, err)
		case !tt.allowed && (connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "TOLLGATE_CRED_BOB_")):
			t.Errorf("bob's operator naming %v: %v, want InvalidArgument saying what may be named (TOLLGATE_CRED_BOB_...)", tt.cred, err)
		}
	}

	// A malformed id names no account to check the caller against: refused,
	// never mapped onto a real service ("acme.openai" is acme/openai's KV key).
	for _, id := range []string{"acme.openai", "", "acme"} {
		if _, err := other.DeleteService(ctx, connect.NewRequest(&adminv1.DeleteServiceRequest{Id: id})); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("deleting service %q as another account's operator: want InvalidArgument, got %v", id, err)
		}
	}
	if _, err := other.DeleteService(ctx, connect.NewRequest(&adminv1.DeleteServiceRequest{Id: "acme/openai"})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("other account deleting a service: want PermissionDenied, got %v", err)
	}
	// A service that models are served by is not deleted under them.
	if _, err := root.DeleteService(ctx, connect.NewRequest(&adminv1.DeleteServiceRequest{Id: "acme/openai"})); connect.CodeOf(err) != connect.CodeFailedPrecondition ||
		!strings.Contains(err.Error(), "gpt-4o-mini") {
		t.Errorf("deleting a service in use: want FailedPrecondition naming gpt-4o-mini, got %v", err)
	}
	if _, err := root.DeleteModel(ctx, connect.NewRequest(&adminv1.DeleteModelRequest{Name: "gpt-4o-mini"})); err != nil {
		t.Fatal(err)
	}
	if _, err := root.DeleteService(ctx, connect.NewRequest(&adminv1.DeleteServiceRequest{Id: "acme/openai"})); err != nil {
		t.Errorf("deleting the service once its models are gone: %v", err)
	}
	if _, err := root.DeleteModel(ctx, connect.NewRequest(&adminv1.DeleteModelRequest{Name: "gpt-4o-mini"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("deleting twice: want NotFound, got %v", err)
	}
}

// Every change of the catalog is kept with its actor (DESIGN.md section 8:
// every mutation is audited), and each operator reads the changes of the
// accounts it may read.
func TestCatalogChangesNameTheirActor(t *testing.T) {
	ts := newAdmin(t)
	ctx := ctxT(t)
	root := ts.catalogClient(testToken)
	bob := ts.catalogClient(operatorJWT(t, "bob", "bob", time.Now().Add(time.Hour)))
	put := func(c adminv1connect.CatalogServiceClient, id string) {
		t.Helper()
		if _, err := c.PutService(ctx, connect.NewRequest(&adminv1.PutServiceRequest{Service: &adminv1.Service{Id: id,
			Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: "https://api.openai.com"}})); err != nil {
			t.Fatal(err)
		}
	}
	put(root, "acme/openai")
	put(bob, "bob/openai")
	if _, err := bob.PutModel(ctx, connect.NewRequest(&adminv1.PutModelRequest{Model: &adminv1.Model{Name: "bob-4", Service: "bob/openai",
		InputPricePerMillion: "1", OutputPricePerMillion: "2", MaxOutputTokens: 100}})); err != nil {
		t.Fatal(err)
	}
	if _, err := root.DeleteModel(ctx, connect.NewRequest(&adminv1.DeleteModelRequest{Name: "bob-4"})); err != nil {
		t.Fatal(err)
	}

	// The lists show who made the last change.
	svcs, err := root.ListServices(ctx, connect.NewRequest(&adminv1.ListServicesRequest{}))
	if err != nil || len(svcs.Msg.GetServices()) != 2 {
		t.Fatalf("list services: %v %v", svcs, err)
	}
	for _, s := range svcs.Msg.GetServices() {
		want := map[string]string{"acme/openai": "bootstrap", "bob/openai": "operator:bob"}[s.GetId()]
		if s.GetUpdatedBy() != want || s.GetUpdatedAt() == nil {
			t.Errorf("%s: updated by %q at %v, want %q", s.GetId(), s.GetUpdatedBy(), s.GetUpdatedAt(), want)
		}
	}

	type change struct {
		actor, account, kind, id string
		deleted                  bool
	}
	read := func(c adminv1connect.CatalogServiceClient, req *adminv1.ListCatalogChangesRequest) ([]change, string) {
		t.Helper()
		res, err := c.ListCatalogChanges(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatalf("list changes %v: %v", req, err)
		}
		var got []change
		for _, ch := range res.Msg.GetChanges() {
			if ch.GetEventId() == "" || ch.GetOccurredAt() == nil || (ch.GetService() == nil && ch.GetModel() == nil) != ch.GetDeleted() {
				t.Errorf("incomplete change: %v", ch)
			}
			got = append(got, change{ch.GetActor(), ch.GetAccount(), ch.GetKind(), ch.GetId(), ch.GetDeleted()})
		}
		return got, res.Msg.GetNextPageToken()
	}
	all := []change{
		{"bootstrap", "acme", "service", "acme/openai", false},
		{"operator:bob", "bob", "service", "bob/openai", false},
		{"operator:bob", "bob", "model", "bob-4", false},
		{"bootstrap", "bob", "model", "bob-4", true},
	}
	if got, _ := read(root, &adminv1.ListCatalogChangesRequest{}); !slices.Equal(got, all) {
		t.Errorf("every change, as the bootstrap operator:\n got %v\nwant %v", got, all)
	}
	if got, _ := read(bob, &adminv1.ListCatalogChangesRequest{}); !slices.Equal(got, all[1:]) {
		t.Errorf("bob's changes, as bob:\n got %v\nwant %v", got, all[1:])
	}
	// Pages: two, then the rest; the last page's token reads what comes later.
	first, next := read(root, &adminv1.ListCatalogChangesRequest{PageSize: 2})
	rest, last := read(root, &adminv1.ListCatalogChangesRequest{PageToken: next})
	if !slices.Equal(append(first, rest...), all) || last == "" {
		t.Errorf("two pages: %v then %v (next %q)", first, rest, last)
	}
	put(root, "acme/anthropic")
	if later, _ := read(root, &adminv1.ListCatalogChangesRequest{PageToken: last}); len(later) != 1 || later[0].id != "acme/anthropic" {
		t.Errorf("after the last page: %v, want the change made since", later)
	}

	key := mustCreate(t, ts.client(testToken), &adminv1.CreateKeyRequest{Account: "acme", Key: &adminv1.KeySettings{Name: "reader",
		Permissions: []eventsv1.Permission{eventsv1.Permission_PERMISSION_READ}}}).GetSecret()
	for _, tt := range []struct {
		name string
		c    adminv1connect.CatalogServiceClient
		req  *adminv1.ListCatalogChangesRequest
		code connect.Code
	}{
		{"an API key", ts.catalogClient(key), &adminv1.ListCatalogChangesRequest{}, connect.CodePermissionDenied},
		{"another account", bob, &adminv1.ListCatalogChangesRequest{Account: "acme"}, connect.CodePermissionDenied},
		{"a bad token", root, &adminv1.ListCatalogChangesRequest{PageToken: "x"}, connect.CodeInvalidArgument},
		{"a page too large", root, &adminv1.ListCatalogChangesRequest{PageSize: 1001}, connect.CodeInvalidArgument},
	} {
		if _, err := tt.c.ListCatalogChanges(ctx, connect.NewRequest(tt.req)); connect.CodeOf(err) != tt.code {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.code)
		}
	}
}

// A bad entry's field violations are paths in the request, as the caller
// wrote it: service.base_url, not base_url.
func TestCatalogFieldPaths(t *testing.T) {
	ts := newAdmin(t)
	ctx := ctxT(t)
	root := ts.catalogClient(testToken)
	bob := ts.catalogClient(operatorJWT(t, "bob", "bob", time.Now().Add(time.Hour)))
	for _, tt := range []struct {
		name string
		c    adminv1connect.CatalogServiceClient
		svc  *adminv1.Service
		want []string
	}{
		{"every field wrong", root, &adminv1.Service{Id: "nope", BaseUrl: "ftp://x", RequestPrice: "-1"},
			[]string{"service.request_price", "service.id", "service.adapter", "service.base_url"}},
		{"a price past the typo guard", root, &adminv1.Service{Id: "acme/x", Adapter: eventsv1.Adapter_ADAPTER_HTTP, BaseUrl: "https://x.example", RequestPrice: "1000.01"},
			[]string{"service.request_price"}},
		{"another account's credential", bob, &adminv1.Service{Id: "bob/x", Adapter: eventsv1.Adapter_ADAPTER_HTTP, BaseUrl: "https://x.example",
			Credential: &eventsv1.Credential{Source: &eventsv1.Credential_Env{Env: "OPENAI_API_KEY"}}}, []string{"service.credential.env"}},
	} {
		_, err := tt.c.PutService(ctx, connect.NewRequest(&adminv1.PutServiceRequest{Service: tt.svc}))
		if got := violations(err); !slices.Equal(got, tt.want) {
			t.Errorf("%s: violations %v, want %v (%v)", tt.name, got, tt.want, err)
		}
	}
	_, err := root.PutModel(ctx, connect.NewRequest(&adminv1.PutModelRequest{Model: &adminv1.Model{Name: " m", Service: "acme/x", InputPricePerMillion: "x"}}))
	if got, want := violations(err), []string{"model.input_price_per_million", "model.name", "model.max_output_tokens"}; !slices.Equal(got, want) {
		t.Errorf("model: violations %v, want %v (%v)", got, want, err)
	}
	if _, err := root.PutService(ctx, connect.NewRequest(&adminv1.PutServiceRequest{Service: &adminv1.Service{Id: "acme/x", Adapter: eventsv1.Adapter_ADAPTER_HTTP,
		BaseUrl: "https://x.example", RequestPrice: "1000"}})); err != nil {
		t.Errorf("a price at the guard: %v", err)
	}
}
