package admin

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/money"
)

// settingsPaths are the field-mask paths of adminv1.KeySettings.
var settingsPaths = []string{
	"name", "description", "purpose", "permissions", "models", "services", "max_request_bytes",
	"ttl", "expires_at", "notify_emails", "masking_key", "alert_thresholds", "limits", "time_zone",
}

// applySettings copies the fields named by paths from s onto k, parsing what
// the API carries as text (money, TTLs, thresholds) and recording every
// problem in v under the API's field names.
func applySettings(k *eventsv1.Key, s *adminv1.KeySettings, paths []string, now time.Time, v *keys.ValidationError) {
	for _, p := range paths {
		switch p {
		case "name":
			k.Name = strings.TrimSpace(s.GetName())
		case "description":
			k.Description = s.GetDescription()
		case "purpose":
			k.Purpose = s.GetPurpose()
		case "permissions":
			k.Permissions = slices.Clone(s.GetPermissions())
		case "models":
			k.Models = proto.CloneOf(s.GetModels())
		case "services":
			k.Services = proto.CloneOf(s.GetServices())
		case "max_request_bytes":
			k.MaxRequestBytes = 0
			if s.MaxRequestBytes != nil {
				if *s.MaxRequestBytes <= 0 {
					v.Add("max_request_bytes", "must be a positive number of bytes (leave it out for the deployment default)")
				}
				k.MaxRequestBytes = *s.MaxRequestBytes
			}
		case "ttl":
			if s.GetTtl() == "" {
				if !slices.Contains(paths, "expires_at") {
					k.ExpiresAt = nil
				}
				continue
			}
			ttl, err := keys.ParseTTL(s.GetTtl())
			if err != nil {
				v.Add("ttl", "%s", err)
				continue
			}
			k.ExpiresAt = timestamppb.New(ttl.ExpiresAt(now))
		case "expires_at":
			// A TTL wins over an expiry time when both are given.
			if s.GetTtl() == "" || !slices.Contains(paths, "ttl") {
				k.ExpiresAt = proto.CloneOf(s.GetExpiresAt())
			}
		case "notify_emails":
			k.NotifyEmails = slices.Clone(s.GetNotifyEmails())
		case "masking_key":
			k.MaskingKey = s.GetMaskingKey()
		case "alert_thresholds":
			k.AlertThresholdsPpm = nil
			for i, t := range s.GetAlertThresholds() {
				if math.IsNaN(t) || t <= 0 || t > 1 {
					v.Add(fmt.Sprintf("alert_thresholds[%d]", i), "%v is outside (0, 1]; write 0.8 for 80%%", t)
					continue
				}
				k.AlertThresholdsPpm = append(k.AlertThresholdsPpm, uint32(math.Round(t*1e6)))
			}
		case "limits":
			k.Limits = nil
			for i, l := range s.GetLimits() {
				k.Limits = append(k.Limits, parseLimit(fmt.Sprintf("limits[%d]", i), l, v))
			}
		case "time_zone":
			k.TimeZone = s.GetTimeZone()
		default:
			v.Add("update_mask", "unknown field %q; use %s", p, strings.Join(settingsPaths, ", "))
		}
	}
}

func parseLimit(at string, l *adminv1.Limit, v *keys.ValidationError) *eventsv1.Limit {
	out := &eventsv1.Limit{Metric: l.GetMetric(), Interval: l.GetInterval(), Window: l.GetWindow(), AvailableImmediately: l.GetAvailableImmediately()}
	if out.Window == eventsv1.Window_WINDOW_UNSPECIFIED {
		out.Window = eventsv1.Window_WINDOW_ROLLING
	}
	amount := strings.TrimSpace(l.GetAmount())
	switch {
	case amount == "":
		v.Add(at+".amount", "is required")
	case l.GetMetric() == eventsv1.Metric_METRIC_SPEND:
		n, err := money.Parse(amount)
		if err != nil {
			v.Add(at+".amount", "%s (write dollars, e.g. \"10.50\")", err)
		}
		out.Amount = int64(n)
	default:
		n, err := strconv.ParseInt(amount, 10, 64)
		if err != nil || n < 0 {
			v.Add(at+".amount", "%q must be a whole number of %s, 0 or more", amount, strings.ToLower(strings.TrimPrefix(l.GetMetric().String(), "METRIC_")))
		}
		out.Amount = n
	}
	return out
}

// apiKey shows a key's state as the API does: money as decimal dollars, the
// status derived from the clock, and never a secret hash.
func apiKey(k *eventsv1.Key, revision uint64, now time.Time) *adminv1.Key {
	out := &adminv1.Key{
		Id:              k.GetId(),
		Account:         k.GetAccount(),
		Name:            k.GetName(),
		Description:     k.GetDescription(),
		Purpose:         k.GetPurpose(),
		Permissions:     k.GetPermissions(),
		Models:          k.GetModels(),
		Services:        k.GetServices(),
		MaxRequestBytes: k.GetMaxRequestBytes(),
		ExpiresAt:       k.GetExpiresAt(),
		NotifyEmails:    k.GetNotifyEmails(),
		MaskingKey:      k.GetMaskingKey(),
		TimeZone:        k.GetTimeZone(),
		Status:          string(keys.StatusAt(k, now)),
		Hint:            k.GetSecret().GetHint(),
		Prefix:          k.GetPrefix(),
		CreatedAt:       k.GetCreatedAt(),
		UpdatedAt:       k.GetUpdatedAt(),
		RevokedAt:       k.GetRevokedAt(),
		Revision:        revision,
	}
	if out.Models == nil {
		out.Models = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_ALL}
	}
	if out.Services == nil {
		out.Services = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_ALL}
	}
	for _, t := range k.GetAlertThresholdsPpm() {
		out.AlertThresholds = append(out.AlertThresholds, float64(t)/1e6)
	}
	for _, l := range k.GetLimits() {
		out.Limits = append(out.Limits, &adminv1.Limit{
			Metric: l.GetMetric(), Interval: l.GetInterval(), Amount: FormatAmount(l.GetMetric(), l.GetAmount()),
			Window: l.GetWindow(), AvailableImmediately: l.GetAvailableImmediately(),
		})
	}
	return out
}

// FormatAmount writes a limit amount: dollars for SPEND, a count otherwise.
func FormatAmount(m eventsv1.Metric, amount int64) string {
	if m == eventsv1.Metric_METRIC_SPEND {
		return money.Nanos(amount).String()
	}
	return strconv.FormatInt(amount, 10)
}
