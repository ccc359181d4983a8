package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	"github.com/tollgate/tollgate/gen/tollgate/admin/v1/adminv1connect"
)

// fakeUsageAPI is UsageService answering fixed rows and recording requests.
type fakeUsageAPI struct {
	adminv1connect.UnimplementedUsageServiceHandler
	rows  []*adminv1.UsageRow
	err   error
	query *adminv1.QueryUsageRequest
	top   *adminv1.TopKeysRequest
	auth  string
}

func (f *fakeUsageAPI) QueryUsage(_ context.Context, req *connect.Request[adminv1.QueryUsageRequest]) (*connect.Response[adminv1.QueryUsageResponse], error) {
	f.query, f.auth = req.Msg, req.Header().Get("Authorization")
	if f.err != nil {
		return nil, f.err
	}
	return connect.NewResponse(&adminv1.QueryUsageResponse{Rows: f.rows}), nil
}

func (f *fakeUsageAPI) TopKeys(_ context.Context, req *connect.Request[adminv1.TopKeysRequest]) (*connect.Response[adminv1.TopKeysResponse], error) {
	f.top, f.auth = req.Msg, req.Header().Get("Authorization")
	return connect.NewResponse(&adminv1.TopKeysResponse{Rows: f.rows}), nil
}

func startFakeUsageAPI(t *testing.T, f *fakeUsageAPI) string {
	mux := http.NewServeMux()
	mux.Handle(adminv1connect.NewUsageServiceHandler(f))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func runUsageCLI(t *testing.T, url string, args ...string) (code int, stdout, stderr string) {
	t.Setenv("TOLLGATE_ADMIN_TOKEN", "")
	t.Setenv("TOLLGATE_ACCOUNT", "")
	var out, errOut bytes.Buffer
	args = append(args, "--admin-url", url, "--token", "tok-123")
	code = runUsage(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

var day = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

func sampleRows() []*adminv1.UsageRow {
	return []*adminv1.UsageRow{
		{KeyId: "key_a", Model: "gpt-4o", BucketStart: timestamppb.New(day), Requests: 20, InputTokens: 1500, OutputTokens: 300, Cost: "0.0123"},
		{KeyId: "key_b", Model: "o3", BucketStart: timestamppb.New(day.Add(24 * time.Hour)), Requests: 3, InputTokens: 10, OutputTokens: 5, Cost: "12"},
	}
}

func TestUsageCLIJSON(t *testing.T) {
	api := &fakeUsageAPI{rows: sampleRows()}
	url := startFakeUsageAPI(t, api)
	code, out, errOut := runUsageCLI(t, url, "--from", "2025-06-01", "--to", "2025-06-03T00:00:00Z", "--key", "key_a",
		"--key", "key_b,key_c", "--model", "gpt-4o", "--service", "acme/openai", "--group-by", "key,model,day", "--json", "--account", "acme")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := `{"rows": [
  {"key_id": "key_a", "model": "gpt-4o", "day": "2025-06-01", "requests": "20", "input_tokens": "1500", "output_tokens": "300", "cost": "0.0123"},
  {"key_id": "key_b", "model": "o3", "day": "2025-06-02", "requests": "3", "input_tokens": "10", "output_tokens": "5", "cost": "12"}
]}
`
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
	var parsed map[string][]map[string]string
	if err := json.Unmarshal([]byte(out), &parsed); err != nil {
		t.Errorf("not JSON: %v", err)
	}
	wantReq := &adminv1.QueryUsageRequest{
		Filter: &adminv1.UsageFilter{Account: "acme", StartTime: timestamppb.New(day), EndTime: timestamppb.New(day.Add(48 * time.Hour)),
			KeyIds: []string{"key_a", "key_b", "key_c"}, Models: []string{"gpt-4o"}, Services: []string{"acme/openai"}},
		GroupBy: []adminv1.UsageDimension{adminv1.UsageDimension_USAGE_DIMENSION_KEY, adminv1.UsageDimension_USAGE_DIMENSION_MODEL, adminv1.UsageDimension_USAGE_DIMENSION_DAY},
	}
	if !proto.Equal(api.query, wantReq) {
		t.Errorf("request %v\nwant %v", api.query, wantReq)
	}
	if api.auth != "Bearer tok-123" {
		t.Errorf("Authorization = %q", api.auth)
	}
}

func TestUsageCLITableAndCSV(t *testing.T) {
	api := &fakeUsageAPI{rows: sampleRows()}
	url := startFakeUsageAPI(t, api)
	code, out, errOut := runUsageCLI(t, url, "--group-by", "key,hour")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "KEY_ID") || !strings.Contains(lines[0], "COST") ||
		!strings.Contains(lines[1], "2025-06-01T00:00:00Z") || !strings.HasSuffix(strings.TrimSpace(lines[1]), "0.0123") {
		t.Errorf("table:\n%s", out)
	}
	// Without --from and --to: the last 30 days until now.
	f := api.query.GetFilter()
	if got := f.GetEndTime().AsTime().Sub(f.GetStartTime().AsTime()); got != 30*24*time.Hour || time.Since(f.GetEndTime().AsTime()) > time.Minute {
		t.Errorf("default range %s..%s", f.GetStartTime().AsTime(), f.GetEndTime().AsTime())
	}

	code, out, _ = runUsageCLI(t, url, "--group-by", "model", "--csv", "--latency")
	if want := "model,requests,input_tokens,output_tokens,cost,p50_ms,p95_ms,p99_ms\ngpt-4o,20,1500,300,0.0123,0,0,0\no3,3,10,5,12,0,0,0\n"; code != 0 || out != want {
		t.Errorf("csv (exit %d):\n%s\nwant:\n%s", code, out, want)
	}
	if !api.query.GetIncludeLatency() {
		t.Error("--latency was not sent")
	}

	api.rows = nil
	if code, out, _ = runUsageCLI(t, url); code != 0 || !strings.Contains(out, "no usage") {
		t.Errorf("empty (exit %d): %q", code, out)
	}
}

func TestUsageCLITop(t *testing.T) {
	api := &fakeUsageAPI{rows: sampleRows()[:1]}
	url := startFakeUsageAPI(t, api)
	code, out, errOut := runUsageCLI(t, url, "top", "--limit", "3", "--from", "-24h", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if want := "{\"rows\": [\n  {\"key_id\": \"key_a\", \"requests\": \"20\", \"input_tokens\": \"1500\", \"output_tokens\": \"300\", \"cost\": \"0.0123\"}\n]}\n"; out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
	f := api.top.GetFilter()
	if api.top.GetLimit() != 3 || f.GetEndTime().AsTime().Sub(f.GetStartTime().AsTime()) != 24*time.Hour {
		t.Errorf("request %v", api.top)
	}
}

// Mistakes in the command line exit 2 with a message and call nothing; the
// API refusing exits 1.
func TestUsageCLIErrors(t *testing.T) {
	api := &fakeUsageAPI{}
	url := startFakeUsageAPI(t, api)
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--from", "yesterday"}, "--from: \"yesterday\" is not a time"},
		{[]string{"--to", "-5x"}, "--to:"},
		{[]string{"--from", "-1h", "--to", "-2h"}, "must be before --to"},
		{[]string{"--group-by", "key,week"}, "--group-by: unknown \"week\""},
		{[]string{"--json", "--csv"}, "choose one"},
		{[]string{"extra"}, "want 0 argument(s)"},
		{[]string{"--nope"}, "unknown flag: --nope"},
		{[]string{"top", "--limit", "0"}, "--limit: must be 1 to 1000"},
	} {
		api.query, api.top = nil, nil
		code, _, errOut := runUsageCLI(t, url, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.msg) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", tc.args, code, errOut, tc.msg)
		}
		if api.query != nil || api.top != nil {
			t.Errorf("%v: the API was called", tc.args)
		}
	}
	api.err = connect.NewError(connect.CodePermissionDenied, errors.New("permission denied: account \"globex\" is not yours"))
	code, _, errOut := runUsageCLI(t, url, "--account", "globex")
	if code != 1 || !strings.Contains(errOut, "is not yours") {
		t.Errorf("refused: exit %d, %q", code, errOut)
	}
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2025, 6, 15, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"now": now, "-90m": now.Add(-90 * time.Minute), "-24h": now.Add(-24 * time.Hour), "-30d": now.Add(-30 * 24 * time.Hour),
		"-2w": now.Add(-14 * 24 * time.Hour), "2025-06-01": day, "2025-06-01T10:00:00+02:00": day.Add(8 * time.Hour),
	} {
		got, err := parseWhen(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-", "-1y", "tomorrow", "-99999999d"} {
		if _, err := parseWhen(in, now); err == nil {
			t.Errorf("parseWhen(%q) accepted", in)
		}
	}
}
