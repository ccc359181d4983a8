package main

import (
	"context"
	"io"
	"slices"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

// keyFlags are the settings flags shared by `keys create` and `keys update`.
type keyFlags struct {
	name, description, purpose, prefix, ttl, maskingKey, timeZone string
	permissions, models, services, notify, thresholds             []string
	limits, removeLimits                                          []string
	rpm, maxRequestBytes                                          int64
	availableImmediately                                          bool
}

func (f *keyFlags) register(fs *pflag.FlagSet, create bool) {
	fs.StringVar(&f.name, "name", "", "name of the key")
	fs.StringVar(&f.description, "description", "", "description")
	fs.StringVar(&f.purpose, "purpose", "", "what the key is for")
	if create {
		fs.StringVar(&f.prefix, "prefix", "", "secret prefix (default: the deployment's, e.g. en_)")
	}
	fs.StringSliceVar(&f.permissions, "permissions", nil, "read, write, predict (comma-separated; default predict)")
	fs.StringSliceVar(&f.models, "models", nil, "models the key may use: names, comma-separated, or none or all (default all)")
	fs.StringSliceVar(&f.services, "services", nil, "services the key may use: account/service, comma-separated, or none or all (default all)")
	fs.StringArrayVar(&f.limits, "limit", nil, "a limit METRIC:INTERVAL:AMOUNT[:calendar], repeatable; METRIC spend|tokens|requests, INTERVAL minute|hour|day|month, spend AMOUNT in dollars")
	if !create {
		fs.StringArrayVar(&f.removeLimits, "remove-limit", nil, "remove the limit METRIC:INTERVAL, repeatable")
	}
	fs.Int64Var(&f.rpm, "rpm", 0, "requests per minute (same as --limit requests:minute:N)")
	fs.BoolVar(&f.availableImmediately, "available-immediately", false, "rolling limits this command raises or adds to an existing key are spendable at once (a new key's limits always start full)")
	fs.Int64Var(&f.maxRequestBytes, "max-request-bytes", 0, "largest request body accepted, in bytes")
	fs.StringVar(&f.ttl, "ttl", "", "time to live: 90m, 12h, 30d, 3mo (update: empty clears the expiry)")
	fs.StringSliceVar(&f.notify, "notify", nil, "e-mail addresses warned before expiry, comma-separated")
	fs.StringSliceVar(&f.thresholds, "alert-threshold", nil, "alert thresholds as fractions of a limit, e.g. 0.5,0.8")
	fs.StringVar(&f.maskingKey, "masking-key", "", "masking rule set for personal data")
	fs.StringVar(&f.timeZone, "time-zone", "", "IANA time zone of calendar limits (default UTC)")
}

// settings builds KeySettings from the flags that were given, and the update
// mask naming them. current are the key's limits, amended by --limit (update).
func (f *keyFlags) settings(fs *pflag.FlagSet, current []*adminv1.Limit) (*adminv1.KeySettings, []string, error) {
	s := &adminv1.KeySettings{Name: f.name, Description: f.description, Purpose: f.purpose, Ttl: f.ttl,
		MaskingKey: f.maskingKey, TimeZone: f.timeZone, NotifyEmails: f.notify}
	var mask []string
	changed := func(flag, path string) bool {
		if fs.Changed(flag) && !slices.Contains(mask, path) {
			mask = append(mask, path)
		}
		return fs.Changed(flag)
	}
	for flag, path := range map[string]string{"name": "name", "description": "description", "purpose": "purpose",
		"ttl": "ttl", "masking-key": "masking_key", "time-zone": "time_zone", "notify": "notify_emails"} {
		changed(flag, path)
	}
	if changed("permissions", "permissions") {
		for _, p := range f.permissions {
			v, ok := eventsv1.Permission_value["PERMISSION_"+strings.ToUpper(strings.TrimSpace(p))]
			if !ok || v == 0 {
				return nil, nil, usageErrorf("--permissions: unknown permission %q; use read, write or predict", p)
			}
			s.Permissions = append(s.Permissions, eventsv1.Permission(v))
		}
	}
	if changed("models", "models") {
		s.Models = parseFilter(f.models)
	}
	if changed("services", "services") {
		s.Services = parseFilter(f.services)
	}
	if changed("max-request-bytes", "max_request_bytes") {
		s.MaxRequestBytes = &f.maxRequestBytes
	}
	if changed("alert-threshold", "alert_thresholds") {
		for _, t := range f.thresholds {
			v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
			if err != nil {
				return nil, nil, usageErrorf("--alert-threshold: %q is not a number; write e.g. 0.8 for 80%%", t)
			}
			s.AlertThresholds = append(s.AlertThresholds, v)
		}
	}
	limits := slices.Clone(current)
	limitsChanged := false
	set := func(l *adminv1.Limit) {
		limits = slices.DeleteFunc(limits, func(o *adminv1.Limit) bool { return o.Metric == l.Metric && o.Interval == l.Interval })
		limits = append(limits, l)
		limitsChanged = true
	}
	given := map[[2]int32]string{}
	for _, spec := range f.limits {
		l, err := parseLimitFlag(spec)
		if err != nil {
			return nil, nil, err
		}
		id := [2]int32{int32(l.Metric), int32(l.Interval)}
		if prev, dup := given[id]; dup {
			return nil, nil, usageErrorf("--limit %q and --limit %q set the same metric and interval; give one", prev, spec)
		}
		given[id] = spec
		set(l)
	}
	if fs.Changed("rpm") {
		set(&adminv1.Limit{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_MINUTE,
			Amount: strconv.FormatInt(f.rpm, 10), Window: eventsv1.Window_WINDOW_ROLLING})
	}
	for _, spec := range f.removeLimits {
		m, iv, err := parseMetricInterval(spec, spec)
		if err != nil {
			return nil, nil, err
		}
		limits = slices.DeleteFunc(limits, func(o *adminv1.Limit) bool { return o.Metric == m && o.Interval == iv })
		limitsChanged = true
	}
	if f.availableImmediately {
		for _, l := range limits {
			if l.Window != eventsv1.Window_WINDOW_CALENDAR {
				l.AvailableImmediately = true
			}
		}
		limitsChanged = true
	}
	if limitsChanged {
		s.Limits, mask = limits, append(mask, "limits")
	}
	return s, mask, nil
}

func parseFilter(names []string) *eventsv1.Filter {
	if len(names) == 1 {
		switch strings.ToLower(names[0]) {
		case "none":
			return &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_NONE}
		case "all":
			return &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_ALL}
		}
	}
	return &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED, Names: names}
}

// parseLimitFlag reads METRIC:INTERVAL:AMOUNT[:calendar|:rolling].
func parseLimitFlag(spec string) (*adminv1.Limit, error) {
	parts := strings.Split(spec, ":")
	if len(parts) < 3 || len(parts) > 4 {
		return nil, usageErrorf("--limit %q: write METRIC:INTERVAL:AMOUNT[:calendar], e.g. spend:day:10.50 or tokens:minute:20000", spec)
	}
	m, iv, err := parseMetricInterval(parts[0]+":"+parts[1], spec)
	if err != nil {
		return nil, err
	}
	l := &adminv1.Limit{Metric: m, Interval: iv, Amount: parts[2], Window: eventsv1.Window_WINDOW_ROLLING}
	if len(parts) == 4 {
		switch strings.ToLower(parts[3]) {
		case "calendar":
			l.Window = eventsv1.Window_WINDOW_CALENDAR
		case "rolling":
		default:
			return nil, usageErrorf("--limit %q: the window is calendar or rolling, not %q", spec, parts[3])
		}
	}
	return l, nil
}

func parseMetricInterval(mi, spec string) (eventsv1.Metric, eventsv1.Interval, error) {
	metric, interval, _ := strings.Cut(mi, ":")
	m, okM := eventsv1.Metric_value["METRIC_"+strings.ToUpper(metric)]
	iv, okI := eventsv1.Interval_value["INTERVAL_"+strings.ToUpper(interval)]
	if !okM || m == 0 {
		return 0, 0, usageErrorf("%q: unknown metric %q; use spend, tokens or requests", spec, metric)
	}
	if !okI || iv == 0 {
		return 0, 0, usageErrorf("%q: unknown interval %q; use minute, hour, day or month", spec, interval)
	}
	return eventsv1.Metric(m), eventsv1.Interval(iv), nil
}

func keysCreate(ctx context.Context, cl *client, args []string, out io.Writer) error {
	fs := cl.flagSet("keys create", "--name NAME [flags]")
	var f keyFlags
	f.register(fs, true)
	if err := cl.parse(fs, args, 0); err != nil {
		return err
	}
	if f.name == "" {
		return usageErrorf("keys create: --name is required")
	}
	s, _, err := f.settings(fs, nil)
	if err != nil {
		return err
	}
	res, err := cl.keys.CreateKey(ctx, connect.NewRequest(&adminv1.CreateKeyRequest{Account: cl.account, Key: s, Prefix: f.prefix}))
	if err != nil {
		return err
	}
	return cl.printSecret(out, res.Msg.GetKey(), res.Msg.GetSecret())
}

func keysList(ctx context.Context, cl *client, args []string, out io.Writer) error {
	fs := cl.flagSet("keys list", "[flags]")
	status := fs.String("status", "", "active, revoked or expired")
	name := fs.String("name", "", "keys whose name contains this")
	perm := fs.String("permission", "", "keys with this permission: read, write or predict")
	pageSize := fs.Int32("page-size", 100, "keys per page")
	pageToken := fs.String("page-token", "", "page token from a previous list")
	if err := cl.parse(fs, args, 0); err != nil {
		return err
	}
	req := &adminv1.ListKeysRequest{Account: cl.account, Status: *status, Name: *name, PageSize: *pageSize, PageToken: *pageToken}
	if *perm != "" {
		v, ok := eventsv1.Permission_value["PERMISSION_"+strings.ToUpper(*perm)]
		if !ok || v == 0 {
			return usageErrorf("--permission: unknown permission %q; use read, write or predict", *perm)
		}
		req.Permission = eventsv1.Permission(v)
	}
	res, err := cl.keys.ListKeys(ctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	return cl.printList(out, res.Msg)
}

func keysGet(ctx context.Context, cl *client, args []string, out io.Writer) error {
	fs := cl.flagSet("keys get", "ID")
	if err := cl.parse(fs, args, 1); err != nil {
		return err
	}
	res, err := cl.keys.GetKey(ctx, connect.NewRequest(&adminv1.GetKeyRequest{Account: cl.account, Id: fs.Arg(0)}))
	if err != nil {
		return err
	}
	return cl.printKey(out, res.Msg.GetKey())
}

func keysUpdate(ctx context.Context, cl *client, args []string, out io.Writer) error {
	fs := cl.flagSet("keys update", "ID [flags]")
	var f keyFlags
	f.register(fs, false)
	if err := cl.parse(fs, args, 1); err != nil {
		return err
	}
	// Limits flags amend the current limits: read them, and update only that revision.
	cur, err := cl.keys.GetKey(ctx, connect.NewRequest(&adminv1.GetKeyRequest{Account: cl.account, Id: fs.Arg(0)}))
	if err != nil {
		return err
	}
	s, mask, err := f.settings(fs, cur.Msg.GetKey().GetLimits())
	if err != nil {
		return err
	}
	if len(mask) == 0 {
		return usageErrorf("keys update: nothing to change; give one or more settings flags (see --help)")
	}
	res, err := cl.keys.UpdateKey(ctx, connect.NewRequest(&adminv1.UpdateKeyRequest{
		Account: cl.account, Id: fs.Arg(0), Key: s, UpdateMask: &fieldmaskpb.FieldMask{Paths: mask},
		ExpectedRevision: cur.Msg.GetKey().GetRevision(),
	}))
	if err != nil {
		return err
	}
	return cl.printKey(out, res.Msg.GetKey())
}

func keysRevoke(ctx context.Context, cl *client, args []string, out io.Writer) error {
	fs := cl.flagSet("keys revoke", "ID")
	if err := cl.parse(fs, args, 1); err != nil {
		return err
	}
	res, err := cl.keys.RevokeKey(ctx, connect.NewRequest(&adminv1.RevokeKeyRequest{Account: cl.account, Id: fs.Arg(0)}))
	if err != nil {
		return err
	}
	return cl.printKey(out, res.Msg.GetKey())
}

func keysRotate(ctx context.Context, cl *client, args []string, out io.Writer) error {
	fs := cl.flagSet("keys rotate", "ID [--grace 10m]")
	grace := fs.String("grace", "", "how long the old secret keeps working, e.g. 10m or 24h (default: it stops at once)")
	if err := cl.parse(fs, args, 1); err != nil {
		return err
	}
	res, err := cl.keys.RotateKey(ctx, connect.NewRequest(&adminv1.RotateKeyRequest{Account: cl.account, Id: fs.Arg(0), GracePeriod: *grace}))
	if err != nil {
		return err
	}
	return cl.printSecret(out, res.Msg.GetKey(), res.Msg.GetSecret())
}
