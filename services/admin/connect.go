package admin

import (
	"context"
	"log/slog"

	"connectrpc.com/connect"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	"github.com/tollgate/tollgate/gen/tollgate/admin/v1/adminv1connect"
	"github.com/tollgate/tollgate/pkg/auth"
)

// keyHandler is the Connect face of keyService: each method authenticates,
// calls the service and maps its errors; nothing else.
type keyHandler struct {
	svc  *keyService
	auth *auth.Authenticator
	log  *slog.Logger
}

var _ adminv1connect.KeyServiceHandler = (*keyHandler)(nil)

// call runs one RPC of any service: authenticate, do, and map errors with
// mapErr (each service's own mapping; they share classify).
func call[Req, Res any](ctx context.Context, authn *auth.Authenticator, mapErr func(procedure string, err error) error,
	req *connect.Request[Req], do func(context.Context, auth.Principal, *Req) (*Res, error)) (*connect.Response[Res], error) {
	p, err := authn.Authenticate(ctx, req.Header())
	if err == nil {
		var res *Res
		if res, err = do(ctx, p, req.Msg); err == nil {
			return connect.NewResponse(res), nil
		}
	}
	return nil, mapErr(req.Spec().Procedure, err)
}

// mapErr is the key service's error mapping.
func (h *keyHandler) mapErr(procedure string, err error) error {
	return connectError(h.log, procedure, err)
}

func (h *keyHandler) CreateKey(ctx context.Context, req *connect.Request[adminv1.CreateKeyRequest]) (*connect.Response[adminv1.CreateKeyResponse], error) {
	return call(ctx, h.auth, h.mapErr, req, h.svc.create)
}

func (h *keyHandler) GetKey(ctx context.Context, req *connect.Request[adminv1.GetKeyRequest]) (*connect.Response[adminv1.GetKeyResponse], error) {
	return call(ctx, h.auth, h.mapErr, req, h.svc.get)
}

func (h *keyHandler) ListKeys(ctx context.Context, req *connect.Request[adminv1.ListKeysRequest]) (*connect.Response[adminv1.ListKeysResponse], error) {
	return call(ctx, h.auth, h.mapErr, req, h.svc.list)
}

func (h *keyHandler) UpdateKey(ctx context.Context, req *connect.Request[adminv1.UpdateKeyRequest]) (*connect.Response[adminv1.UpdateKeyResponse], error) {
	return call(ctx, h.auth, h.mapErr, req, h.svc.update)
}

func (h *keyHandler) RevokeKey(ctx context.Context, req *connect.Request[adminv1.RevokeKeyRequest]) (*connect.Response[adminv1.RevokeKeyResponse], error) {
	return call(ctx, h.auth, h.mapErr, req, h.svc.revoke)
}

func (h *keyHandler) RotateKey(ctx context.Context, req *connect.Request[adminv1.RotateKeyRequest]) (*connect.Response[adminv1.RotateKeyResponse], error) {
	return call(ctx, h.auth, h.mapErr, req, h.svc.rotate)
}
