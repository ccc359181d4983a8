package admin

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/tollgate/tollgate/pkg/auth"
	"github.com/tollgate/tollgate/pkg/catalog"
	"github.com/tollgate/tollgate/pkg/keys"
)

// errorKind is what a transport needs to know about an error to answer it.
type errorKind int

const (
	kindInternal errorKind = iota
	kindInvalid
	kindNotFound
	kindConflict
	kindState
	kindUnauthenticated
	kindForbidden
	kindCanceled
)

// classify maps domain errors to kinds, in one place for every transport.
func classify(err error) errorKind {
	var (
		ve *keys.ValidationError
		ce *keys.ConflictError
		se *keys.StateError
		ue *catalog.InUseError
	)
	switch {
	case errors.As(err, &ve):
		return kindInvalid
	case errors.Is(err, keys.ErrNotFound), errors.Is(err, catalog.ErrNotFound):
		return kindNotFound
	case errors.As(err, &ce), errors.Is(err, catalog.ErrChanged):
		return kindConflict
	case errors.As(err, &se), errors.As(err, &ue):
		return kindState
	case errors.Is(err, auth.ErrUnauthenticated):
		return kindUnauthenticated
	case errors.Is(err, auth.ErrForbidden):
		return kindForbidden
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return kindCanceled
	}
	return kindInternal
}

// internalMessage is all a caller learns of an unexpected error; the detail
// goes to the log, where an operator can find it.
const internalMessage = "internal error; the server log has the details"

// connectError turns a domain error into a Connect error: validation errors
// carry a google.rpc.BadRequest detail with one violation per field.
func connectError(log *slog.Logger, procedure string, err error) error {
	kind := classify(err)
	code := map[errorKind]connect.Code{
		kindInvalid: connect.CodeInvalidArgument, kindNotFound: connect.CodeNotFound,
		kindConflict: connect.CodeAborted, kindState: connect.CodeFailedPrecondition,
		kindUnauthenticated: connect.CodeUnauthenticated, kindForbidden: connect.CodePermissionDenied,
		kindCanceled: connect.CodeCanceled,
	}[kind]
	if kind == kindInternal {
		log.Error("request failed", "procedure", procedure, "err", err)
		return connect.NewError(connect.CodeInternal, errors.New(internalMessage))
	}
	cerr := connect.NewError(code, err)
	var ve *keys.ValidationError
	if errors.As(err, &ve) {
		br := &errdetails.BadRequest{}
		for _, f := range ve.Fields {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f.Field, Description: f.Message})
		}
		if d, derr := connect.NewErrorDetail(br); derr == nil {
			cerr.AddDetail(d)
		}
	}
	return cerr
}

// httpStatus is the REST status for an error.
func httpStatus(err error) int {
	return map[errorKind]int{
		kindInternal: http.StatusInternalServerError, kindInvalid: http.StatusUnprocessableEntity,
		kindNotFound: http.StatusNotFound, kindConflict: http.StatusConflict, kindState: http.StatusConflict,
		kindUnauthenticated: http.StatusUnauthorized, kindForbidden: http.StatusForbidden,
		kindCanceled: 499,
	}[classify(err)]
}
