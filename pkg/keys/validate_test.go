package keys

import (
	"strings"
	"testing"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

func validKey() *eventsv1.Key {
	return &eventsv1.Key{
		Account:     "acme",
		Name:        "ci",
		Permissions: []eventsv1.Permission{eventsv1.Permission_PERMISSION_PREDICT},
		Limits: []*eventsv1.Limit{
			{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: 240e9, Window: eventsv1.Window_WINDOW_ROLLING},
		},
	}
}

func spend(iv eventsv1.Interval) *eventsv1.Limit {
	return &eventsv1.Limit{Metric: eventsv1.Metric_METRIC_SPEND, Interval: iv, Amount: 1e9, Window: eventsv1.Window_WINDOW_ROLLING}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(k *eventsv1.Key)
		field  string // "" means valid
		substr string
	}{
		{name: "valid", edit: func(*eventsv1.Key) {}},
		{name: "empty name", edit: func(k *eventsv1.Key) { k.Name = "  " }, field: "name", substr: "must not be empty"},
		{name: "unknown permission", edit: func(k *eventsv1.Key) { k.Permissions = append(k.Permissions, 9) }, field: "permissions[1]", substr: "unknown permission"},
		{name: "unspecified permission", edit: func(k *eventsv1.Key) { k.Permissions = []eventsv1.Permission{0} }, field: "permissions[0]", substr: "unknown permission"},
		{name: "selected models without names", edit: func(k *eventsv1.Key) {
			k.Models = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED}
		}, field: "models.names", substr: "at least one name"},
		{name: "selected services without names", edit: func(k *eventsv1.Key) {
			k.Services = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED}
		}, field: "services.names", substr: "at least one name"},
		{name: "model names are kept exactly", edit: func(k *eventsv1.Key) {
			k.Models = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED, Names: []string{"gpt-4", "GPT-4"}}
		}},
		{name: "malformed service id", edit: func(k *eventsv1.Key) {
			k.Services = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED, Names: []string{"acme/search", "search"}}
		}, field: "services.names[1]", substr: "<account>/<service>"},
		{name: "service id with three parts", edit: func(k *eventsv1.Key) {
			k.Services = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED, Names: []string{"a/b/c"}}
		}, field: "services.names[0]", substr: "<account>/<service>"},
		{name: "names with mode NONE", edit: func(k *eventsv1.Key) {
			k.Models = &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_NONE, Names: []string{"gpt-4"}}
		}, field: "models.names", substr: "only allowed with mode SELECTED"},
		{name: "negative request size", edit: func(k *eventsv1.Key) { k.MaxRequestBytes = -1 }, field: "max_request_bytes", substr: "positive"},
		{name: "duplicate metric and interval", edit: func(k *eventsv1.Key) {
			k.Limits = append(k.Limits, &eventsv1.Limit{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: 5e9, Window: eventsv1.Window_WINDOW_CALENDAR})
		}, field: "limits[1]", substr: "at most one limit per metric and interval"},
		{name: "same interval, other metric", edit: func(k *eventsv1.Key) {
			k.Limits = append(k.Limits, &eventsv1.Limit{Metric: eventsv1.Metric_METRIC_TOKENS, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: 1000, Window: eventsv1.Window_WINDOW_CALENDAR})
		}},
		{name: "five spend limits", edit: func(k *eventsv1.Key) {
			k.Limits = []*eventsv1.Limit{spend(1), spend(2), spend(3), spend(4), spend(4)}
		}, field: "limits", substr: "at most 4"},
		{name: "four spend limits", edit: func(k *eventsv1.Key) {
			k.Limits = []*eventsv1.Limit{spend(1), spend(2), spend(3), spend(4)}
		}},
		{name: "negative amount", edit: func(k *eventsv1.Key) { k.Limits[0].Amount = -1 }, field: "limits[0].amount", substr: "negative"},
		{name: "available immediately on calendar", edit: func(k *eventsv1.Key) {
			k.Limits[0].Window = eventsv1.Window_WINDOW_CALENDAR
			k.Limits[0].AvailableImmediately = true
		}, field: "limits[0].available_immediately", substr: "ROLLING"},
		{name: "calendar minute", edit: func(k *eventsv1.Key) {
			k.Limits[0].Window = eventsv1.Window_WINDOW_CALENDAR
			k.Limits[0].Interval = eventsv1.Interval_INTERVAL_MINUTE
		}, field: "limits[0].window", substr: "DAY or MONTH"},
		{name: "unknown metric", edit: func(k *eventsv1.Key) { k.Limits[0].Metric = 0 }, field: "limits[0].metric", substr: "unknown metric"},
		{name: "threshold zero", edit: func(k *eventsv1.Key) { k.AlertThresholdsPpm = []uint32{0} }, field: "alert_thresholds[0]", substr: "outside (0, 1]"},
		{name: "threshold above one", edit: func(k *eventsv1.Key) { k.AlertThresholdsPpm = []uint32{500000, 1500000} }, field: "alert_thresholds[1]", substr: "1.5 is outside (0, 1]"},
		{name: "threshold one", edit: func(k *eventsv1.Key) { k.AlertThresholdsPpm = []uint32{1000000} }},
		{name: "bad e-mail", edit: func(k *eventsv1.Key) { k.NotifyEmails = []string{"ops@example.com", "not-an-address"} }, field: "notify_emails[1]", substr: "not an e-mail address"},
		{name: "e-mail with display name", edit: func(k *eventsv1.Key) { k.NotifyEmails = []string{"Ops <ops@example.com>"} }, field: "notify_emails[0]", substr: "not an e-mail address"},
		{name: "bad time zone", edit: func(k *eventsv1.Key) { k.TimeZone = "Mars/Olympus" }, field: "time_zone", substr: "IANA"},
		{name: "good time zone", edit: func(k *eventsv1.Key) { k.TimeZone = "Europe/Berlin" }},
		{name: "bad account", edit: func(k *eventsv1.Key) { k.Account = "a.b" }, field: "account", substr: "not a valid account"},
		{name: "bad masking key", edit: func(k *eventsv1.Key) { k.MaskingKey = "no spaces" }, field: "masking_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := validKey()
			tt.edit(k)
			err := Validate(k)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			ve, ok := err.(*ValidationError)
			if !ok {
				t.Fatalf("want *ValidationError, got %v", err)
			}
			for _, f := range ve.Fields {
				if f.Field == tt.field && strings.Contains(f.Message, tt.substr) {
					return
				}
			}
			t.Fatalf("want an error on %s containing %q, got %v", tt.field, tt.substr, err)
		})
	}
}

func TestValidateReportsEveryField(t *testing.T) {
	k := validKey()
	k.Name = ""
	k.MaxRequestBytes = -5
	k.NotifyEmails = []string{"x"}
	ve := Validate(k).(*ValidationError)
	if len(ve.Fields) != 3 {
		t.Fatalf("want 3 field errors, got %v", ve.Fields)
	}
}
