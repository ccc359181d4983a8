package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	"github.com/tollgate/tollgate/gen/tollgate/admin/v1/adminv1connect"
	"github.com/tollgate/tollgate/pkg/auth"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/money"
	"github.com/tollgate/tollgate/pkg/usagestore"
)

// usageReader answers usage queries (usagestore.Reader; a fake in tests).
type usageReader interface {
	Usage(ctx context.Context, q usagestore.Query) ([]usagestore.Row, error)
}

// usageHandler is UsageService. Its exported methods only authenticate and
// map errors; the unexported ones do the work.
type usageHandler struct {
	reader func(context.Context) (usageReader, error)
	auth   *auth.Authenticator
	log    *slog.Logger
	now    func() time.Time
}

var _ adminv1connect.UsageServiceHandler = (*usageHandler)(nil)

// newUsageHandler serves reports from r.
func newUsageHandler(r usageReader, authn *auth.Authenticator, log *slog.Logger) *usageHandler {
	return &usageHandler{reader: func(context.Context) (usageReader, error) { return r, nil }, auth: authn, log: log, now: time.Now}
}

// errUsageUnavailable means the usage analytics cannot be reached.
var errUsageUnavailable = errors.New("usage analytics are unavailable")

// usageService is UsageService on a ClickHouse that it connects to on first
// use (and again after a failure): the key API must not depend on the
// analytics being up.
type usageService struct {
	*usageHandler
	dsn  string
	mu   sync.Mutex
	conn driver.Conn
}

// newUsageService returns UsageService on the ClickHouse named by dsn
// (clickhouse://host:9000/database). With an empty dsn every call answers
// unavailable, saying that analytics are not configured.
func newUsageService(dsn string, authn *auth.Authenticator, log *slog.Logger) *usageService {
	s := &usageService{dsn: dsn}
	s.usageHandler = &usageHandler{reader: s.connect, auth: authn, log: log, now: time.Now}
	return s
}

func (s *usageService) connect(ctx context.Context) (usageReader, error) {
	if s.dsn == "" {
		return nil, fmt.Errorf("%w: no ClickHouse is configured (clickhouse-dsn)", errUsageUnavailable)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		conn, err := usagestore.Open(ctx, s.dsn)
		if err == nil {
			// The sink migrates too; doing it here as well means reports
			// work (empty) before the first sink has started.
			if err = usagestore.Migrate(ctx, conn); err != nil {
				conn.Close()
			}
		}
		if err != nil {
			s.log.Error("usage analytics: clickhouse", "err", err)
			return nil, fmt.Errorf("%w: ClickHouse is unreachable", errUsageUnavailable)
		}
		s.conn = conn
	}
	return usagestore.NewReader(s.conn, 30*time.Second), nil
}

// Close closes the ClickHouse connection, if any.
func (s *usageService) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	return s.conn.Close()
}

func (h *usageHandler) mapErr(procedure string, err error) error {
	return usageConnectError(h.log, procedure, err)
}

func (h *usageHandler) QueryUsage(ctx context.Context, req *connect.Request[adminv1.QueryUsageRequest]) (*connect.Response[adminv1.QueryUsageResponse], error) {
	return call(ctx, h.auth, h.mapErr, req, h.queryUsage)
}

func (h *usageHandler) TopKeys(ctx context.Context, req *connect.Request[adminv1.TopKeysRequest]) (*connect.Response[adminv1.TopKeysResponse], error) {
	return call(ctx, h.auth, h.mapErr, req, h.topKeys)
}

func (h *usageHandler) queryUsage(ctx context.Context, p auth.Principal, r *adminv1.QueryUsageRequest) (*adminv1.QueryUsageResponse, error) {
	f, err := h.filter(p, r.GetFilter())
	if err != nil {
		return nil, err
	}
	q := usagestore.Query{Filter: f, Latency: r.GetIncludeLatency()}
	for _, d := range r.GetGroupBy() {
		q.GroupBy = append(q.GroupBy, usagestore.Dimension(d)) // the enum's numbers are the store's
	}
	rows, err := h.run(ctx, q)
	if err != nil {
		return nil, err
	}
	return &adminv1.QueryUsageResponse{Rows: rows}, nil
}

// defaultTopKeys is how many keys TopKeys returns when not told.
const defaultTopKeys = 10

func (h *usageHandler) topKeys(ctx context.Context, p auth.Principal, r *adminv1.TopKeysRequest) (*adminv1.TopKeysResponse, error) {
	f, err := h.filter(p, r.GetFilter())
	if err != nil {
		return nil, err
	}
	limit := int(r.GetLimit())
	if limit == 0 {
		limit = defaultTopKeys
	}
	if limit < 1 || limit > 1000 {
		return nil, &usagestore.InvalidQueryError{Fields: []usagestore.FieldError{{Field: "limit", Message: "must be 1 to 1000"}}}
	}
	rows, err := h.run(ctx, usagestore.Query{Filter: f, GroupBy: []usagestore.Dimension{usagestore.ByKey},
		TopByCost: true, Limit: limit, Latency: r.GetIncludeLatency()})
	if err != nil {
		return nil, err
	}
	return &adminv1.TopKeysResponse{Rows: rows}, nil
}

// filter resolves the caller's filter: its account (the caller's own unless
// it names one it may read) and the time range (until now unless given).
func (h *usageHandler) filter(p auth.Principal, in *adminv1.UsageFilter) (usagestore.Filter, error) {
	f := usagestore.Filter{Account: in.GetAccount(), Keys: in.GetKeyIds(), Models: in.GetModels(), Services: in.GetServices(), To: h.now()}
	if f.Account == "" {
		f.Account = p.Account
	} else if err := keys.ValidateAccount(f.Account); err != nil {
		return f, &usagestore.InvalidQueryError{Fields: []usagestore.FieldError{{Field: "filter.account", Message: err.Error()}}}
	}
	if !p.MayRead(f.Account) {
		return f, fmt.Errorf("%w: account %q is not yours", auth.ErrForbidden, f.Account)
	}
	if in.GetStartTime() != nil {
		f.From = in.GetStartTime().AsTime()
	}
	if in.GetEndTime() != nil {
		f.To = in.GetEndTime().AsTime()
	}
	return f, nil
}

func (h *usageHandler) run(ctx context.Context, q usagestore.Query) ([]*adminv1.UsageRow, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	r, err := h.reader(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := r.Usage(ctx, q)
	if err != nil {
		return nil, err
	}
	out := make([]*adminv1.UsageRow, len(rows))
	for i, row := range rows {
		out[i] = apiUsageRow(row)
	}
	return out, nil
}

func apiUsageRow(r usagestore.Row) *adminv1.UsageRow {
	out := &adminv1.UsageRow{KeyId: r.KeyID, Model: r.Model, Service: r.Service,
		Requests: r.Requests, InputTokens: r.InputTokens, OutputTokens: r.OutputTokens, Cost: money.Nanos(r.Cost).String()}
	if !r.Bucket.IsZero() {
		out.BucketStart = timestamppb.New(r.Bucket)
	}
	if l := r.Latency; l != nil {
		// Whole microseconds: the percentiles interpolate, and digits
		// beyond the measurement's precision are noise.
		ms := func(us float64) float64 { return math.Round(us) / 1000 }
		out.Latency = &adminv1.LatencyPercentiles{P50Ms: ms(l.P50), P95Ms: ms(l.P95), P99Ms: ms(l.P99)}
	}
	return out
}

// usageConnectError maps the usage store's errors, and leaves the rest to
// connectError: a bad query is invalid_argument naming each field; analytics
// that cannot be reached are unavailable.
func usageConnectError(log *slog.Logger, procedure string, err error) error {
	var qe *usagestore.InvalidQueryError
	switch {
	case errors.As(err, &qe):
		cerr := connect.NewError(connect.CodeInvalidArgument, err)
		br := &errdetails.BadRequest{}
		for _, f := range qe.Fields {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f.Field, Description: f.Message})
		}
		if d, derr := connect.NewErrorDetail(br); derr == nil {
			cerr.AddDetail(d)
		}
		return cerr
	case errors.Is(err, usagestore.ErrTooManyRows):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, errUsageUnavailable):
		return connect.NewError(connect.CodeUnavailable, err)
	case unreachable(err):
		log.Error("usage analytics: clickhouse", "procedure", procedure, "err", err)
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%w: ClickHouse did not answer", errUsageUnavailable))
	}
	return connectError(log, procedure, err)
}

// unreachable reports whether err is the network failing rather than a
// query: the caller may retry later.
func unreachable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false // the caller's deadline, which context.DeadlineExceeded also is a net.Error of
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
