package admin

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	"github.com/tollgate/tollgate/gen/tollgate/admin/v1/adminv1connect"
	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/auth"
	"github.com/tollgate/tollgate/pkg/catalog"
	"github.com/tollgate/tollgate/pkg/keys"
)

// catalogHandler is CatalogService. Only operators change the catalog, and
// only for the accounts they manage; anyone authenticated may read the
// models and prices, and the services of accounts they may read.
type catalogHandler struct {
	store *catalog.Store
	auth  *auth.Authenticator
	log   *slog.Logger
	now   func() time.Time
}

var _ adminv1connect.CatalogServiceHandler = (*catalogHandler)(nil)

func (h *catalogHandler) mapErr(procedure string, err error) error {
	return connectError(h.log, procedure, err)
}

// mayManage checks that p is an operator who may change account's services.
// A malformed id is refused here, as an invalid field: without an account
// there is nothing to check the caller against, and the store must never be
// reached with it (ServiceKey would map "acme.openai" onto acme/openai).
func mayManage(p auth.Principal, field, serviceID string) error {
	acct, _, ok := catalog.SplitServiceID(serviceID)
	if !ok {
		var v keys.ValidationError
		catalog.CheckServiceID(field, serviceID, &v)
		return &v
	}
	if p.Kind == auth.APIKey {
		return fmt.Errorf("%w: only operators change the catalog", auth.ErrForbidden)
	}
	if !p.MayWrite(acct) {
		return fmt.Errorf("%w: account %q is not yours", auth.ErrForbidden, acct)
	}
	return nil
}

// mayReference checks the credential reference of svc against what p may
// point the edges at. The edges resolve a reference in their own environment
// and file system, where every account's upstream credentials live: an
// operator of one account who could name any variable or file could send
// another account's credential to a base URL of its own. So an operator of
// some accounts only may name environment variables of its account's
// namespace, TOLLGATE_CRED_<ACCOUNT>_..., and no files; operators of the
// whole deployment (the bootstrap token, or accounts ["*"]) may name any.
func mayReference(p auth.Principal, svc *eventsv1.Service) error {
	if p.Kind == auth.Bootstrap || slices.Contains(p.Accounts, "*") {
		return nil
	}
	acct, _, _ := catalog.SplitServiceID(svc.GetId())
	prefix := credentialEnvPrefix(acct)
	var v keys.ValidationError
	switch src := svc.GetCredential().GetSource().(type) {
	case *eventsv1.Credential_Env:
		if !strings.HasPrefix(src.Env, prefix) {
			v.Add("service.credential.env", "an operator of account %s may name only variables that start with %s (the edge's environment holds every account's credentials)", acct, prefix)
		}
	case *eventsv1.Credential_File:
		v.Add("service.credential.file", "only operators of the whole deployment may name a file; use credential.env with a name that starts with %s", prefix)
	}
	return v.Err()
}

// credentialEnvPrefix is the start of the environment variables an operator
// of account may name as a service's credential: TOLLGATE_CRED_, the account
// in upper case with '-' as '_', and '_'.
func credentialEnvPrefix(account string) string {
	return "TOLLGATE_CRED_" + strings.ToUpper(strings.ReplaceAll(account, "-", "_")) + "_"
}

func (h *catalogHandler) PutService(ctx context.Context, req *connect.Request[adminv1.PutServiceRequest]) (*connect.Response[adminv1.PutServiceResponse], error) {
	return call(ctx, h.auth, h.mapErr, req, func(ctx context.Context, p auth.Principal, r *adminv1.PutServiceRequest) (*adminv1.PutServiceResponse, error) {
		in := r.GetService()
		var v keys.ValidationError
		svc := &eventsv1.Service{Id: in.GetId(), Adapter: in.GetAdapter(), BaseUrl: in.GetBaseUrl(), Credential: in.GetCredential(),
			RequestPrice: catalog.ParsePrice("service.request_price", in.GetRequestPrice(), &v)}
		v.MergeUnder("service", catalog.ValidateService(svc)) // every field's problem at once
		if err := v.Err(); err != nil {
			return nil, err
		}
		if err := mayManage(p, "service.id", svc.GetId()); err != nil {
			return nil, err
		}
		if err := mayReference(p, svc); err != nil {
			return nil, err
		}
		if err := h.store.PutService(ctx, svc, h.change(p)); err != nil {
			return nil, err
		}
		return &adminv1.PutServiceResponse{Service: apiService(svc)}, nil
	})
}

func (h *catalogHandler) ListServices(ctx context.Context, req *connect.Request[adminv1.ListServicesRequest]) (*connect.Response[adminv1.ListServicesResponse], error) {
	return call(ctx, h.auth, h.mapErr, req, func(ctx context.Context, p auth.Principal, _ *adminv1.ListServicesRequest) (*adminv1.ListServicesResponse, error) {
		snap, err := h.store.Load(ctx)
		if err != nil {
			return nil, err
		}
		out := &adminv1.ListServicesResponse{}
		for _, s := range snap.Services {
			if acct, _, _ := catalog.SplitServiceID(s.GetId()); p.MayRead(acct) {
				out.Services = append(out.Services, apiService(s))
			}
		}
		sort.Slice(out.Services, func(i, j int) bool { return out.Services[i].GetId() < out.Services[j].GetId() })
		return out, nil
	})
}

func (h *catalogHandler) DeleteService(ctx context.Context, req *connect.Request[adminv1.DeleteServiceRequest]) (*connect.Response[adminv1.DeleteServiceResponse], error) {
	return call(ctx, h.auth, h.mapErr, req, func(ctx context.Context, p auth.Principal, r *adminv1.DeleteServiceRequest) (*adminv1.DeleteServiceResponse, error) {
		if err := mayManage(p, "id", r.GetId()); err != nil {
			return nil, err
		}
		// Deleted only if no write came since the models were looked at:
		// a model added meanwhile would be left without its service.
		snap, version, err := h.store.LoadVersion(ctx)
		if err != nil {
			return nil, err
		}
		var users []string
		for _, name := range snap.SortedModelNames() {
			if snap.Models[name].GetService() == r.GetId() {
				users = append(users, name)
			}
		}
		if len(users) > 0 {
			return nil, &catalog.InUseError{What: "service " + r.GetId(), By: users}
		}
		return &adminv1.DeleteServiceResponse{}, h.store.Delete(ctx, catalog.ServiceKey(r.GetId()), h.change(p), version)
	})
}

func (h *catalogHandler) PutModel(ctx context.Context, req *connect.Request[adminv1.PutModelRequest]) (*connect.Response[adminv1.PutModelResponse], error) {
	return call(ctx, h.auth, h.mapErr, req, func(ctx context.Context, p auth.Principal, r *adminv1.PutModelRequest) (*adminv1.PutModelResponse, error) {
		in := r.GetModel()
		var v keys.ValidationError
		m := &eventsv1.Model{Name: in.GetName(), Service: in.GetService(), MaxOutputTokens: in.GetMaxOutputTokens(),
			InputPricePerMillion:  catalog.ParsePrice("model.input_price_per_million", in.GetInputPricePerMillion(), &v),
			OutputPricePerMillion: catalog.ParsePrice("model.output_price_per_million", in.GetOutputPricePerMillion(), &v)}
		v.MergeUnder("model", catalog.ValidateModel(m))
		if err := v.Err(); err != nil {
			return nil, err
		}
		if err := mayManage(p, "model.service", m.GetService()); err != nil {
			return nil, err
		}
		// The checks below read the catalog; the write happens only if no
		// other write came since (another PutModel could take the name, a
		// DeleteService remove the service).
		snap, version, err := h.store.LoadVersion(ctx)
		if err != nil {
			return nil, err
		}
		if _, ok := snap.Services[m.GetService()]; !ok {
			v.Add("model.service", "no service %q; create it with PutService first", m.GetService())
			return nil, &v
		}
		// A model name routes to one service: taking it from another
		// account's service needs the right to manage that account too.
		var previous string
		if old, ok := snap.Models[m.GetName()]; ok && old.GetService() != m.GetService() {
			if err := mayManage(p, "model.service", old.GetService()); err != nil {
				return nil, fmt.Errorf("%w (model %q is served by %s)", err, m.GetName(), old.GetService())
			}
			previous, _, _ = catalog.SplitServiceID(old.GetService())
		}
		if err := h.store.PutModel(ctx, m, previous, h.change(p), version); err != nil {
			return nil, err
		}
		return &adminv1.PutModelResponse{Model: apiModel(m)}, nil
	})
}

func (h *catalogHandler) ListModels(ctx context.Context, req *connect.Request[adminv1.ListModelsRequest]) (*connect.Response[adminv1.ListModelsResponse], error) {
	return call(ctx, h.auth, h.mapErr, req, func(ctx context.Context, _ auth.Principal, _ *adminv1.ListModelsRequest) (*adminv1.ListModelsResponse, error) {
		snap, err := h.store.Load(ctx)
		if err != nil {
			return nil, err
		}
		out := &adminv1.ListModelsResponse{}
		for _, m := range snap.Models {
			out.Models = append(out.Models, apiModel(m))
		}
		sort.Slice(out.Models, func(i, j int) bool { return out.Models[i].GetName() < out.Models[j].GetName() })
		return out, nil
	})
}

func (h *catalogHandler) DeleteModel(ctx context.Context, req *connect.Request[adminv1.DeleteModelRequest]) (*connect.Response[adminv1.DeleteModelResponse], error) {
	return call(ctx, h.auth, h.mapErr, req, func(ctx context.Context, p auth.Principal, r *adminv1.DeleteModelRequest) (*adminv1.DeleteModelResponse, error) {
		// Deleted only if no write came since the model's service was
		// checked (it could be moved to another account's meanwhile).
		snap, version, err := h.store.LoadVersion(ctx)
		if err != nil {
			return nil, err
		}
		m, ok := snap.Models[r.GetName()]
		if !ok {
			return nil, catalog.ErrNotFound
		}
		if err := mayManage(p, "name", m.GetService()); err != nil {
			return nil, err
		}
		return &adminv1.DeleteModelResponse{}, h.store.Delete(ctx, catalog.ModelKey(r.GetName()), h.change(p), version)
	})
}

// change is a write made now by p.
func (h *catalogHandler) change(p auth.Principal) catalog.Change {
	return catalog.Change{Actor: p.Actor(), At: h.now()}
}

func (h *catalogHandler) ListCatalogChanges(ctx context.Context, req *connect.Request[adminv1.ListCatalogChangesRequest]) (*connect.Response[adminv1.ListCatalogChangesResponse], error) {
	return call(ctx, h.auth, h.mapErr, req, func(ctx context.Context, p auth.Principal, r *adminv1.ListCatalogChangesRequest) (*adminv1.ListCatalogChangesResponse, error) {
		if p.Kind == auth.APIKey {
			return nil, fmt.Errorf("%w: only operators read the catalog's changes", auth.ErrForbidden)
		}
		acct := r.GetAccount()
		if acct != "" && !p.MayRead(acct) {
			return nil, fmt.Errorf("%w: account %q is not yours", auth.ErrForbidden, acct)
		}
		var v keys.ValidationError
		size := pageSize(r.GetPageSize(), &v)
		var from uint64
		if t := r.GetPageToken(); t != "" {
			n, err := strconv.ParseUint(t, 10, 64)
			if err != nil {
				v.Add("page_token", "%q is not a next_page_token of ListCatalogChanges; leave it empty to start from the oldest change", t)
			}
			from = n
		}
		if err := v.Err(); err != nil {
			return nil, err
		}
		shown := p.MayRead // a change of a model moved between accounts is shown to both
		if acct != "" {
			shown = func(a string) bool { return a == acct }
		}
		recs, next, err := h.store.Changes(ctx, from, int(size), func(rec *catalog.Record) bool {
			return shown(rec.Account) || (rec.Previous != "" && shown(rec.Previous))
		})
		if err != nil {
			return nil, err
		}
		out := &adminv1.ListCatalogChangesResponse{NextPageToken: strconv.FormatUint(next, 10)}
		for _, rec := range recs {
			c := &adminv1.CatalogChange{Sequence: rec.Sequence, EventId: rec.EventID, OccurredAt: timestamppb.New(rec.At),
				Actor: rec.Actor, Account: rec.Account, Kind: rec.Kind, Id: rec.ID, Deleted: rec.Deleted}
			if rec.Service != nil {
				c.Service = apiService(rec.Service)
			}
			if rec.Model != nil {
				c.Model = apiModel(rec.Model)
			}
			out.Changes = append(out.Changes, c)
		}
		return out, nil
	})
}

func apiService(s *eventsv1.Service) *adminv1.Service {
	return &adminv1.Service{Id: s.GetId(), Adapter: s.GetAdapter(), BaseUrl: s.GetBaseUrl(), Credential: s.GetCredential(),
		RequestPrice: catalog.FormatPrice(s.GetRequestPrice()), UpdatedAt: s.GetUpdatedAt(), UpdatedBy: s.GetUpdatedBy()}
}

func apiModel(m *eventsv1.Model) *adminv1.Model {
	return &adminv1.Model{Name: m.GetName(), Service: m.GetService(), MaxOutputTokens: m.GetMaxOutputTokens(),
		InputPricePerMillion:  catalog.FormatPrice(m.GetInputPricePerMillion()),
		OutputPricePerMillion: catalog.FormatPrice(m.GetOutputPricePerMillion()), UpdatedAt: m.GetUpdatedAt(), UpdatedBy: m.GetUpdatedBy()}
}
