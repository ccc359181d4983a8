package admin

import (
	"context"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/testenv"
)

// listAll lists every key of the default account, as "id name status revision".
func listAll(t *testing.T, c interface {
	ListKeys(context.Context, *connect.Request[adminv1.ListKeysRequest]) (*connect.Response[adminv1.ListKeysResponse], error)
}) map[string]string {
	t.Helper()
	res, err := c.ListKeys(ctxT(t), connect.NewRequest(&adminv1.ListKeysRequest{}))
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	out := map[string]string{}
	for _, k := range res.Msg.GetKeys() {
		out[k.GetId()] = k.GetName() + " " + k.GetStatus() + " " + strconv.FormatUint(k.GetRevision(), 10)
	}
	return out
}

func TestReadModelRebuildsAndResumes(t *testing.T) {
	_, nc := testenv.NATS(t)
	dsn := testenv.Postgres(t)
	cfg := newTestConfig(t, nc.ConnectedUrl(), dsn)
	ctx := ctxT(t)

	ts := startTestServer(t, cfg)
	c := ts.client(testToken)
	var ids []string
	for _, name := range []string{"a", "b", "c"} {
		ids = append(ids, mustCreate(t, c, &adminv1.CreateKeyRequest{Key: &adminv1.KeySettings{Name: name}}).GetKey().GetId())
	}
	if _, err := c.UpdateKey(ctx, connect.NewRequest(&adminv1.UpdateKeyRequest{Id: ids[0], Key: &adminv1.KeySettings{Name: "a2"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RevokeKey(ctx, connect.NewRequest(&adminv1.RevokeKeyRequest{Id: ids[1]})); err != nil {
		t.Fatal(err)
	}
	want := listAll(t, c)
	if len(want) != 3 {
		t.Fatalf("want 3 keys, got %v", want)
	}
	ts.stop()

	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	// 1. Drop the read model entirely: the next start migrates and replays.
	if _, err := pool.Exec(ctx, `DROP TABLE keys, key_secrets, projector_positions; DELETE FROM schema_migrations WHERE component = 'admin-readmodel'`); err != nil {
		t.Fatal(err)
	}
	ts = startTestServer(t, cfg)
	if got := listAll(t, ts.client(testToken)); !equalMaps(got, want) {
		t.Fatalf("after drop: got %v, want %v", got, want)
	}
	ts.stop()

	// 2. Events appended while the admin is down are picked up from the
	// stored position.
	js, _ := jetstream.New(nc)
	keyLog, err := bus.NewKeyLog(ctx, js, bus.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hasher, _ := keys.NewHasher([]byte(cfg.Pepper), cfg.PepperID)
	ev, _, err := keys.Create(time.Now(), "test", hasher, &eventsv1.Key{Account: "default", Name: "offline"}, "en_")
	if err != nil {
		t.Fatal(err)
	}
	seq, err := keyLog.Append(ctx, ev, 0)
	if err != nil {
		t.Fatal(err)
	}
	ts = startTestServer(t, cfg)
	if err := ts.srv.Projector().WaitFor(ctx, seq); err != nil {
		t.Fatal(err)
	}
	got := listAll(t, ts.client(testToken))
	if len(got) != 4 || got[ev.GetKey().GetId()] != "offline active "+strconv.FormatUint(seq, 10) {
		t.Fatalf("after resume: %v", got)
	}
	want = got
	ts.stop()

	// 3. Replaying from the start over existing rows changes nothing.
	if _, err := pool.Exec(ctx, `UPDATE projector_positions SET stream_seq = 0`); err != nil {
		t.Fatal(err)
	}
	ts = startTestServer(t, cfg)
	if err := ts.srv.Projector().WaitFor(ctx, seq); err != nil {
		t.Fatal(err)
	}
	if got := listAll(t, ts.client(testToken)); !equalMaps(got, want) {
		t.Fatalf("after replay: got %v, want %v", got, want)
	}
	ts.stop()

	// 4. --rebuild-read-model repairs a damaged read model on purpose.
	if _, err := pool.Exec(ctx, `UPDATE keys SET name = 'damaged', state = ''::bytea`); err != nil {
		t.Fatal(err)
	}
	cfg.RebuildReadModel = true
	ts = startTestServer(t, cfg)
	if err := ts.srv.Projector().WaitFor(ctx, seq); err != nil {
		t.Fatal(err)
	}
	if got := listAll(t, ts.client(testToken)); !equalMaps(got, want) {
		t.Fatalf("after rebuild: got %v, want %v", got, want)
	}
	var damaged int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM keys WHERE name = 'damaged' OR state = ''::bytea`).Scan(&damaged); err != nil || damaged != 0 {
		t.Fatalf("rebuild left %d damaged rows (%v)", damaged, err)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
