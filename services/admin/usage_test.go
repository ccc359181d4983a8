package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	"github.com/tollgate/tollgate/gen/tollgate/admin/v1/adminv1connect"
	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/auth"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/testenv"
	"github.com/tollgate/tollgate/pkg/usagestore"
)

// fakeUsage records the query it is asked and answers rows or err.
type fakeUsage struct {
	got  *usagestore.Query
	rows []usagestore.Row
	err  error
}

func (f *fakeUsage) Usage(_ context.Context, q usagestore.Query) ([]usagestore.Row, error) {
	f.got = &q
	return f.rows, f.err
}

// keyResolver is an in-memory auth.KeyResolver (the key tests use the real
// read model; here only the principal matters).
type keyResolver map[string]*eventsv1.Key

func (r keyResolver) ResolveKey(_ context.Context, hash []byte) (*eventsv1.Key, error) {
	if k, ok := r[string(hash)]; ok {
		return k, nil
	}
	return nil, keys.ErrNotFound
}

var usageNow = time.Date(2025, 6, 15, 12, 30, 0, 0, time.UTC)

// usageCredentials are an authenticator and tokens for each kind of caller.
type usageCredentials struct {
	authn                              *auth.Authenticator
	bootstrap, operator, acmeKey, none string
}

func newUsageCredentials(t *testing.T) usageCredentials {
	hasher, err := keys.NewHasher([]byte("pepper-for-tests-0123456789abcdef0123456789"), "p1")
	if err != nil {
		t.Fatal(err)
	}
	const secret = "en_acmekeysecret"
	k := &eventsv1.Key{Id: "key_acme", Account: "acme", Status: eventsv1.KeyStatus_KEY_STATUS_ACTIVE,
		Permissions: []eventsv1.Permission{eventsv1.Permission_PERMISSION_READ}, Secret: &eventsv1.Secret{Hash: hasher.Hash(secret)}}
	op, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ann", "account": "acme", "accounts": []string{"beta"},
		"exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(testJWTSecret))
	if err != nil {
		t.Fatal(err)
	}
	return usageCredentials{
		authn: auth.New(auth.Config{BootstrapToken: testToken, DefaultAccount: "default", JWTSecret: []byte(testJWTSecret),
			Hasher: hasher, Keys: keyResolver{string(k.GetSecret().GetHash()): k}}),
		bootstrap: testToken, operator: op, acmeKey: secret,
	}
}

// serveUsage serves h on a loopback HTTP server and returns a client factory.
func serveUsage(t *testing.T, h adminv1connect.UsageServiceHandler) (string, func(token string) adminv1connect.UsageServiceClient) {
	mux := http.NewServeMux()
	mux.Handle(adminv1connect.NewUsageServiceHandler(h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, func(token string) adminv1connect.UsageServiceClient {
		return adminv1connect.NewUsageServiceClient(http.DefaultClient, srv.URL, connect.WithInterceptors(connect.UnaryInterceptorFunc(
			func(next connect.UnaryFunc) connect.UnaryFunc {
				return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
					if token != "" {
						req.Header().Set("Authorization", "Bearer "+token)
					}
					return next(ctx, req)
				}
			})))
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Who may see which account, and how requests become store queries.
func TestUsageHandler(t *testing.T) {
	cred := newUsageCredentials(t)
	from := timestamppb.New(usageNow.Add(-48 * time.Hour))
	for _, tc := range []struct {
		name   string
		token  string
		req    *adminv1.QueryUsageRequest
		code   connect.Code // 0: success
		fields []string     // field violations of an invalid request
		want   usagestore.Query
	}{{
		name: "bootstrap without an account: its home account, until now", token: cred.bootstrap,
		req:  &adminv1.QueryUsageRequest{},
		want: usagestore.Query{Filter: usagestore.Filter{Account: "default", To: usageNow}},
	}, {
		name: "an API key sees its own account", token: cred.acmeKey,
		req: &adminv1.QueryUsageRequest{Filter: &adminv1.UsageFilter{StartTime: from, KeyIds: []string{"key_acme", "key_b"}},
			GroupBy: []adminv1.UsageDimension{adminv1.UsageDimension_USAGE_DIMENSION_DAY, adminv1.UsageDimension_USAGE_DIMENSION_MODEL}, IncludeLatency: true},
		want: usagestore.Query{Filter: usagestore.Filter{Account: "acme", Keys: []string{"key_acme", "key_b"}, From: from.AsTime(), To: usageNow},
			GroupBy: []usagestore.Dimension{usagestore.ByDay, usagestore.ByModel}, Latency: true},
	}, {
		name: "an API key names its own account", token: cred.acmeKey,
		req:  &adminv1.QueryUsageRequest{Filter: &adminv1.UsageFilter{Account: "acme"}},
		want: usagestore.Query{Filter: usagestore.Filter{Account: "acme", To: usageNow}},
	}, {
		name: "an API key names another account", token: cred.acmeKey,
		req:  &adminv1.QueryUsageRequest{Filter: &adminv1.UsageFilter{Account: "globex"}},
		code: connect.CodePermissionDenied,
	}, {
		name: "an operator names an account its token lists", token: cred.operator,
		req:  &adminv1.QueryUsageRequest{Filter: &adminv1.UsageFilter{Account: "beta", Models: []string{"o3"}, Services: []string{"beta/openai"}}},
		want: usagestore.Query{Filter: usagestore.Filter{Account: "beta", Models: []string{"o3"}, Services: []string{"beta/openai"}, To: usageNow}},
	}, {
		name: "an operator names another account", token: cred.operator,
		req:  &adminv1.QueryUsageRequest{Filter: &adminv1.UsageFilter{Account: "globex"}},
		code: connect.CodePermissionDenied,
	}, {
		name: "no credential", token: "",
		req:  &adminv1.QueryUsageRequest{},
		code: connect.CodeUnauthenticated,
	}, {
		name: "a malformed account", token: cred.bootstrap,
		req:  &adminv1.QueryUsageRequest{Filter: &adminv1.UsageFilter{Account: "a b"}},
		code: connect.CodeInvalidArgument, fields: []string{"filter.account"},
	}, {
		name: "start after end, and hour with day", token: cred.bootstrap,
		req: &adminv1.QueryUsageRequest{Filter: &adminv1.UsageFilter{StartTime: timestamppb.New(usageNow.Add(time.Hour))},
			GroupBy: []adminv1.UsageDimension{adminv1.UsageDimension_USAGE_DIMENSION_HOUR, adminv1.UsageDimension_USAGE_DIMENSION_DAY}},
		code: connect.CodeInvalidArgument, fields: []string{"filter.start_time", "group_by"},
	}, {
		name: "an unspecified dimension", token: cred.bootstrap,
		req:  &adminv1.QueryUsageRequest{GroupBy: []adminv1.UsageDimension{adminv1.UsageDimension_USAGE_DIMENSION_UNSPECIFIED}},
		code: connect.CodeInvalidArgument, fields: []string{"group_by[0]"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeUsage{}
			h := newUsageHandler(fake, cred.authn, quietLog())
			h.now = func() time.Time { return usageNow }
			_, client := serveUsage(t, h)
			_, err := client(tc.token).QueryUsage(context.Background(), connect.NewRequest(tc.req))
			if tc.code != 0 {
				if connect.CodeOf(err) != tc.code {
					t.Fatalf("error %v, want code %v", err, tc.code)
				}
				if fake.got != nil {
					t.Errorf("the store was asked %+v", fake.got)
				}
				if got := violations(err); strings.Join(got, ",") != strings.Join(tc.fields, ",") {
					t.Errorf("field violations %v, want %v", got, tc.fields)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fake.got == nil || !reflect.DeepEqual(*fake.got, tc.want) {
				t.Errorf("store query %+v\nwant %+v", fake.got, tc.want)
			}
		})
	}
}

func violations(err error) []string {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil
	}
	var out []string
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if br, ok := v.(*errdetails.BadRequest); ok {
				for _, f := range br.GetFieldViolations() {
					out = append(out, f.GetField())
				}
			}
		}
	}
	return out
}

func TestUsageHandlerAnswers(t *testing.T) {
	cred := newUsageCredentials(t)
	fake := &fakeUsage{rows: []usagestore.Row{{KeyID: "key_a", Bucket: usageNow.Truncate(24 * time.Hour), Requests: 20, InputTokens: 3,
		OutputTokens: 4, Cost: 12_300_000, Latency: &usagestore.Latency{P50: 1500, P95: 20_000, P99: 90_250}}}}
	h := newUsageHandler(fake, cred.authn, quietLog())
	h.now = func() time.Time { return usageNow }
	url, client := serveUsage(t, h)

	res, err := client(cred.bootstrap).TopKeys(context.Background(), connect.NewRequest(&adminv1.TopKeysRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if q := fake.got; !q.TopByCost || q.Limit != defaultTopKeys || !reflect.DeepEqual(q.GroupBy, []usagestore.Dimension{usagestore.ByKey}) {
		t.Errorf("store query %+v, want the top %d keys by cost", q, defaultTopKeys)
	}
	row := res.Msg.GetRows()[0]
	if row.GetCost() != "0.0123" || row.GetLatency().GetP50Ms() != 1.5 || row.GetLatency().GetP99Ms() != 90.25 {
		t.Errorf("row = %v", row)
	}
	if _, err := client(cred.bootstrap).TopKeys(context.Background(), connect.NewRequest(&adminv1.TopKeysRequest{Limit: 1001})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("limit 1001: %v, want invalid_argument", err)
	}

	// Plain JSON, as curl sends it: counts are integer strings, cost a
	// decimal string.
	req, _ := http.NewRequest("POST", url+"/tollgate.admin.v1.UsageService/QueryUsage", strings.NewReader(`{"groupBy":["USAGE_DIMENSION_KEY","USAGE_DIMENSION_DAY"]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+cred.bootstrap)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	io.Copy(&body, resp.Body)
	var got struct {
		Rows []map[string]any `json:"rows"`
	}
	if err := json.Unmarshal(body.Bytes(), &got); err != nil || len(got.Rows) != 1 {
		t.Fatalf("%d %s: %v", resp.StatusCode, body.String(), err)
	}
	if r := got.Rows[0]; r["requests"] != "20" || r["cost"] != "0.0123" || r["keyId"] != "key_a" || r["bucketStart"] != "2025-06-15T00:00:00Z" {
		t.Errorf("JSON row = %v", r)
	}

	fake.err = errors.New("clickhouse: code 60, table usage_events does not exist")
	_, err = client(cred.bootstrap).QueryUsage(context.Background(), connect.NewRequest(&adminv1.QueryUsageRequest{}))
	if connect.CodeOf(err) != connect.CodeInternal || strings.Contains(err.Error(), "usage_events") {
		t.Errorf("store failure: %v, want internal without the detail", err)
	}
}

func TestUsageServiceWithoutClickHouse(t *testing.T) {
	cred := newUsageCredentials(t)
	for _, dsn := range []string{"", "clickhouse://127.0.0.1:1/tollgate?dial_timeout=200ms"} {
		s := newUsageService(dsn, cred.authn, quietLog())
		_, client := serveUsage(t, s)
		_, err := client(cred.bootstrap).QueryUsage(context.Background(), connect.NewRequest(&adminv1.QueryUsageRequest{}))
		if connect.CodeOf(err) != connect.CodeUnavailable {
			t.Errorf("dsn %q: %v, want unavailable", dsn, err)
		}
		s.Close()
	}
}

// Through Connect to a real ClickHouse: what the sink wrote comes back, and
// one account's usage never shows in another's.
func TestUsageServiceOnClickHouse(t *testing.T) {
	addr, db := testenv.ClickHouse(t)
	cred := newUsageCredentials(t)
	s := newUsageService(fmt.Sprintf("clickhouse://%s/%s", addr, db), cred.authn, quietLog())
	t.Cleanup(func() { s.Close() })
	s.now = func() time.Time { return usageNow }
	ctx := ctxT(t)
	if _, err := s.connect(ctx); err != nil {
		t.Fatal(err)
	}
	day := usageNow.Truncate(24 * time.Hour).Add(-24 * time.Hour)
	var evs []usagestore.Event
	for i := range 48 {
		for _, acct := range []string{"acme", "globex"} {
			evs = append(evs, usagestore.Event{Account: acct, KeyID: fmt.Sprintf("key_%s_%d", acct, i%2), OccurredAt: day.Add(time.Duration(i) * 30 * time.Minute),
				EdgeInstance: "e", Sequence: uint64(len(evs) + 1), Model: "gpt-4o", Service: acct + "/openai",
				InputTokens: 100, OutputTokens: 10, Cost: 1_234_567, LatencyUS: 2000})
		}
	}
	if err := usagestore.NewWriter(s.conn, "test", usagestore.WriterOptions{}).Insert(ctx, evs); err != nil {
		t.Fatal(err)
	}
	_, client := serveUsage(t, s)
	res, err := client(cred.acmeKey).QueryUsage(ctx, connect.NewRequest(&adminv1.QueryUsageRequest{
		Filter:  &adminv1.UsageFilter{StartTime: timestamppb.New(day)},
		GroupBy: []adminv1.UsageDimension{adminv1.UsageDimension_USAGE_DIMENSION_DAY}, IncludeLatency: true}))
	if err != nil {
		t.Fatal(err)
	}
	rows := res.Msg.GetRows()
	if len(rows) != 1 || rows[0].GetRequests() != 48 || rows[0].GetCost() != "0.059259216" || rows[0].GetLatency().GetP50Ms() != 2 {
		t.Errorf("acme by day = %v, want one day of 48 requests costing 48 x 0.001234567", rows)
	}
	top, err := client(cred.bootstrap).TopKeys(ctx, connect.NewRequest(&adminv1.TopKeysRequest{Filter: &adminv1.UsageFilter{Account: "globex"}, Limit: 1}))
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Msg.GetRows()) != 1 || !strings.HasPrefix(top.Msg.GetRows()[0].GetKeyId(), "key_globex_") || top.Msg.GetRows()[0].GetRequests() != 24 {
		t.Errorf("globex top key = %v", top.Msg.GetRows())
	}
}
