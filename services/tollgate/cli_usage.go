package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	"github.com/tollgate/tollgate/gen/tollgate/admin/v1/adminv1connect"
)

const usageHelp = `Usage: tollgate usage [flags]       requests, tokens and cost: totals, series, breakdowns
       tollgate usage top [flags]   the keys that spent the most

` + usageTimes + `
Run 'tollgate usage --help' or 'tollgate usage top --help' for every flag.
`

const usageTimes = `Times are RFC 3339 (2025-06-01T00:00:00Z), a date (2025-06-01, UTC), "now",
or relative to now: -90m, -24h, -30d, -2w. Ranges include --from and end
before --to; hours and days are UTC.

Examples:
  tollgate usage --from -7d --group-by day
  tollgate usage --from 2025-06-01 --to 2025-07-01 --group-by key,model --csv
  tollgate usage top --limit 5 --json
`

// usageFlags are the flags both usage commands take.
type usageFlags struct {
	from, to               string
	keys, models, services []string
	csv, latency           bool
}

func (f *usageFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.from, "from", "-30d", "start of the range (inclusive)")
	fs.StringVar(&f.to, "to", "now", "end of the range (exclusive)")
	fs.StringSliceVar(&f.keys, "key", nil, "only this key id (repeat or comma-separate for several)")
	fs.StringSliceVar(&f.models, "model", nil, "only this model (repeatable)")
	fs.StringSliceVar(&f.services, "service", nil, "only this service, <account>/<service> (repeatable)")
	fs.BoolVar(&f.csv, "csv", false, "print CSV")
	fs.BoolVar(&f.latency, "latency", false, "add p50, p95 and p99 latency (reads every event in the range: slower)")
}

// filter turns the flags into the API's filter.
func (f *usageFlags) filter(cl *client, now time.Time) (*adminv1.UsageFilter, error) {
	from, err := parseWhen(f.from, now)
	if err != nil {
		return nil, usageErrorf("--from: %v", err)
	}
	to, err := parseWhen(f.to, now)
	if err != nil {
		return nil, usageErrorf("--to: %v", err)
	}
	if !from.Before(to) {
		return nil, usageErrorf("--from (%s) must be before --to (%s)", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	return &adminv1.UsageFilter{Account: cl.account, StartTime: timestamppb.New(from), EndTime: timestamppb.New(to),
		KeyIds: f.keys, Models: f.models, Services: f.services}, nil
}

var relative = regexp.MustCompile(`^-(\d+)(s|m|h|d|w)$`)

// parseWhen reads a point in time: RFC 3339, a date, "now", or -N units ago.
func parseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "now" {
		return now, nil
	}
	if m := relative.FindStringSubmatch(s); m != nil {
		n, err := strconv.Atoi(m[1])
		if err != nil || n > 100_000 {
			return time.Time{}, fmt.Errorf("%q is too far back", s)
		}
		unit := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour}[m[2]]
		return now.Add(-time.Duration(n) * unit), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use RFC 3339 (2025-06-01T00:00:00Z), a date (2025-06-01), now, or -24h, -30d, -2w", s)
}

var dimensionNames = map[string]adminv1.UsageDimension{
	"key": adminv1.UsageDimension_USAGE_DIMENSION_KEY, "model": adminv1.UsageDimension_USAGE_DIMENSION_MODEL,
	"service": adminv1.UsageDimension_USAGE_DIMENSION_SERVICE, "hour": adminv1.UsageDimension_USAGE_DIMENSION_HOUR,
	"day": adminv1.UsageDimension_USAGE_DIMENSION_DAY,
}

// runUsage runs `tollgate usage ...` and returns the process exit code:
// 0 done, 1 the admin API refused or failed, 2 a mistake in the command line.
func runUsage(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "help" {
		fmt.Fprint(stdout, usageHelp)
		return 0
	}
	cmd := usageQuery
	if len(args) > 0 && args[0] == "top" {
		cmd, args = usageTop, args[1:]
	}
	return reportError(stderr, cmd(ctx, newClient(stdout), args, stdout))
}

func usageQuery(ctx context.Context, cl *client, args []string, out io.Writer) error {
	fs := cl.flagSet("usage", "[flags]\n\n"+usageTimes)
	var f usageFlags
	f.register(fs)
	groupBy := fs.StringSlice("group-by", nil, "group by any of key, model, service, and hour or day (comma-separated)")
	if err := cl.parse(fs, args, 0); err != nil {
		return err
	}
	if f.csv && cl.json {
		return usageErrorf("--json and --csv: choose one")
	}
	filter, err := f.filter(cl, time.Now())
	if err != nil {
		return err
	}
	req := &adminv1.QueryUsageRequest{Filter: filter, IncludeLatency: f.latency}
	var cols []string
	for _, g := range *groupBy {
		g = strings.ToLower(strings.TrimSpace(g))
		d, ok := dimensionNames[g]
		if !ok {
			return usageErrorf("--group-by: unknown %q; use key, model, service, hour or day", g)
		}
		req.GroupBy = append(req.GroupBy, d)
		cols = append(cols, g)
	}
	res, err := cl.usageClient().QueryUsage(ctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	return printUsage(out, cl.json, f.csv, cols, f.latency, res.Msg.GetRows())
}

func usageTop(ctx context.Context, cl *client, args []string, out io.Writer) error {
	fs := cl.flagSet("usage top", "[flags]\n\n"+usageTimes)
	var f usageFlags
	f.register(fs)
	limit := fs.Int32("limit", 10, "how many keys (1 to 1000)")
	if err := cl.parse(fs, args, 0); err != nil {
		return err
	}
	if f.csv && cl.json {
		return usageErrorf("--json and --csv: choose one")
	}
	if *limit < 1 || *limit > 1000 {
		return usageErrorf("--limit: must be 1 to 1000, got %d", *limit)
	}
	filter, err := f.filter(cl, time.Now())
	if err != nil {
		return err
	}
	res, err := cl.usageClient().TopKeys(ctx, connect.NewRequest(&adminv1.TopKeysRequest{Filter: filter, Limit: *limit, IncludeLatency: f.latency}))
	if err != nil {
		return err
	}
	return printUsage(out, cl.json, f.csv, []string{"key"}, f.latency, res.Msg.GetRows())
}

// usageClient is the UsageService client on the connection cl.parse set up.
func (cl *client) usageClient() adminv1connect.UsageServiceClient {
	return adminv1connect.NewUsageServiceClient(&http.Client{Timeout: 60 * time.Second}, strings.TrimRight(cl.adminURL, "/"),
		connect.WithInterceptors(bearer(cl.token)))
}

// usageColumns are a report's columns: the group-by columns as asked, then
// the sums (and latency). JSON and CSV use these names.
func usageColumns(groups []string, latency bool) []string {
	var cols []string
	for _, g := range groups {
		if g == "key" {
			g = "key_id"
		}
		cols = append(cols, g)
	}
	cols = append(cols, "requests", "input_tokens", "output_tokens", "cost")
	if latency {
		cols = append(cols, "p50_ms", "p95_ms", "p99_ms")
	}
	return cols
}

// usageValues are a row's values in usageColumns order, all strings: counts
// as integers, cost as exact decimal dollars, times in UTC.
func usageValues(r *adminv1.UsageRow, groups []string, latency bool) []string {
	var v []string
	for _, g := range groups {
		switch g {
		case "key":
			v = append(v, r.GetKeyId())
		case "model":
			v = append(v, r.GetModel())
		case "service":
			v = append(v, r.GetService())
		case "hour":
			v = append(v, r.GetBucketStart().AsTime().UTC().Format(time.RFC3339))
		case "day":
			v = append(v, r.GetBucketStart().AsTime().UTC().Format(time.DateOnly))
		}
	}
	v = append(v, strconv.FormatInt(r.GetRequests(), 10), strconv.FormatInt(r.GetInputTokens(), 10),
		strconv.FormatInt(r.GetOutputTokens(), 10), r.GetCost())
	if latency {
		l := r.GetLatency()
		for _, ms := range []float64{l.GetP50Ms(), l.GetP95Ms(), l.GetP99Ms()} {
			v = append(v, strconv.FormatFloat(ms, 'f', -1, 64))
		}
	}
	return v
}

func printUsage(out io.Writer, asJSON, asCSV bool, groups []string, latency bool, rows []*adminv1.UsageRow) error {
	cols := usageColumns(groups, latency)
	switch {
	case asJSON:
		return writeUsageJSON(out, cols, groups, latency, rows)
	case asCSV:
		w := csv.NewWriter(out)
		w.Write(cols)
		for _, r := range rows {
			w.Write(usageValues(r, groups, latency))
		}
		w.Flush()
		return w.Error()
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(out, "no usage in this range")
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.ToUpper(strings.Join(cols, "\t"))+"\t")
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(usageValues(r, groups, latency), "\t")+"\t")
	}
	return tw.Flush()
}

// writeUsageJSON writes {"rows":[{...}]} with each row's fields in column
// order (a map would sort them).
func writeUsageJSON(out io.Writer, cols, groups []string, latency bool, rows []*adminv1.UsageRow) error {
	var b strings.Builder
	b.WriteString("{\"rows\": [")
	for i, r := range rows {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n  {")
		for j, v := range usageValues(r, groups, latency) {
			if j > 0 {
				b.WriteString(", ")
			}
			k, _ := json.Marshal(cols[j])
			s, _ := json.Marshal(v)
			b.Write(k)
			b.WriteString(": ")
			b.Write(s)
		}
		b.WriteString("}")
	}
	if len(rows) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("]}\n")
	_, err := io.WriteString(out, b.String())
	return err
}
