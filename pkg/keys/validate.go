package keys

import (
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

// Bounds that keep one key's state small enough to carry in every event.
const (
	MaxNameLen        = 200
	MaxTextLen        = 2000
	MaxFilterNames    = 1000
	MaxNotifyEmails   = 20
	MaxSpendLimits    = 4
	MaxAlertThreshold = 1_000_000 // parts per million: 100%
)

var (
	maskingKeyPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	serviceSegment    = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
)

// Validate checks the state a command would leave a key in and returns a
// *ValidationError naming every field that is wrong, or nil.
func Validate(k *eventsv1.Key) error {
	var v ValidationError
	if err := ValidateAccount(k.GetAccount()); err != nil {
		v.Add("account", "%s", err)
	}
	switch name := strings.TrimSpace(k.GetName()); {
	case name == "":
		v.Add("name", "must not be empty")
	case utf8.RuneCountInString(name) > MaxNameLen:
		v.Add("name", "must be at most %d characters", MaxNameLen)
	}
	if utf8.RuneCountInString(k.GetDescription()) > MaxTextLen {
		v.Add("description", "must be at most %d characters", MaxTextLen)
	}
	if utf8.RuneCountInString(k.GetPurpose()) > MaxTextLen {
		v.Add("purpose", "must be at most %d characters", MaxTextLen)
	}
	validatePermissions(&v, k.GetPermissions())
	validateFilter(&v, "models", k.GetModels(), nil)
	validateFilter(&v, "services", k.GetServices(), validateServiceID)
	if k.GetMaxRequestBytes() < 0 {
		v.Add("max_request_bytes", "must be a positive number of bytes")
	}
	if len(k.GetNotifyEmails()) > MaxNotifyEmails {
		v.Add("notify_emails", "at most %d addresses", MaxNotifyEmails)
	}
	for i, e := range k.GetNotifyEmails() {
		if err := ValidateEmail(e); err != nil {
			v.Add(fmt.Sprintf("notify_emails[%d]", i), "%s", err)
		}
	}
	if mk := k.GetMaskingKey(); mk != "" && !maskingKeyPattern.MatchString(mk) {
		v.Add("masking_key", "%q must be 1 to 64 letters, digits, '_', '.' or '-'", mk)
	}
	for i, t := range k.GetAlertThresholdsPpm() {
		if t == 0 || t > MaxAlertThreshold {
			v.Add(fmt.Sprintf("alert_thresholds[%d]", i), "%s is outside (0, 1]", FormatThreshold(t))
		}
	}
	if tz := k.GetTimeZone(); tz != "" {
		if _, err := time.LoadLocation(tz); err != nil {
			v.Add("time_zone", "%q is not an IANA time zone (e.g. Europe/Berlin)", tz)
		}
	}
	validateLimits(&v, k.GetLimits())
	return v.Err()
}

func validatePermissions(v *ValidationError, perms []eventsv1.Permission) {
	for i, p := range perms {
		if _, known := eventsv1.Permission_name[int32(p)]; !known || p == eventsv1.Permission_PERMISSION_UNSPECIFIED {
			v.Add(fmt.Sprintf("permissions[%d]", i), "unknown permission %d; use READ, WRITE or PREDICT", p)
		}
	}
}

func validateFilter(v *ValidationError, field string, f *eventsv1.Filter, check func(string) error) {
	if f == nil {
		return
	}
	switch f.GetMode() {
	case eventsv1.FilterMode_FILTER_MODE_UNSPECIFIED, eventsv1.FilterMode_FILTER_MODE_ALL, eventsv1.FilterMode_FILTER_MODE_NONE:
		if len(f.GetNames()) > 0 {
			v.Add(field+".names", "names are only allowed with mode SELECTED")
		}
	case eventsv1.FilterMode_FILTER_MODE_SELECTED:
		if len(f.GetNames()) == 0 {
			v.Add(field+".names", "mode SELECTED needs at least one name")
		}
		if len(f.GetNames()) > MaxFilterNames {
			v.Add(field+".names", "at most %d names", MaxFilterNames)
		}
		seen := make(map[string]bool, len(f.GetNames()))
		for i, n := range f.GetNames() {
			at := fmt.Sprintf("%s.names[%d]", field, i)
			switch {
			case n == "" || strings.TrimSpace(n) != n:
				v.Add(at, "%q must be non-empty, without leading or trailing spaces", n)
			case seen[n]:
				v.Add(at, "%q is listed twice", n)
			case check != nil:
				if err := check(n); err != nil {
					v.Add(at, "%s", err)
				}
			}
			seen[n] = true
		}
	default:
		v.Add(field+".mode", "unknown mode %d; use ALL, SELECTED or NONE", f.GetMode())
	}
}

// validateServiceID checks "<account>/<service>".
func validateServiceID(id string) error {
	acct, svc, ok := strings.Cut(id, "/")
	if !ok || !serviceSegment.MatchString(acct) || !serviceSegment.MatchString(svc) {
		return fmt.Errorf("%q is not a service id; use <account>/<service> in lower-case letters, digits, '_' or '-'", id)
	}
	return nil
}

// ValidateEmail accepts a bare address such as "ops@example.com".
func ValidateEmail(e string) error {
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || a.Name != "" {
		return fmt.Errorf("%q is not an e-mail address (write it as name@example.com)", e)
	}
	at := strings.LastIndexByte(e, '@')
	if at < 1 || !strings.Contains(e[at+1:], ".") {
		return fmt.Errorf("%q is not an e-mail address (write it as name@example.com)", e)
	}
	return nil
}

func validateLimits(v *ValidationError, limits []*eventsv1.Limit) {
	spend := 0
	first := map[[2]int32]int{}
	for i, l := range limits {
		at := fmt.Sprintf("limits[%d]", i)
		metric, okM := eventsv1.Metric_name[int32(l.GetMetric())]
		interval, okI := eventsv1.Interval_name[int32(l.GetInterval())]
		if !okM || l.GetMetric() == eventsv1.Metric_METRIC_UNSPECIFIED {
			v.Add(at+".metric", "unknown metric %d; use SPEND, TOKENS or REQUESTS", l.GetMetric())
			continue
		}
		if !okI || l.GetInterval() == eventsv1.Interval_INTERVAL_UNSPECIFIED {
			v.Add(at+".interval", "unknown interval %d; use MINUTE, HOUR, DAY or MONTH", l.GetInterval())
			continue
		}
		if l.GetMetric() == eventsv1.Metric_METRIC_SPEND {
			spend++
		}
		if l.GetAmount() < 0 {
			v.Add(at+".amount", "must not be negative")
		}
		switch l.GetWindow() {
		case eventsv1.Window_WINDOW_ROLLING:
		case eventsv1.Window_WINDOW_CALENDAR:
			if l.GetAvailableImmediately() {
				v.Add(at+".available_immediately", "applies only to ROLLING windows")
			}
			if l.GetInterval() != eventsv1.Interval_INTERVAL_DAY && l.GetInterval() != eventsv1.Interval_INTERVAL_MONTH {
				v.Add(at+".window", "CALENDAR windows are DAY or MONTH")
			}
		default:
			v.Add(at+".window", "unknown window %d; use ROLLING or CALENDAR", l.GetWindow())
		}
		id := [2]int32{int32(l.GetMetric()), int32(l.GetInterval())}
		if j, dup := first[id]; dup {
			v.Add(at, "limits[%d] already sets a %s limit per %s; at most one limit per metric and interval",
				j, strings.TrimPrefix(metric, "METRIC_"), strings.TrimPrefix(interval, "INTERVAL_"))
		} else {
			first[id] = i
		}
	}
	if spend > MaxSpendLimits {
		v.Add("limits", "%d spend limits; at most %d (one per interval)", spend, MaxSpendLimits)
	}
}

// FormatThreshold shows parts per million as a fraction ("0.8").
func FormatThreshold(ppm uint32) string {
	s := fmt.Sprintf("%d.%06d", ppm/1_000_000, ppm%1_000_000)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
