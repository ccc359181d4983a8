package admin

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	"github.com/tollgate/tollgate/pkg/auth"
	"github.com/tollgate/tollgate/pkg/limits"
	"github.com/tollgate/tollgate/pkg/money"
	"github.com/tollgate/tollgate/services/metering"
)

func (h *keyHandler) GetBalances(ctx context.Context, req *connect.Request[adminv1.GetBalancesRequest]) (*connect.Response[adminv1.GetBalancesResponse], error) {
	return call(ctx, h.auth, h.mapErr, req, h.svc.balances)
}

// balances combines the key's current limits (from the stream) with the
// states metering folded (from PostgreSQL; admin and metering share the
// database) and shows each limit at now.
func (s *keyService) balances(ctx context.Context, p auth.Principal, req *adminv1.GetBalancesRequest) (*adminv1.GetBalancesResponse, error) {
	acct, err := account(p, req.GetAccount(), false)
	if err != nil {
		return nil, err
	}
	k, _, err := s.load(ctx, acct, req.GetId())
	if err != nil {
		return nil, err
	}
	kb, err := metering.Balance(ctx, s.pool, k.GetId())
	if err != nil {
		return nil, err
	}
	loc := time.UTC
	if tz := k.GetTimeZone(); tz != "" {
		if l, err := time.LoadLocation(tz); err == nil {
			loc = l
		}
	}
	now := s.now()
	set := limits.NewKeySet(k.GetLimits(), loc, k.GetCreatedAt().AsTime())
	out := &adminv1.GetBalancesResponse{KeyId: k.GetId(), Cost: "0"}
	if kb != nil {
		for _, lb := range kb.GetLimits() {
			set.SetState(limits.ID{Metric: lb.GetMetric(), Interval: lb.GetInterval()},
				limits.State{Level: lb.GetLevel(), Used: lb.GetUsed(), At: lb.GetAt().AsTime()})
		}
		out.Requests, out.InputTokens, out.OutputTokens = kb.GetRequests(), kb.GetInputTokens(), kb.GetOutputTokens()
		out.Cost, out.FoldedAt = money.Nanos(kb.GetCost()).String(), kb.GetUpdatedAt()
	}
	for _, ls := range set.Status(now) {
		lb := &adminv1.LimitBalance{Metric: ls.Metric, Interval: ls.Interval, Window: ls.Window,
			Amount: FormatAmount(ls.Metric, ls.Amount), Used: FormatAmount(ls.Metric, ls.Used),
			Available: FormatAmount(ls.Metric, ls.Available)}
		if !ls.ResetAt.IsZero() {
			lb.ResetsAt = timestamppb.New(ls.ResetAt)
		}
		out.Limits = append(out.Limits, lb)
	}
	return out, nil
}
