package admin

import (
	"fmt"
	"testing"

	"connectrpc.com/connect"

	adminv1 "github.com/tollgate/tollgate/gen/tollgate/admin/v1"
	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
)

func TestListKeysFiltersAndPages(t *testing.T) {
	ts := newAdmin(t)
	c := ts.client(testToken)
	ctx := ctxT(t)
	perms := []eventsv1.Permission{eventsv1.Permission_PERMISSION_PREDICT, eventsv1.Permission_PERMISSION_WRITE, eventsv1.Permission_PERMISSION_READ}
	var ids []string
	for i := range 7 {
		k := mustCreate(t, c, &adminv1.CreateKeyRequest{Key: &adminv1.KeySettings{
			Name: fmt.Sprintf("Batch-%d", i), Permissions: []eventsv1.Permission{perms[i%3]}}})
		ids = append(ids, k.GetKey().GetId())
	}
	mustCreate(t, c, &adminv1.CreateKeyRequest{Key: &adminv1.KeySettings{Name: "other"}})

	// Pages of 3 walk every key once, in creation order.
	var seen []string
	token := ""
	for pages := 0; ; pages++ {
		res, err := c.ListKeys(ctx, connect.NewRequest(&adminv1.ListKeysRequest{Name: "batch", PageSize: 3, PageToken: token}))
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range res.Msg.GetKeys() {
			seen = append(seen, k.GetId())
		}
		token = res.Msg.GetNextPageToken()
		if token == "" {
			if pages != 2 {
				t.Fatalf("want 3 pages, got %d", pages+1)
			}
			break
		}
	}
	if fmt.Sprint(seen) != fmt.Sprint(ids) {
		t.Fatalf("pages gave %v, want %v", seen, ids)
	}

	// READ matches keys with READ or WRITE (WRITE includes READ).
	res, err := c.ListKeys(ctx, connect.NewRequest(&adminv1.ListKeysRequest{Permission: eventsv1.Permission_PERMISSION_READ}))
	if err != nil || len(res.Msg.GetKeys()) != 4 {
		t.Fatalf("permission READ: want 4 keys, got %d (%v)", len(res.Msg.GetKeys()), err)
	}
	res, err = c.ListKeys(ctx, connect.NewRequest(&adminv1.ListKeysRequest{Permission: eventsv1.Permission_PERMISSION_WRITE}))
	if err != nil || len(res.Msg.GetKeys()) != 2 {
		t.Fatalf("permission WRITE: want 2 keys, got %d (%v)", len(res.Msg.GetKeys()), err)
	}

	for _, bad := range []*adminv1.ListKeysRequest{{PageToken: "garbage"}, {PageSize: 5000}, {Status: "sleeping"}} {
		if _, err := c.ListKeys(ctx, connect.NewRequest(bad)); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("%v: want InvalidArgument, got %v", bad, err)
		}
	}
}
