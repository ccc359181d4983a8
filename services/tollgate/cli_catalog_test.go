package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	"github.com/tollgate/tollgate/gen/tollgate/admin/v1/adminv1connect"
	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/catalog"
	"github.com/tollgate/tollgate/pkg/keys"
)

// fakeCatalogAPI is CatalogService answering fixed entries and recording
// each request it got.
type fakeCatalogAPI struct {
	adminv1connect.UnimplementedCatalogServiceHandler
	services []*adminv1.Service
	models   []*adminv1.Model
	stored   proto.Message // what PutService or PutModel answer; nil: the request's entry
	err      error
	got      []proto.Message
	auth     string
}

func (f *fakeCatalogAPI) record(h http.Header, m proto.Message) error {
	f.got, f.auth = append(f.got, m), h.Get("Authorization")
	return f.err
}

func (f *fakeCatalogAPI) PutService(_ context.Context, req *connect.Request[adminv1.PutServiceRequest]) (*connect.Response[adminv1.PutServiceResponse], error) {
	if err := f.record(req.Header(), req.Msg); err != nil {
		return nil, err
	}
	s := req.Msg.GetService()
	if f.stored != nil {
		s = f.stored.(*adminv1.Service)
	}
	return connect.NewResponse(&adminv1.PutServiceResponse{Service: s}), nil
}

func (f *fakeCatalogAPI) ListServices(_ context.Context, req *connect.Request[adminv1.ListServicesRequest]) (*connect.Response[adminv1.ListServicesResponse], error) {
	if err := f.record(req.Header(), req.Msg); err != nil {
		return nil, err
	}
	return connect.NewResponse(&adminv1.ListServicesResponse{Services: f.services}), nil
}

func (f *fakeCatalogAPI) DeleteService(_ context.Context, req *connect.Request[adminv1.DeleteServiceRequest]) (*connect.Response[adminv1.DeleteServiceResponse], error) {
	if err := f.record(req.Header(), req.Msg); err != nil {
		return nil, err
	}
	return connect.NewResponse(&adminv1.DeleteServiceResponse{}), nil
}

func (f *fakeCatalogAPI) PutModel(_ context.Context, req *connect.Request[adminv1.PutModelRequest]) (*connect.Response[adminv1.PutModelResponse], error) {
	if err := f.record(req.Header(), req.Msg); err != nil {
		return nil, err
	}
	m := req.Msg.GetModel()
	if f.stored != nil {
		m = f.stored.(*adminv1.Model)
	}
	return connect.NewResponse(&adminv1.PutModelResponse{Model: m}), nil
}

func (f *fakeCatalogAPI) ListModels(_ context.Context, req *connect.Request[adminv1.ListModelsRequest]) (*connect.Response[adminv1.ListModelsResponse], error) {
	if err := f.record(req.Header(), req.Msg); err != nil {
		return nil, err
	}
	return connect.NewResponse(&adminv1.ListModelsResponse{Models: f.models}), nil
}

func (f *fakeCatalogAPI) DeleteModel(_ context.Context, req *connect.Request[adminv1.DeleteModelRequest]) (*connect.Response[adminv1.DeleteModelResponse], error) {
	if err := f.record(req.Header(), req.Msg); err != nil {
		return nil, err
	}
	return connect.NewResponse(&adminv1.DeleteModelResponse{}), nil
}

func startFakeCatalogAPI(t *testing.T, f *fakeCatalogAPI) string {
	mux := http.NewServeMux()
	mux.Handle(adminv1connect.NewCatalogServiceHandler(f))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// runCatalogCLI runs `tollgate catalog args...` through run, as main does.
func runCatalogCLI(t *testing.T, url string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Setenv("TOLLGATE_ADMIN_TOKEN", "")
	t.Setenv("TOLLGATE_ACCOUNT", "")
	var out, errOut bytes.Buffer
	args = append(append([]string{"catalog"}, args...), "--admin-url", url, "--token", "tok-123")
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func sampleServices() []*adminv1.Service {
	return []*adminv1.Service{
		{Id: "acme/anthropic", Adapter: eventsv1.Adapter_ADAPTER_ANTHROPIC, BaseUrl: "https://api.anthropic.com",
			Credential: &eventsv1.Credential{Source: &eventsv1.Credential_Env{Env: "TOLLGATE_CRED_ACME_ANTHROPIC"}}, RequestPrice: "0"},
		{Id: "acme/search", Adapter: eventsv1.Adapter_ADAPTER_HTTP, BaseUrl: "http://search.internal:9000",
			Credential: &eventsv1.Credential{Source: &eventsv1.Credential_File{File: "/run/secrets/search"}, Header: "X-Api-Token"}, RequestPrice: "0.001"},
	}
}

func sampleModels() []*adminv1.Model {
	return []*adminv1.Model{
		{Name: "claude-3-opus", Service: "acme/anthropic", InputPricePerMillion: "15", OutputPricePerMillion: "75", MaxOutputTokens: 4096},
		{Name: "gpt-4o-mini", Service: "default/openai", InputPricePerMillion: "0.15", OutputPricePerMillion: "0.6", MaxOutputTokens: 16384},
	}
}

// Each command sends the request its arguments say, with the operator's
// token, and prints what the API answered: as text, or as JSON with --json.
func TestCatalogCLICommands(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		services []*adminv1.Service
		models   []*adminv1.Model
		stored   proto.Message
		wantReq  proto.Message
		wantOut  string // exact text, or JSON compared as values with --json
	}{
		{
			name: "services", args: []string{"services"}, services: sampleServices(),
			wantReq: &adminv1.ListServicesRequest{},
			wantOut: "" +
				"ID              ADAPTER    BASE URL                     CREDENTIAL                                     REQUEST PRICE\n" +
				"acme/anthropic  anthropic  https://api.anthropic.com    env:TOLLGATE_CRED_ACME_ANTHROPIC               0\n" +
				"acme/search     http       http://search.internal:9000  file:/run/secrets/search (header X-Api-Token)  0.001\n",
		},
		{
			name: "services json", args: []string{"services", "--json"}, services: sampleServices(),
			wantReq: &adminv1.ListServicesRequest{},
			wantOut: `{"services": [
				{"id": "acme/anthropic", "adapter": "ADAPTER_ANTHROPIC", "base_url": "https://api.anthropic.com",
				 "credential": {"env": "TOLLGATE_CRED_ACME_ANTHROPIC"}, "request_price": "0"},
				{"id": "acme/search", "adapter": "ADAPTER_HTTP", "base_url": "http://search.internal:9000",
				 "credential": {"file": "/run/secrets/search", "header": "X-Api-Token"}, "request_price": "0.001"}]}`,
		},
		{
			name: "no services", args: []string{"services"},
			wantReq: &adminv1.ListServicesRequest{},
			wantOut: "no services; add one with 'tollgate catalog put-service'\n",
		},
		{
			name: "no services json", args: []string{"services", "--json"},
			wantReq: &adminv1.ListServicesRequest{},
			wantOut: `{"services": []}`,
		},
		{
			name: "models", args: []string{"models"}, models: sampleModels(),
			wantReq: &adminv1.ListModelsRequest{},
			wantOut: "" +
				"NAME           SERVICE         INPUT $/1M  OUTPUT $/1M  MAX OUTPUT TOKENS\n" +
				"claude-3-opus  acme/anthropic  15          75           4096\n" +
				"gpt-4o-mini    default/openai  0.15        0.6          16384\n",
		},
		{
			name: "models json", args: []string{"models", "--json"}, models: sampleModels(),
			wantReq: &adminv1.ListModelsRequest{},
			wantOut: `{"models": [
				{"name": "claude-3-opus", "service": "acme/anthropic", "input_price_per_million": "15",
				 "output_price_per_million": "75", "max_output_tokens": "4096"},
				{"name": "gpt-4o-mini", "service": "default/openai", "input_price_per_million": "0.15",
				 "output_price_per_million": "0.6", "max_output_tokens": "16384"}]}`,
		},
		{
			name: "put-service env credential",
			args: []string{"put-service", "acme/openai", "--adapter", "OpenAI", "--base-url", "https://api.openai.com",
				"--credential-env", "TOLLGATE_CRED_ACME_OPENAI"},
			stored: &adminv1.Service{Id: "acme/openai", Adapter: eventsv1.Adapter_ADAPTER_OPENAI, BaseUrl: "https://api.openai.com",
				Credential: &eventsv1.Credential{Source: &eventsv1.Credential_Env{Env: "TOLLGATE_CRED_ACME_OPENAI"}}, RequestPrice: "0"},
			wantReq: &adminv1.PutServiceRequest{Service: &adminv1.Service{Id: "acme/openai", Adapter: eventsv1.Adapter_ADAPTER_OPENAI,
				BaseUrl: "https://api.openai.com", Credential: &eventsv1.Credential{Source: &eventsv1.Credential_Env{Env: "TOLLGATE_CRED_ACME_OPENAI"}}}},
			wantOut: "" +
				"id             acme/openai\n" +
				"adapter        openai\n" +
				"base url       https://api.openai.com\n" +
				"credential     env:TOLLGATE_CRED_ACME_OPENAI\n" +
				"request price  $0\n",
		},
		{
			// The stored service is printed, as the API normalized it
			// ("0.0010" is stored as 0.001).
			name: "put-service file credential, header and price",
			args: []string{"put-service", "acme/search", "--adapter", "http", "--base-url", "http://search.internal:9000",
				"--credential-file", "/run/secrets/search", "--credential-header", "X-Api-Token", "--request-price", "0.0010", "--json"},
			stored: sampleServices()[1],
			wantReq: &adminv1.PutServiceRequest{Service: &adminv1.Service{Id: "acme/search", Adapter: eventsv1.Adapter_ADAPTER_HTTP,
				BaseUrl: "http://search.internal:9000", RequestPrice: "0.0010",
				Credential: &eventsv1.Credential{Source: &eventsv1.Credential_File{File: "/run/secrets/search"}, Header: "X-Api-Token"}}},
			wantOut: `{"id": "acme/search", "adapter": "ADAPTER_HTTP", "base_url": "http://search.internal:9000",
				"credential": {"file": "/run/secrets/search", "header": "X-Api-Token"}, "request_price": "0.001"}`,
		},
		{
			// No credential flag: no credential in the request.
			name: "put-service without a credential",
			args: []string{"put-service", "acme/local", "--adapter", "ANTHROPIC", "--base-url", "http://127.0.0.1:8090"},
			wantReq: &adminv1.PutServiceRequest{Service: &adminv1.Service{Id: "acme/local", Adapter: eventsv1.Adapter_ADAPTER_ANTHROPIC,
				BaseUrl: "http://127.0.0.1:8090"}},
			wantOut: "" +
				"id             acme/local\n" +
				"adapter        anthropic\n" +
				"base url       http://127.0.0.1:8090\n" +
				"credential     -\n" +
				"request price  -\n",
		},
		{
			name: "put-model",
			args: []string{"put-model", "gpt-4o-mini", "--service", "default/openai", "--input-price", "0.15", "--output-price", "0.60",
				"--max-output-tokens", "16384"},
			stored: sampleModels()[1],
			wantReq: &adminv1.PutModelRequest{Model: &adminv1.Model{Name: "gpt-4o-mini", Service: "default/openai",
				InputPricePerMillion: "0.15", OutputPricePerMillion: "0.60", MaxOutputTokens: 16384}},
			wantOut: "" +
				"name          gpt-4o-mini\n" +
				"service       default/openai\n" +
				"input price   $0.15 per million tokens\n" +
				"output price  $0.6 per million tokens\n" +
				"max output    16384 tokens\n",
		},
		{
			// A free model says so with 0.
			name:   "put-model json",
			args:   []string{"put-model", "local-llama", "--service=acme/local", "--input-price=0", "--output-price=0", "--max-output-tokens=2048", "--json"},
			stored: &adminv1.Model{Name: "local-llama", Service: "acme/local", InputPricePerMillion: "0", OutputPricePerMillion: "0", MaxOutputTokens: 2048},
			wantReq: &adminv1.PutModelRequest{Model: &adminv1.Model{Name: "local-llama", Service: "acme/local",
				InputPricePerMillion: "0", OutputPricePerMillion: "0", MaxOutputTokens: 2048}},
			wantOut: `{"name": "local-llama", "service": "acme/local", "input_price_per_million": "0",
				"output_price_per_million": "0", "max_output_tokens": "2048"}`,
		},
		{
			name: "delete-service", args: []string{"delete-service", "acme/search"},
			wantReq: &adminv1.DeleteServiceRequest{Id: "acme/search"},
			wantOut: "deleted service acme/search\n",
		},
		{
			name: "delete-service json", args: []string{"delete-service", "--json", "acme/search"},
			wantReq: &adminv1.DeleteServiceRequest{Id: "acme/search"},
			wantOut: `{"id": "acme/search", "deleted": true}`,
		},
		{
			name: "delete-model", args: []string{"delete-model", "claude-3-opus"},
			wantReq: &adminv1.DeleteModelRequest{Name: "claude-3-opus"},
			wantOut: "deleted model claude-3-opus\n",
		},
		{
			name: "delete-model json", args: []string{"delete-model", "claude-3-opus", "--json"},
			wantReq: &adminv1.DeleteModelRequest{Name: "claude-3-opus"},
			wantOut: `{"name": "claude-3-opus", "deleted": true}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := &fakeCatalogAPI{services: tc.services, models: tc.models, stored: tc.stored}
			url := startFakeCatalogAPI(t, api)
			code, out, errOut := runCatalogCLI(t, url, tc.args...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			if len(api.got) != 1 || !proto.Equal(api.got[0], tc.wantReq) {
				t.Errorf("requests %v\nwant [%v]", api.got, tc.wantReq)
			}
			if api.auth != "Bearer tok-123" {
				t.Errorf("Authorization = %q", api.auth)
			}
			if strings.HasPrefix(tc.wantOut, "{") {
				var got, want any
				if err := json.Unmarshal([]byte(out), &got); err != nil {
					t.Fatalf("stdout is not JSON (%v):\n%s", err, out)
				}
				if err := json.Unmarshal([]byte(tc.wantOut), &want); err != nil {
					t.Fatalf("bad test: %v", err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("stdout:\n%s\nwant (as JSON):\n%s", out, tc.wantOut)
				}
				return
			}
			if out != tc.wantOut {
				t.Errorf("stdout:\n%s\nwant:\n%s", out, tc.wantOut)
			}
		})
	}
}

// Mistakes in the command line exit 2 with a message that says what to fix,
// and call nothing.
func TestCatalogCLIUsageErrors(t *testing.T) {
	api := &fakeCatalogAPI{}
	url := startFakeCatalogAPI(t, api)
	svc := []string{"acme/openai", "--base-url", "https://api.openai.com"}
	for _, tc := range []struct {
		args []string
		msg  []string
	}{
		{append([]string{"put-service", "--adapter", "grpc"}, svc...), []string{`--adapter: unknown adapter "grpc"; use openai, anthropic or http`}},
		{append([]string{"put-service", "--adapter", "unspecified"}, svc...), []string{`unknown adapter "unspecified"; use openai, anthropic or http`}},
		{append([]string{"put-service"}, svc...), []string{"--adapter is required: openai, anthropic or http"}},
		{append([]string{"put-service", "--adapter", "openai", "--credential-env", "OPENAI_API_KEY", "--credential-file", "/run/secrets/openai"}, svc...),
			[]string{"--credential-env and --credential-file: give one"}},
		{[]string{"put-service", "--adapter", "openai", "--base-url", "https://api.openai.com"},
			[]string{"want 1 argument(s), got 0", "usage: tollgate catalog put-service <account>/<service> --adapter"}},
		{[]string{"put-model", "--service", "acme/openai", "--input-price", "1", "--output-price", "2", "--max-output-tokens", "10"},
			[]string{"want 1 argument(s), got 0", "usage: tollgate catalog put-model NAME --service <account>/<service>"}},
		{[]string{"put-model", "gpt-4o", "--service", "acme/openai", "--output-price", "2", "--max-output-tokens", "10"},
			[]string{"--input-price is required", "0 for free"}},
		{[]string{"put-model", "gpt-4o", "--service", "acme/openai", "--input-price", "2", "--max-output-tokens", "10"},
			[]string{"--output-price is required"}},
		{[]string{"delete-service"}, []string{"want 1 argument(s), got 0", "usage: tollgate catalog delete-service <account>/<service>"}},
		{[]string{"delete-model", "a", "b"}, []string{`want 1 argument(s), got 2: ["a" "b"]`, "usage: tollgate catalog delete-model NAME"}},
		{[]string{"services", "extra"}, []string{"want 0 argument(s), got 1"}},
		{[]string{"models", "--nope"}, []string{"unknown flag: --nope"}},
		{[]string{"services", "--account", "acme"}, []string{"--account does not apply to the catalog", "<account>/<service>"}},
		{[]string{"put"}, []string{`tollgate catalog: unknown command "put"`, "put-service <account>/<service>"}},
	} {
		api.got = nil
		code, out, errOut := runCatalogCLI(t, url, tc.args...)
		if code != 2 {
			t.Errorf("%v: exit %d; want 2", tc.args, code)
		}
		for _, m := range tc.msg {
			if !strings.Contains(errOut, m) {
				t.Errorf("%v: stderr %q; want %q in it", tc.args, errOut, m)
			}
		}
		if out != "" {
			t.Errorf("%v: stdout %q", tc.args, out)
		}
		if len(api.got) != 0 {
			t.Errorf("%v: the API was called: %v", tc.args, api.got)
		}
	}

	// No credential at all.
	t.Setenv("TOLLGATE_ADMIN_TOKEN", "")
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"catalog", "services", "--admin-url", url}, &out, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), "no credential: pass --token") {
		t.Errorf("no token: exit %d, %q", code, errOut.String())
	}
}

// `tollgate catalog` alone prints the commands and exits 2, as `tollgate
// keys` does; --help and help exit 0; the top-level usage names the group.
func TestCatalogCLIHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{{nil, 2}, {[]string{"--help"}, 0}, {[]string{"-h"}, 0}, {[]string{"help"}, 0}} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), append([]string{"catalog"}, tc.args...), &out, &errOut)
		if code != tc.code {
			t.Errorf("catalog %v: exit %d; want %d", tc.args, code, tc.code)
		}
		if !strings.HasPrefix(out.String(), "Usage: tollgate catalog <command> [flags]") {
			t.Errorf("catalog %v: stdout %q", tc.args, out.String())
		}
		for name := range catalogCommands {
			if !strings.Contains(out.String(), "\n  "+name+" ") {
				t.Errorf("catalog %v: usage does not list %s:\n%s", tc.args, name, out.String())
			}
		}
	}
	var keysOut, errOut bytes.Buffer
	if code := run(context.Background(), []string{"keys"}, &keysOut, &errOut); code != 2 {
		t.Errorf("keys alone exits %d: catalog no longer matches it", code)
	}
	var out bytes.Buffer
	if code := run(context.Background(), []string{"help"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "\n  catalog    ") {
		t.Errorf("tollgate help (exit %d) does not name catalog:\n%s", code, out.String())
	}
}

// invalidArgument builds the error the admin API answers for a bad entry
// (services/admin/errors.go): InvalidArgument with a google.rpc.BadRequest
// detail naming each field.
func invalidArgument(t *testing.T, fields ...keys.FieldError) error {
	ve := &keys.ValidationError{Fields: fields}
	cerr := connect.NewError(connect.CodeInvalidArgument, ve)
	br := &errdetails.BadRequest{}
	for _, f := range ve.Fields {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f.Field, Description: f.Message})
	}
	d, err := connect.NewErrorDetail(br)
	if err != nil {
		t.Fatal(err)
	}
	cerr.AddDetail(d)
	return cerr
}

// The API refusing exits 1 with its reason, and each bad field, on stderr.
func TestCatalogCLIAPIErrors(t *testing.T) {
	api := &fakeCatalogAPI{}
	url := startFakeCatalogAPI(t, api)

	api.err = invalidArgument(t,
		keys.FieldError{Field: "base_url", Message: `"ftp://x" is not an http(s) URL without a query or fragment, e.g. https://api.openai.com`},
		keys.FieldError{Field: "credential.env", Message: "an operator of account acme may name only variables that start with TOLLGATE_CRED_ACME_"})
	code, out, errOut := runCatalogCLI(t, url, "put-service", "acme/openai", "--adapter", "openai", "--base-url", "ftp://x", "--credential-env", "OPENAI_API_KEY")
	want := "error: the admin API rejected the request (invalid_argument); fix these and try again:\n" +
		`  base_url: "ftp://x" is not an http(s) URL without a query or fragment, e.g. https://api.openai.com` + "\n" +
		"  credential.env: an operator of account acme may name only variables that start with TOLLGATE_CRED_ACME_\n"
	if code != 1 || errOut != want || out != "" {
		t.Errorf("invalid: exit %d, stdout %q, stderr:\n%s\nwant:\n%s", code, out, errOut, want)
	}
	if len(api.got) != 1 {
		t.Errorf("requests: %v", api.got)
	}

	api.err = connect.NewError(connect.CodeFailedPrecondition, &catalog.InUseError{What: "service acme/openai", By: []string{"gpt-4o", "gpt-4o-mini"}})
	code, out, errOut = runCatalogCLI(t, url, "delete-service", "acme/openai")
	want = "error: service acme/openai is still used by gpt-4o, gpt-4o-mini; delete or move those first (failed_precondition)\n"
	if code != 1 || errOut != want || out != "" {
		t.Errorf("in use: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
	}

	api.err = connect.NewError(connect.CodeNotFound, catalog.ErrNotFound)
	code, out, errOut = runCatalogCLI(t, url, "delete-model", "gpt-5", "--json")
	if code != 1 || out != "" || !strings.Contains(errOut, "(not_found)") {
		t.Errorf("not found: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// A command's --help lists the flags with their defaults; the token's default
// comes from the environment and must not be printed.
func TestHelpDoesNotPrintTheToken(t *testing.T) {
	t.Setenv("TOLLGATE_ADMIN_TOKEN", "tok-from-env-123")
	for _, args := range [][]string{{"catalog", "services", "--help"}, {"keys", "list", "--help"}, {"usage", "top", "--help"}} {
		var out, errOut bytes.Buffer
		run(context.Background(), args, &out, &errOut)
		all := out.String() + errOut.String()
		if !strings.Contains(all, "--token") {
			t.Errorf("%v: no flag list in the help:\n%s", args, all)
		}
		if strings.Contains(all, "tok-from-env-123") {
			t.Errorf("%v: the help prints the token:\n%s", args, all)
		}
	}
}

// fakeChangesAPI answers ListCatalogChanges with fixed changes.
type fakeChangesAPI struct {
	fakeCatalogAPI
	changes []*adminv1.CatalogChange
}

func (f *fakeChangesAPI) ListCatalogChanges(_ context.Context, req *connect.Request[adminv1.ListCatalogChangesRequest]) (*connect.Response[adminv1.ListCatalogChangesResponse], error) {
	if err := f.record(req.Header(), req.Msg); err != nil {
		return nil, err
	}
	return connect.NewResponse(&adminv1.ListCatalogChangesResponse{Changes: f.changes, NextPageToken: "42"}), nil
}

func TestCatalogCLIChanges(t *testing.T) {
	at := timestamppb.New(time.Date(2026, 11, 25, 3, 4, 5, 0, time.UTC))
	f := &fakeChangesAPI{changes: []*adminv1.CatalogChange{
		{Sequence: 7, OccurredAt: at, Actor: "operator:bob", Account: "acme", Kind: "model", Id: "gpt-4",
			Model: &adminv1.Model{Name: "gpt-4", Service: "acme/openai", InputPricePerMillion: "30", OutputPricePerMillion: "60", MaxOutputTokens: 8192}},
		{Sequence: 9, OccurredAt: at, Actor: "bootstrap", Account: "acme", Kind: "service", Id: "acme/openai", Deleted: true},
	}}
	mux := http.NewServeMux()
	mux.Handle(adminv1connect.NewCatalogServiceHandler(f))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	code, out, errOut := runCatalogCLI(t, srv.URL, "changes", "--account", "acme", "--limit", "2", "--page-token", "5")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := &adminv1.ListCatalogChangesRequest{Account: "acme", PageSize: 2, PageToken: "5"}
	if len(f.got) != 1 || !proto.Equal(f.got[0], want) || f.auth != "Bearer tok-123" {
		t.Fatalf("request %v (auth %q), want %v", f.got, f.auth, want)
	}
	for _, line := range []string{
		"7    2026-11-25T03:04:05Z  operator:bob  put model gpt-4: acme/openai, input $30, output $60 per million tokens, max output 8192",
		"9    2026-11-25T03:04:05Z  bootstrap     deleted service acme/openai",
		"next page: --page-token 42",
	} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("output lacks %q:\n%s", line, out)
		}
	}
	code, out, _ = runCatalogCLI(t, srv.URL, "changes", "--json")
	var got struct {
		Changes []struct {
			Sequence string `json:"sequence"`
			Actor    string `json:"actor"`
			Deleted  bool   `json:"deleted"`
		} `json:"changes"`
		Next string `json:"next_page_token"`
	}
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || len(got.Changes) != 2 || got.Changes[1].Actor != "bootstrap" ||
		!got.Changes[1].Deleted || got.Changes[0].Sequence != "7" || got.Next != "42" {
		t.Errorf("--json: exit %d, %v, %+v:\n%s", code, err, got, out)
	}
	if code, _, errOut := runCatalogCLI(t, srv.URL, "changes", "extra"); code != 2 || !strings.Contains(errOut, "want 0 argument(s)") {
		t.Errorf("an extra argument: exit %d, %q", code, errOut)
	}
}
