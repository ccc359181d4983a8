package admin

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/testenv"
)

func TestKeyLifecycle(t *testing.T) {
	ts := newAdmin(t)
	c := ts.client(testToken)
	ctx := ctxT(t)

	created := mustCreate(t, c, &adminv1.CreateKeyRequest{Key: &adminv1.KeySettings{
		Name:         "ci",
		Permissions:  []eventsv1.Permission{eventsv1.Permission_PERMISSION_PREDICT},
		Models:       &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED, Names: []string{"gpt-4"}},
		Ttl:          "30d",
		NotifyEmails: []string{"ops@example.com"},
		Limits: []*adminv1.Limit{
			{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: "240"},
			{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_MONTH, Amount: "10.123456789", Window: eventsv1.Window_WINDOW_CALENDAR},
		},
		AlertThresholds: []float64{0.5, 0.8},
	}})
	k := created.GetKey()
	if !strings.HasPrefix(created.GetSecret(), "en_") || k.GetHint() != "en_..."+created.GetSecret()[len(created.GetSecret())-4:] {
		t.Fatalf("secret %q / hint %q", created.GetSecret(), k.GetHint())
	}
	if k.GetAccount() != "default" || k.GetStatus() != "active" || k.GetLimits()[1].GetAmount() != "10.123456789" {
		t.Fatalf("unexpected key %v", k)
	}
	if d := time.Until(k.GetExpiresAt().AsTime()); d < 29*24*time.Hour || d > 30*24*time.Hour {
		t.Fatalf("ttl 30d gave expiry in %v", d)
	}

	got, err := c.GetKey(ctx, connect.NewRequest(&adminv1.GetKeyRequest{Id: k.GetId()}))
	if err != nil || got.Msg.GetKey().GetRevision() != k.GetRevision() || got.Msg.GetKey().GetName() != "ci" {
		t.Fatalf("get: %v %v", got, err)
	}

	up, err := c.UpdateKey(ctx, connect.NewRequest(&adminv1.UpdateKeyRequest{
		Id: k.GetId(), Key: &adminv1.KeySettings{Name: "ci-2", Limits: nil},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name", "limits"}},
	}))
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if up.Msg.GetKey().GetName() != "ci-2" || len(up.Msg.GetKey().GetLimits()) != 0 || len(up.Msg.GetKey().GetNotifyEmails()) != 1 {
		t.Fatalf("update applied wrongly: %v", up.Msg.GetKey())
	}

	list, err := c.ListKeys(ctx, connect.NewRequest(&adminv1.ListKeysRequest{}))
	if err != nil || len(list.Msg.GetKeys()) != 1 || list.Msg.GetKeys()[0].GetName() != "ci-2" {
		t.Fatalf("list right after update must show it: %v %v", list, err)
	}

	rot, err := c.RotateKey(ctx, connect.NewRequest(&adminv1.RotateKeyRequest{Id: k.GetId()}))
	if err != nil || rot.Msg.GetSecret() == created.GetSecret() || rot.Msg.GetSecret() == "" {
		t.Fatalf("rotate: %v", err)
	}

	rev, err := c.RevokeKey(ctx, connect.NewRequest(&adminv1.RevokeKeyRequest{Id: k.GetId()}))
	if err != nil || rev.Msg.GetKey().GetStatus() != "revoked" {
		t.Fatalf("revoke: %v", err)
	}
	_, err = c.UpdateKey(ctx, connect.NewRequest(&adminv1.UpdateKeyRequest{Id: k.GetId(), Key: &adminv1.KeySettings{Name: "x"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("updating a revoked key: want FailedPrecondition, got %v", err)
	}
	for status, want := range map[string]int{"active": 0, "revoked": 1, "": 1} {
		l, err := c.ListKeys(ctx, connect.NewRequest(&adminv1.ListKeysRequest{Status: status}))
		if err != nil || len(l.Msg.GetKeys()) != want {
			t.Fatalf("list status=%q: want %d, got %v %v", status, want, l, err)
		}
	}
	if _, err := c.GetKey(ctx, connect.NewRequest(&adminv1.GetKeyRequest{Id: "key_00000000000000000000000000"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("missing key: want NotFound, got %v", err)
	}
}

func TestConcurrentUpdatesConflict(t *testing.T) {
	ts := newAdmin(t)
	c := ts.client(testToken)
	ctx := ctxT(t)
	k := mustCreate(t, c, &adminv1.CreateKeyRequest{Key: &adminv1.KeySettings{Name: "race"}}).GetKey()

	// Both updates read revision k.Revision; JetStream's expected-last-sequence
	// check on the key's subject must let exactly one append.
	for round := range 5 {
		cur, err := c.GetKey(ctx, connect.NewRequest(&adminv1.GetKeyRequest{Id: k.GetId()}))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = c.UpdateKey(ctx, connect.NewRequest(&adminv1.UpdateKeyRequest{
					Id: k.GetId(), Key: &adminv1.KeySettings{Description: strings.Repeat("x", i+1)},
					UpdateMask:       &fieldmaskpb.FieldMask{Paths: []string{"description"}},
					ExpectedRevision: cur.Msg.GetKey().GetRevision(),
				}))
			}()
		}
		wg.Wait()
		ok, conflicts := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case connect.CodeOf(err) == connect.CodeAborted && strings.Contains(err.Error(), k.GetId()):
				conflicts++
			default:
				t.Fatalf("round %d: unexpected error %v", round, err)
			}
		}
		if ok != 1 || conflicts != 1 {
			t.Fatalf("round %d: want one success and one conflict, got %d and %d (%v)", round, ok, conflicts, errs)
		}
	}
}

func TestValidationErrorsNameFields(t *testing.T) {
	ts := newAdmin(t)
	c := ts.client(testToken)
	zero := int64(0)
	tests := []struct {
		name  string
		s     *adminv1.KeySettings
		field string
	}{
		{"empty name", &adminv1.KeySettings{}, "name"},
		{"unknown permission", &adminv1.KeySettings{Name: "n", Permissions: []eventsv1.Permission{42}}, "permissions[0]"},
		{"selected without names", &adminv1.KeySettings{Name: "n", Models: &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED}}, "models.names"},
		{"malformed service", &adminv1.KeySettings{Name: "n", Services: &eventsv1.Filter{Mode: eventsv1.FilterMode_FILTER_MODE_SELECTED, Names: []string{"nope"}}}, "services.names[0]"},
		{"zero request size", &adminv1.KeySettings{Name: "n", MaxRequestBytes: &zero}, "max_request_bytes"},
		{"unknown ttl unit", &adminv1.KeySettings{Name: "n", Ttl: "3w"}, "ttl"},
		{"duplicate limit", &adminv1.KeySettings{Name: "n", Limits: []*adminv1.Limit{
			{Metric: eventsv1.Metric_METRIC_TOKENS, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: "1"},
			{Metric: eventsv1.Metric_METRIC_TOKENS, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: "2", Window: eventsv1.Window_WINDOW_CALENDAR}}}, "limits[1]"},
		{"threshold", &adminv1.KeySettings{Name: "n", AlertThresholds: []float64{0}}, "alert_thresholds[0]"},
		{"e-mail", &adminv1.KeySettings{Name: "n", NotifyEmails: []string{"a@"}}, "notify_emails[0]"},
		{"too precise", &adminv1.KeySettings{Name: "n", Limits: []*adminv1.Limit{{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: "0.0000000001"}}}, "limits[0].amount"},
		{"negative money", &adminv1.KeySettings{Name: "n", Limits: []*adminv1.Limit{{Metric: eventsv1.Metric_METRIC_SPEND, Interval: eventsv1.Interval_INTERVAL_DAY, Amount: "-5"}}}, "limits[0].amount"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.CreateKey(ctxT(t), connect.NewRequest(&adminv1.CreateKeyRequest{Key: tt.s}))
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
				t.Fatalf("want InvalidArgument, got %v", err)
			}
			for _, d := range ce.Details() {
				v, _ := d.Value()
				if br, ok := v.(*errdetails.BadRequest); ok {
					for _, f := range br.GetFieldViolations() {
						if f.GetField() == tt.field && f.GetDescription() != "" {
							return
						}
					}
				}
			}
			t.Fatalf("no field violation for %s in %v", tt.field, err)
		})
	}
}

func operatorJWT(t *testing.T, sub, account string, exp time.Time) string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "account": account, "exp": exp.Unix()}).SignedString([]byte(testJWTSecret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestAccountIsolation(t *testing.T) {
	ts := newAdmin(t)
	root := ts.client(testToken)
	ctx := ctxT(t)
	keyB := mustCreate(t, root, &adminv1.CreateKeyRequest{Account: "acct-b", Key: &adminv1.KeySettings{Name: "b"}}).GetKey()
	writerA := mustCreate(t, root, &adminv1.CreateKeyRequest{Account: "acct-a", Key: &adminv1.KeySettings{Name: "a-writer",
		Permissions: []eventsv1.Permission{eventsv1.Permission_PERMISSION_WRITE}}})
	readerA := mustCreate(t, root, &adminv1.CreateKeyRequest{Account: "acct-a", Key: &adminv1.KeySettings{Name: "a-reader",
		Permissions: []eventsv1.Permission{eventsv1.Permission_PERMISSION_READ}}})
	predictA := mustCreate(t, root, &adminv1.CreateKeyRequest{Account: "acct-a", Key: &adminv1.KeySettings{Name: "a-predict"}})

	callers := map[string]string{
		"operator jwt of a": operatorJWT(t, "alice", "acct-a", time.Now().Add(time.Hour)),
		"write key of a":    writerA.GetSecret(),
		"read key of a":     readerA.GetSecret(),
	}
	for name, tok := range callers {
		t.Run(name, func(t *testing.T) {
			c := ts.client(tok)
			// Its own account works.
			list, err := c.ListKeys(ctx, connect.NewRequest(&adminv1.ListKeysRequest{}))
			if err != nil || len(list.Msg.GetKeys()) != 3 {
				t.Fatalf("own account list: %v %v", list, err)
			}
			for _, k := range list.Msg.GetKeys() {
				if k.GetAccount() != "acct-a" {
					t.Fatalf("listed a key of %s", k.GetAccount())
				}
			}
			// Account b is out of reach, whichever way it is asked.
			denied := func(what string, err error) {
				t.Helper()
				if code := connect.CodeOf(err); code != connect.CodePermissionDenied && code != connect.CodeNotFound {
					t.Fatalf("%s: want PermissionDenied or NotFound, got %v", what, err)
				}
			}
			_, err = c.ListKeys(ctx, connect.NewRequest(&adminv1.ListKeysRequest{Account: "acct-b"}))
			denied("list b", err)
			_, err = c.GetKey(ctx, connect.NewRequest(&adminv1.GetKeyRequest{Account: "acct-b", Id: keyB.GetId()}))
			denied("get b", err)
			_, err = c.GetKey(ctx, connect.NewRequest(&adminv1.GetKeyRequest{Id: keyB.GetId()}))
			denied("get b's id in own account", err)
			_, err = c.UpdateKey(ctx, connect.NewRequest(&adminv1.UpdateKeyRequest{Account: "acct-b", Id: keyB.GetId(),
				Key: &adminv1.KeySettings{Name: "pwned"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}}))
			denied("update b", err)
			_, err = c.RevokeKey(ctx, connect.NewRequest(&adminv1.RevokeKeyRequest{Id: keyB.GetId()}))
			denied("revoke b's id in own account", err)
			_, err = c.RevokeKey(ctx, connect.NewRequest(&adminv1.RevokeKeyRequest{Account: "acct-b", Id: keyB.GetId()}))
			denied("revoke b", err)
			_, err = c.RotateKey(ctx, connect.NewRequest(&adminv1.RotateKeyRequest{Account: "acct-b", Id: keyB.GetId()}))
			denied("rotate b", err)
		})
	}
	after, err := root.GetKey(ctx, connect.NewRequest(&adminv1.GetKeyRequest{Account: "acct-b", Id: keyB.GetId()}))
	if err != nil || after.Msg.GetKey().GetName() != "b" || after.Msg.GetKey().GetStatus() != "active" || after.Msg.GetKey().GetRevision() != keyB.GetRevision() {
		t.Fatalf("account b's key changed: %v %v", after, err)
	}

	// READ may read but not write; PREDICT alone may not use the admin API.
	_, err = ts.client(readerA.GetSecret()).CreateKey(ctx, connect.NewRequest(&adminv1.CreateKeyRequest{Key: &adminv1.KeySettings{Name: "x"}}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("READ key creating a key: want PermissionDenied, got %v", err)
	}
	if _, err := ts.client(writerA.GetSecret()).CreateKey(ctx, connect.NewRequest(&adminv1.CreateKeyRequest{Key: &adminv1.KeySettings{Name: "x"}})); err != nil {
		t.Fatalf("WRITE key creating a key in its account: %v", err)
	}
	_, err = ts.client(predictA.GetSecret()).ListKeys(ctx, connect.NewRequest(&adminv1.ListKeysRequest{}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("PREDICT-only key listing: want PermissionDenied, got %v", err)
	}
	for name, tok := range map[string]string{
		"no token": "", "wrong token": "nope", "expired jwt": operatorJWT(t, "alice", "acct-a", time.Now().Add(-time.Minute)),
		"jwt with another secret": func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "m", "account": "acct-b", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte("not-the-secret"))
			return s
		}(),
	} {
		if _, err := ts.client(tok).ListKeys(ctx, connect.NewRequest(&adminv1.ListKeysRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("%s: want Unauthenticated, got %v", name, err)
		}
	}
	// A revoked key stops opening the admin API.
	if _, err := root.RevokeKey(ctx, connect.NewRequest(&adminv1.RevokeKeyRequest{Account: "acct-a", Id: writerA.GetKey().GetId()})); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.client(writerA.GetSecret()).ListKeys(ctx, connect.NewRequest(&adminv1.ListKeysRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("revoked key: want Unauthenticated, got %v", err)
	}
}

func TestRotateGracePeriod(t *testing.T) {
	ts := newAdmin(t)
	root := ts.client(testToken)
	ctx := ctxT(t)
	writer := mustCreate(t, root, &adminv1.CreateKeyRequest{Key: &adminv1.KeySettings{Name: "w",
		Permissions: []eventsv1.Permission{eventsv1.Permission_PERMISSION_WRITE}}})
	id := writer.GetKey().GetId()
	works := func(secret string) bool {
		_, err := ts.client(secret).GetKey(ctx, connect.NewRequest(&adminv1.GetKeyRequest{Id: id}))
		return err == nil
	}
	withGrace, err := root.RotateKey(ctx, connect.NewRequest(&adminv1.RotateKeyRequest{Id: id, GracePeriod: "1h"}))
	if err != nil {
		t.Fatal(err)
	}
	if !works(writer.GetSecret()) || !works(withGrace.Msg.GetSecret()) {
		t.Fatal("within the grace period both secrets must work")
	}
	now, err := root.RotateKey(ctx, connect.NewRequest(&adminv1.RotateKeyRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	if !works(now.Msg.GetSecret()) || works(withGrace.Msg.GetSecret()) || !works(writer.GetSecret()) {
		t.Fatal("a rotation without grace must stop the current secret at once and keep earlier grace secrets")
	}
	if _, err := root.RotateKey(ctx, connect.NewRequest(&adminv1.RotateKeyRequest{Id: id, GracePeriod: "soon"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("bad grace period: want InvalidArgument, got %v", err)
	}
}

// The same handlers answer gRPC, and gRPC health reports the service.
func TestGRPCAndHealth(t *testing.T) {
	ts := newAdmin(t)
	ctx := ctxT(t)
	c := ts.client(testToken, connect.WithGRPC())
	if _, err := c.CreateKey(ctx, connect.NewRequest(&adminv1.CreateKeyRequest{Key: &adminv1.KeySettings{Name: "grpc"}})); err != nil {
		t.Fatalf("gRPC create: %v", err)
	}
	_, err := c.CreateKey(ctx, connect.NewRequest(&adminv1.CreateKeyRequest{Key: &adminv1.KeySettings{}}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("gRPC validation: %v", err)
	}
	hc := grpchealth.NewClient(httpClient(), ts.url, connect.WithGRPC())
	res, err := hc.Check(ctx, &grpchealth.CheckRequest{Service: "tollgate.admin.v1.KeyService"})
	if err != nil || res.Status != grpchealth.StatusServing {
		t.Fatalf("health: %v %v", res, err)
	}
}

// Secrets appear nowhere: not in the KEYS stream, not in any table.
func TestSecretIsNeverStored(t *testing.T) {
	_, nc := testenv.NATS(t)
	dsn := testenv.Postgres(t)
	ts := startTestServer(t, newTestConfig(t, nc.ConnectedUrl(), dsn))
	root := ts.client(testToken)
	ctx := ctxT(t)
	created := mustCreate(t, root, &adminv1.CreateKeyRequest{Key: &adminv1.KeySettings{Name: "s"}})
	rotated, err := root.RotateKey(ctx, connect.NewRequest(&adminv1.RotateKeyRequest{Id: created.GetKey().GetId(), GracePeriod: "1h"}))
	if err != nil {
		t.Fatal(err)
	}
	secrets := [][]byte{[]byte(created.GetSecret()), []byte(rotated.Msg.GetSecret())}
	random := func(s []byte) []byte { return s[3:] } // without the prefix

	sub, err := nc.SubscribeSync("$JS.API.>")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	js, _ := nc.JetStream()
	msgs, err := js.SubscribeSync("tollgate.keys.>", nats.DeliverAll(), nats.OrderedConsumer())
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for {
		m, err := msgs.NextMsg(time.Second)
		if err != nil {
			break
		}
		seen++
		for _, s := range secrets {
			if bytes.Contains(m.Data, random(s)) {
				t.Fatalf("stream message %d contains a secret", seen)
			}
		}
	}
	if seen != 2 {
		t.Fatalf("want 2 key events, read %d", seen)
	}

	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var dump []byte
	if err := pool.QueryRow(ctx, `SELECT string_agg(t::text, '|')::bytea FROM (
		SELECT row_to_json(k)::text AS t FROM keys k UNION ALL SELECT row_to_json(s)::text FROM key_secrets s) x`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	if len(dump) == 0 {
		t.Fatal("read model is empty")
	}
	for _, s := range secrets {
		if bytes.Contains(dump, random(s)) {
			t.Fatal("the read model contains a secret")
		}
	}
}
