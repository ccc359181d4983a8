package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/pflag"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	"github.com/tollgate/tollgate/gen/tollgate/admin/v1/adminv1connect"
	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

var catalogCommands = map[string]command{
	"services": catalogServices, "models": catalogModels,
	"put-service": catalogPutService, "put-model": catalogPutModel,
	"delete-service": catalogDeleteService, "delete-model": catalogDeleteModel,
	"changes": catalogChanges,
}

const catalogUsage = `Usage: tollgate catalog <command> [flags]

Commands:
  services                            list services: adapter, base URL, credential reference, price
  models                              list models: service, prices, max output tokens
  put-service <account>/<service>     create or replace a service (--adapter, --base-url, credential, price)
  put-model NAME                      create or replace a model (--service, prices, --max-output-tokens)
  delete-service <account>/<service>  delete a service that no model uses
  delete-model NAME                   delete a model
  changes                             every change, oldest first, with who made it (operators)

Prices are decimal dollars ("0.15"): per request for services, per million
tokens for models. Edges pick changes up within milliseconds, without a restart.

Run 'tollgate catalog <command> --help' for the flags of a command.
`

// runCatalog runs `tollgate catalog ...` and returns the process exit code:
// 0 done, 1 the admin API refused or failed, 2 a mistake in the command line.
func runCatalog(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runGroup(ctx, "catalog", catalogUsage, catalogCommands, args, stdout, stderr)
}

// catalogFlagSet is cl.flagSet without --account: the catalog's requests
// name no account (a service id carries its own).
func (cl *client) catalogFlagSet(name, usage string) *pflag.FlagSet {
	fs := cl.flagSet(name, usage)
	_ = fs.MarkHidden("account")
	return fs
}

// parseCatalog is cl.parse for a catalog command whose nargs positional
// arguments are described by synopsis: a wrong count also says what to give.
func (cl *client) parseCatalog(fs *pflag.FlagSet, args []string, nargs int, synopsis string) error {
	err := cl.parse(fs, args, nargs)
	var ue *usageError
	if errors.As(err, &ue) && fs.NArg() != nargs {
		return usageErrorf("%s\nusage: %s %s", ue.msg, fs.Name(), synopsis)
	}
	if err != nil {
		return err
	}
	if fs.Changed("account") {
		return usageErrorf("%s: --account does not apply to the catalog; a service id names its account, <account>/<service>", fs.Name())
	}
	return nil
}

// catalogClient is the CatalogService client on the connection cl.parse set up.
func (cl *client) catalogClient() adminv1connect.CatalogServiceClient {
	return adminv1connect.NewCatalogServiceClient(&http.Client{Timeout: 30 * time.Second}, strings.TrimRight(cl.adminURL, "/"),
		connect.WithInterceptors(bearer(cl.token)))
}

func catalogServices(ctx context.Context, cl *client, args []string, out io.Writer) error {
	fs := cl.catalogFlagSet("catalog services", "[flags]")
	if err := cl.parseCatalog(fs, args, 0, "[flags]"); err != nil {
		return err
	}
	res, err := cl.catalogClient().ListServices(ctx, connect.NewRequest(&adminv1.ListServicesRequest{}))
	if err != nil {
		return err
	}
	services := res.Msg.GetServices()
	if cl.json {
		list := make([]json.RawMessage, 0, len(services))
		for _, s := range services {
			list = append(list, rawJSON(s))
		}
		return writeJSONTo(out, map[string]any{"services": list})
	}
	if len(services) == 0 {
		_, err := fmt.Fprintln(out, "no services; add one with 'tollgate catalog put-service'")
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADAPTER\tBASE URL\tCREDENTIAL\tREQUEST PRICE")
	for _, s := range services {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.GetId(), adapterText(s.GetAdapter()), s.GetBaseUrl(),
			credentialText(s.GetCredential()), orDash(s.GetRequestPrice()))
	}
	return tw.Flush()
}

func catalogModels(ctx context.Context, cl *client, args []string, out io.Writer) error {
	fs := cl.catalogFlagSet("catalog models", "[flags]")
	if err := cl.parseCatalog(fs, args, 0, "[flags]"); err != nil {
		return err
	}
	res, err := cl.catalogClient().ListModels(ctx, connect.NewRequest(&adminv1.ListModelsRequest{}))
	if err != nil {
		return err
	}
	models := res.Msg.GetModels()
	if cl.json {
		list := make([]json.RawMessage, 0, len(models))
		for _, m := range models {
			list = append(list, rawJSON(m))
		}
		return writeJSONTo(out, map[string]any{"models": list})
	}
	if len(models) == 0 {
		_, err := fmt.Fprintln(out, "no models; add one with 'tollgate catalog put-model'")
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSERVICE\tINPUT $/1M\tOUTPUT $/1M\tMAX OUTPUT TOKENS")
	for _, m := range models {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", m.GetName(), m.GetService(), orDash(m.GetInputPricePerMillion()),
			orDash(m.GetOutputPricePerMillion()), m.GetMaxOutputTokens())
	}
	return tw.Flush()
}

const putServiceSynopsis = "<account>/<service> --adapter ADAPTER --base-url URL [--credential-env NAME | --credential-file PATH] [--credential-header H] [--request-price DOLLARS]"

func catalogPutService(ctx context.Context, cl *client, args []string, out io.Writer) error {
	fs := cl.catalogFlagSet("catalog put-service", putServiceSynopsis+
		"\n\nCreates the service or replaces it whole: a setting not given is cleared.")
	adapter := fs.String("adapter", "", "how the edge talks to the service: "+orList(adapterNames()))
	baseURL := fs.String("base-url", "", "upstream base URL, e.g. https://api.openai.com (request paths are appended)")
	credEnv := fs.String("credential-env", "", "environment variable of the edge that holds the upstream credential")
	credFile := fs.String("credential-file", "", "file on the edge's machine that holds it, e.g. /run/secrets/openai")
	credHeader := fs.String("credential-header", "", "header the credential goes in (default: Authorization: Bearer for openai and http, x-api-key for anthropic)")
	requestPrice := fs.String("request-price", "", "dollars per request, e.g. 0.001 (http services)")
	if err := cl.parseCatalog(fs, args, 1, putServiceSynopsis); err != nil {
		return err
	}
	a, err := parseAdapter(*adapter)
	if err != nil {
		return err
	}
	if fs.Changed("credential-env") && fs.Changed("credential-file") {
		return usageErrorf("--credential-env and --credential-file: give one; the edge reads the credential from one place")
	}
	svc := &adminv1.Service{Id: fs.Arg(0), Adapter: a, BaseUrl: *baseURL, RequestPrice: *requestPrice}
	if fs.Changed("credential-env") || fs.Changed("credential-file") || fs.Changed("credential-header") {
		svc.Credential = &eventsv1.Credential{Header: *credHeader}
		switch {
		case fs.Changed("credential-env"):
			svc.Credential.Source = &eventsv1.Credential_Env{Env: *credEnv}
		case fs.Changed("credential-file"):
			svc.Credential.Source = &eventsv1.Credential_File{File: *credFile}
		}
	}
	res, err := cl.catalogClient().PutService(ctx, connect.NewRequest(&adminv1.PutServiceRequest{Service: svc}))
	if err != nil {
		return err
	}
	return cl.printService(out, res.Msg.GetService())
}

const putModelSynopsis = "NAME --service <account>/<service> --input-price DOLLARS --output-price DOLLARS --max-output-tokens N"

func catalogPutModel(ctx context.Context, cl *client, args []string, out io.Writer) error {
	fs := cl.catalogFlagSet("catalog put-model", putModelSynopsis+
		"\n\nCreates the model or replaces it whole. A model name routes to one service.")
	service := fs.String("service", "", "the service that serves the model, <account>/<service>")
	inputPrice := fs.String("input-price", "", "dollars per million input tokens, e.g. 0.15 (0 for free)")
	outputPrice := fs.String("output-price", "", "dollars per million output tokens, e.g. 0.60 (0 for free)")
	maxOutput := fs.Int64("max-output-tokens", 0, "the most output tokens a request may get (reserved when a request sets no max_tokens)")
	if err := cl.parseCatalog(fs, args, 1, putModelSynopsis); err != nil {
		return err
	}
	// The API reads an empty price as 0: a forgotten flag would make the
	// model free, so both prices are asked for.
	for _, flag := range []string{"input-price", "output-price"} {
		if !fs.Changed(flag) {
			return usageErrorf("catalog put-model: --%s is required (dollars per million tokens, e.g. 0.15; 0 for free)", flag)
		}
	}
	m := &adminv1.Model{Name: fs.Arg(0), Service: *service, InputPricePerMillion: *inputPrice,
		OutputPricePerMillion: *outputPrice, MaxOutputTokens: *maxOutput}
	res, err := cl.catalogClient().PutModel(ctx, connect.NewRequest(&adminv1.PutModelRequest{Model: m}))
	if err != nil {
		return err
	}
	return cl.printModel(out, res.Msg.GetModel())
}

func catalogDeleteService(ctx context.Context, cl *client, args []string, out io.Writer) error {
	fs := cl.catalogFlagSet("catalog delete-service", "<account>/<service>\n\nDeletes a service; first delete or move the models it serves.")
	if err := cl.parseCatalog(fs, args, 1, "<account>/<service>"); err != nil {
		return err
	}
	if _, err := cl.catalogClient().DeleteService(ctx, connect.NewRequest(&adminv1.DeleteServiceRequest{Id: fs.Arg(0)})); err != nil {
		return err
	}
	if cl.json {
		return writeJSONTo(out, map[string]any{"id": fs.Arg(0), "deleted": true})
	}
	_, err := fmt.Fprintf(out, "deleted service %s\n", fs.Arg(0))
	return err
}

func catalogDeleteModel(ctx context.Context, cl *client, args []string, out io.Writer) error {
	fs := cl.catalogFlagSet("catalog delete-model", "NAME")
	if err := cl.parseCatalog(fs, args, 1, "NAME"); err != nil {
		return err
	}
	if _, err := cl.catalogClient().DeleteModel(ctx, connect.NewRequest(&adminv1.DeleteModelRequest{Name: fs.Arg(0)})); err != nil {
		return err
	}
	if cl.json {
		return writeJSONTo(out, map[string]any{"name": fs.Arg(0), "deleted": true})
	}
	_, err := fmt.Fprintf(out, "deleted model %s\n", fs.Arg(0))
	return err
}

func (cl *client) printService(out io.Writer, s *adminv1.Service) error {
	if cl.json {
		return writeJSONTo(out, rawJSON(s))
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	row := func(name, value string) { fmt.Fprintf(tw, "%s\t%s\n", name, value) }
	row("id", s.GetId())
	row("adapter", adapterText(s.GetAdapter()))
	row("base url", s.GetBaseUrl())
	row("credential", credentialText(s.GetCredential()))
	row("request price", dollars(s.GetRequestPrice()))
	return tw.Flush()
}

func (cl *client) printModel(out io.Writer, m *adminv1.Model) error {
	if cl.json {
		return writeJSONTo(out, rawJSON(m))
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	row := func(name, value string) { fmt.Fprintf(tw, "%s\t%s\n", name, value) }
	row("name", m.GetName())
	row("service", m.GetService())
	row("input price", dollars(m.GetInputPricePerMillion())+" per million tokens")
	row("output price", dollars(m.GetOutputPricePerMillion())+" per million tokens")
	row("max output", fmt.Sprintf("%d tokens", m.GetMaxOutputTokens()))
	return tw.Flush()
}

// parseAdapter reads --adapter: an Adapter's name without ADAPTER_, in any case.
func parseAdapter(s string) (eventsv1.Adapter, error) {
	if strings.TrimSpace(s) == "" {
		return 0, usageErrorf("catalog put-service: --adapter is required: %s", orList(adapterNames()))
	}
	name := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "ADAPTER_")
	v, ok := eventsv1.Adapter_value["ADAPTER_"+name]
	if !ok || v == 0 {
		return 0, usageErrorf("--adapter: unknown adapter %q; use %s", s, orList(adapterNames()))
	}
	return eventsv1.Adapter(v), nil
}

// adapterNames are the adapters --adapter takes, in the enum's order.
func adapterNames() []string {
	var nums []int32
	for n := range eventsv1.Adapter_name {
		if n != 0 {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	names := make([]string, 0, len(nums))
	for _, n := range nums {
		names = append(names, adapterText(eventsv1.Adapter(n)))
	}
	return names
}

func adapterText(a eventsv1.Adapter) string {
	return strings.ToLower(strings.TrimPrefix(a.String(), "ADAPTER_"))
}

// orList writes a, b or c.
func orList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// credentialText writes a credential reference as env:NAME or file:PATH,
// and the header it goes in if one is set.
func credentialText(c *eventsv1.Credential) string {
	var s string
	switch src := c.GetSource().(type) {
	case *eventsv1.Credential_Env:
		s = "env:" + src.Env
	case *eventsv1.Credential_File:
		s = "file:" + src.File
	default:
		s = "-"
	}
	if c.GetHeader() != "" {
		s += " (header " + c.GetHeader() + ")"
	}
	return s
}

func dollars(s string) string {
	if s == "" {
		return "-"
	}
	return "$" + s
}

func catalogChanges(ctx context.Context, cl *client, args []string, out io.Writer) error {
	fs := cl.flagSet("catalog changes", "[--account A] [--limit N] [--page-token T]")
	fs.Lookup("account").Usage = "only this account's changes (env TOLLGATE_ACCOUNT; default: every account the credential may read)"
	limit := fs.Int32("limit", 100, "changes per page, 1 to 1000")
	token := fs.String("page-token", "", "next page token of an earlier call (it is printed last); empty for the oldest change")
	if err := cl.parse(fs, args, 0); err != nil {
		return err
	}
	res, err := cl.catalogClient().ListCatalogChanges(ctx, connect.NewRequest(&adminv1.ListCatalogChangesRequest{
		Account: cl.account, PageSize: *limit, PageToken: *token}))
	if err != nil {
		return err
	}
	changes := res.Msg.GetChanges()
	if cl.json {
		list := make([]json.RawMessage, 0, len(changes))
		for _, c := range changes {
			list = append(list, rawJSON(c))
		}
		return writeJSONTo(out, map[string]any{"changes": list, "next_page_token": res.Msg.GetNextPageToken()})
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tCHANGE")
	for _, c := range changes {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", c.GetSequence(), c.GetOccurredAt().AsTime().UTC().Format(time.RFC3339), orDash(c.GetActor()), changeText(c))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "next page: --page-token %s\n", res.Msg.GetNextPageToken())
	return err
}

// changeText says what a change did, in one line.
func changeText(c *adminv1.CatalogChange) string {
	switch {
	case c.GetDeleted():
		return "deleted " + c.GetKind() + " " + c.GetId()
	case c.GetService() != nil:
		s := c.GetService()
		return fmt.Sprintf("put service %s: %s %s, credential %s, request price %s", s.GetId(), adapterText(s.GetAdapter()),
			s.GetBaseUrl(), credentialText(s.GetCredential()), orDash(s.GetRequestPrice()))
	case c.GetModel() != nil:
		m := c.GetModel()
		return fmt.Sprintf("put model %s: %s, input %s, output %s per million tokens, max output %d", m.GetName(), m.GetService(),
			dollars(m.GetInputPricePerMillion()), dollars(m.GetOutputPricePerMillion()), m.GetMaxOutputTokens())
	}
	return c.GetKind() + " " + c.GetId()
}
