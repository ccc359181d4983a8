package keyring

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/keys"
	"github.com/tollgate/tollgate/pkg/limits"
)

var (
	testPepper = bytes.Repeat([]byte{7}, 32)
	testNow    = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
)

// testRing holds keys made by testKey, hashed as the admin hashes them.
func testRing(t testing.TB, ks ...*eventsv1.Key) *Ring {
	t.Helper()
	r := New(testPepper, slog.New(slog.DiscardHandler))
	for _, k := range ks {
		r.Apply(k)
	}
	return r
}

// testKey is an active PREDICT key whose secret is "en_"+id, with previous
// secrets "en_"+id+"_old<i>" in grace until the given times.
func testKey(t testing.TB, id string, graceUntil ...time.Time) *eventsv1.Key {
	t.Helper()
	h, err := keys.NewHasher(testPepper, "p1")
	if err != nil {
		t.Fatal(err)
	}
	k := &eventsv1.Key{Id: id, Account: "acme", Status: eventsv1.KeyStatus_KEY_STATUS_ACTIVE,
		Permissions: []eventsv1.Permission{eventsv1.Permission_PERMISSION_PREDICT},
		Secret:      &eventsv1.Secret{Hash: h.Hash("en_" + id)}, CreatedAt: timestamppb.New(testNow.Add(-time.Hour))}
	for i, until := range graceUntil {
		k.PreviousSecrets = append(k.PreviousSecrets, &eventsv1.Secret{
			Hash: h.Hash("en_" + id + "_old" + string(rune('0'+i))), ExpiresAt: timestamppb.New(until)})
	}
	return k
}

func TestLookup(t *testing.T) {
	revoked := testKey(t, "k2")
	revoked.Status = eventsv1.KeyStatus_KEY_STATUS_REVOKED
	expired := testKey(t, "k3")
	expired.ExpiresAt = timestamppb.New(testNow)
	r := testRing(t, testKey(t, "k1", testNow.Add(time.Minute), testNow), revoked, expired)
	for _, tt := range []struct {
		secret string
		id     string
		want   Verdict
	}{
		{"en_k1", "k1", Found},
		{"en_k1_old0", "k1", Found},
		{"en_k1_old1", "", Unknown}, // its grace ended at testNow
		{"en_k2", "k2", Revoked},
		{"en_k3", "k3", Expired},
		{"en_k4", "", Unknown},
		{"en_k1 ", "", Unknown},
		{"", "", Unknown},
	} {
		e, v := r.Lookup(tt.secret, testNow)
		if v != tt.want || (e == nil) != (tt.id == "") || e != nil && e.Key.GetId() != tt.id {
			t.Errorf("Lookup(%q) = %v, %v; want key %q, %v", tt.secret, e, v, tt.id, tt.want)
		}
	}
}

// An entry reached by a map key that is not its stored hash is not
// returned: the map lookup alone does not decide.
func TestLookupComparesTheStoredHash(t *testing.T) {
	r := testRing(t, testKey(t, "k1", testNow.Add(time.Minute)), testKey(t, "k2"))
	cur, old, other := r.hash("en_k1"), r.hash("en_k1_old0"), r.hash("en_k2")

	r.mu.Lock()
	r.byHash[other] = r.byHash[cur] // k2's secret now leads to k1's entry
	r.grace[cur] = r.grace[old]     // and k1's current secret to its grace entry
	delete(r.byHash, cur)
	r.mu.Unlock()

	for _, secret := range []string{"en_k2", "en_k1"} {
		if e, v := r.Lookup(secret, testNow); v != Unknown || e != nil {
			t.Errorf("Lookup(%q) = %v (key %s), want Unknown", secret, v, e.Key.GetId())
		}
	}
	if e, v := r.Lookup("en_k1_old0", testNow); v != Found || e.Key.GetId() != "k1" {
		t.Errorf("Lookup(en_k1_old0) = %v, %v; want k1 Found", e, v)
	}
}

func BenchmarkLookup(b *testing.B) {
	ks := make([]*eventsv1.Key, 0, 1000)
	for i := range 1000 {
		ks = append(ks, testKey(b, "k"+string(rune('a'+i%26))+string(rune('a'+i/26%26))+string(rune('a'+i/676)), testNow.Add(time.Hour)))
	}
	r := testRing(b, ks...)
	for _, bc := range []struct {
		name, secret string
		want         Verdict
	}{
		{"found", "en_kaaa", Found}, {"grace", "en_kaaa_old0", Found}, {"unknown", "en_nope", Unknown},
	} {
		if _, v := r.Lookup(bc.secret, testNow); v != bc.want {
			b.Fatalf("Lookup(%q) = %v", bc.secret, v)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r.Lookup(bc.secret, testNow)
			}
		})
	}
}

// At start an edge reads KEYS and BALANCES side by side: a key's balance can
// arrive before the key. It must still apply, or the key would start this
// edge with its full limits whatever it had spent.
func TestBalanceThatArrivesBeforeItsKeyApplies(t *testing.T) {
	id := limits.ID{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_DAY}
	k := testKey(t, "k1")
	k.Limits = []*eventsv1.Limit{{Metric: id.Metric, Interval: id.Interval, Amount: 10}}
	at := testNow.Add(-time.Minute)
	balance := func(level int64, updated time.Time) *eventsv1.KeyBalance {
		return &eventsv1.KeyBalance{KeyId: "k1", UpdatedAt: timestamppb.New(updated),
			Limits: []*eventsv1.LimitBalance{{Metric: id.Metric, Interval: id.Interval, Level: level, At: timestamppb.New(at)}}}
	}
	r := New(testPepper, slog.New(slog.DiscardHandler))
	r.ApplyBalance(balance(0, testNow), "edge-1", 7)
	r.ApplyBalance(balance(5, testNow.Add(time.Second)), "edge-1", 6) // an older revision: ignored, whatever its clock says
	r.Apply(k)

	e, ok := r.Get("k1")
	if !ok {
		t.Fatal("key not loaded")
	}
	e.State.Mu.Lock()
	defer e.State.Mu.Unlock()
	if st, _ := e.State.Limits.State(id); st.Level != 0 || !st.At.Equal(at) {
		t.Fatalf("limit state %+v, want level 0 at %v (the newer balance)", st, at)
	}
	if _, denial := e.State.Limits.Reserve(limits.Usage{Requests: 1}, testNow); denial == nil {
		t.Fatal("a key whose balance is spent was let through")
	}
}

// Balances are ordered by their revision in the bucket, not by the clock of
// the metering worker that wrote them: when a partition moves to a worker
// whose clock is behind, its balances are newer all the same. Judged by
// UpdatedAt they were dropped until its clock caught up.
func TestBalanceOfAWorkerWithASlowClockApplies(t *testing.T) {
	id := limits.ID{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_DAY}
	k := testKey(t, "k1")
	k.Limits = []*eventsv1.Limit{{Metric: id.Metric, Interval: id.Interval, Amount: 10}}
	r := New(testPepper, slog.New(slog.DiscardHandler))
	r.Apply(k)
	at := testNow.Add(-time.Minute)
	balance := func(level int64, updated time.Time) *eventsv1.KeyBalance {
		return &eventsv1.KeyBalance{KeyId: "k1", UpdatedAt: timestamppb.New(updated),
			Limits: []*eventsv1.LimitBalance{{Metric: id.Metric, Interval: id.Interval, Level: level, At: timestamppb.New(at)}}}
	}
	r.ApplyBalance(balance(8, testNow), "edge-1", 3)                      // the old worker
	r.ApplyBalance(balance(2, testNow.Add(-10*time.Second)), "edge-1", 4) // the new one, its clock 10 s behind
	r.ApplyBalance(balance(8, testNow), "edge-1", 3)                      // the old one delivered again: ignored
	e, _ := r.Get("k1")
	e.State.Mu.Lock()
	defer e.State.Mu.Unlock()
	if st, _ := e.State.Limits.State(id); st.Level != 2 {
		t.Fatalf("limit level %d, want 2 (the balance of revision 4)", st.Level)
	}
}

// A balance folded under the key's limits before a change this edge has
// applied does not describe the new limits: a rolling bucket's state read
// as a calendar window shows the whole day unspent. Its states are not
// taken until a balance folded under the new limits comes.
func TestBalanceOfAnOlderConfigurationKeepsTheNewLimits(t *testing.T) {
	id, rule := requestsPerDay()
	r, k := requestsPerDayRing(t, eventsv1.Window_WINDOW_ROLLING, 1)
	spent := func(configRev uint64) *eventsv1.KeyBalance { // the day's 10 requests spent, as a rolling bucket
		return &eventsv1.KeyBalance{KeyId: "k1", ConfigRev: configRev, UpdatedAt: timestamppb.New(testNow),
			Limits: []*eventsv1.LimitBalance{{Metric: id.Metric, Interval: id.Interval, Level: 0, At: timestamppb.New(testNow)}}}
	}
	r.ApplyBalance(spent(1), "edge-1", 1)
	canReserve := func() bool {
		e, _ := r.Get("k1")
		e.State.Mu.Lock()
		defer e.State.Mu.Unlock()
		res, denial := e.State.Limits.Reserve(limits.Usage{Requests: 1}, testNow)
		if denial == nil {
			e.State.Limits.Settle(res, limits.Usage{}, testNow)
		}
		return denial == nil
	}
	if canReserve() {
		t.Fatal("a spent key was let through")
	}

	// The limit becomes a calendar one (KEYS sequence 5); what was used
	// carries over. Then a balance folded under sequence 1 arrives (an event
	// from before the change): rolling-shaped, Used 0.
	k2 := proto.Clone(k).(*eventsv1.Key)
	k2.Limits = rule(eventsv1.Window_WINDOW_CALENDAR)
	k2.UpdatedAt = timestamppb.New(testNow)
	r.ApplyAt(k2, 5)
	if canReserve() {
		t.Fatal("after the change to a calendar window, the spent day was let through")
	}
	r.ApplyBalance(spent(1), "edge-1", 2)
	if canReserve() {
		t.Fatal("a balance of the older configuration reset the calendar window: the spent day was let through")
	}
	// A balance folded under the new limits is taken.
	r.ApplyBalance(&eventsv1.KeyBalance{KeyId: "k1", ConfigRev: 5, UpdatedAt: timestamppb.New(testNow),
		Limits: []*eventsv1.LimitBalance{{Metric: id.Metric, Interval: id.Interval, Used: 3, At: timestamppb.New(testNow.Truncate(24 * time.Hour))}}}, "edge-1", 3)
	if !canReserve() {
		t.Fatal("the current configuration's balance (3 of 10 used) was not taken")
	}
}

// A balance without one of the key's limits (metering has not seen the
// limit yet, or not the key) leaves that limit's state alone: it holds this
// edge's unfolded usage already, which was charged again on each such
// balance.
func TestBalanceWithoutALimitDoesNotChargeItAgain(t *testing.T) {
	reqs := limits.ID{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_DAY}
	toks := limits.ID{Metric: eventsv1.Metric_METRIC_TOKENS, Interval: eventsv1.Interval_INTERVAL_DAY}
	k := testKey(t, "k1")
	k.Limits = []*eventsv1.Limit{
		{Metric: reqs.Metric, Interval: reqs.Interval, Amount: 10, Window: eventsv1.Window_WINDOW_CALENDAR},
		{Metric: toks.Metric, Interval: toks.Interval, Amount: 1000, Window: eventsv1.Window_WINDOW_CALENDAR},
	}
	r := New(testPepper, slog.New(slog.DiscardHandler))
	r.Apply(k)
	e, _ := r.Get("k1")
	used := limits.Usage{Requests: 1, InputTokens: 60, OutputTokens: 40}
	e.State.Mu.Lock()
	e.State.Limits.Debit(used, testNow)
	e.State.Spent(1, testNow, used) // not folded yet
	e.State.Mu.Unlock()
	day := timestamppb.New(testNow.UTC().Truncate(24 * time.Hour))
	for rev := uint64(1); rev <= 3; rev++ {
		r.ApplyBalance(&eventsv1.KeyBalance{KeyId: "k1", UpdatedAt: timestamppb.New(testNow),
			Limits: []*eventsv1.LimitBalance{{Metric: reqs.Metric, Interval: reqs.Interval, Used: 2, At: day}}}, "edge-1", rev)
	}
	e.State.Mu.Lock()
	defer e.State.Mu.Unlock()
	if st, _ := e.State.Limits.State(toks); st.Used != 100 {
		t.Errorf("tokens used %d, want 100 (this edge's request, once)", st.Used)
	}
	if st, _ := e.State.Limits.State(reqs); st.Used != 3 {
		t.Errorf("requests used %d, want 3 (the balance's 2 and this edge's unfolded 1)", st.Used)
	}
}

// A balance folded under a key event this edge has not read yet describes
// limits it does not have: it waits for that event, then applies.
func TestBalanceAheadOfTheKeyWaitsForIt(t *testing.T) {
	id, rule := requestsPerDay()
	r, k := requestsPerDayRing(t, eventsv1.Window_WINDOW_CALENDAR, 3)
	e, _ := r.Get("k1")
	e.State.Mu.Lock()
	e.State.Limits.Debit(limits.Usage{Requests: 10}, testNow) // the day spent
	e.State.Mu.Unlock()
	state := func() limits.State {
		e, _ := r.Get("k1")
		e.State.Mu.Lock()
		defer e.State.Mu.Unlock()
		st, _ := e.State.Limits.State(id)
		return st
	}
	// Metering folded under sequence 5 (the limit made rolling), which this
	// edge has not read: a rolling state, Used 0, full bucket.
	ahead := &eventsv1.KeyBalance{KeyId: "k1", ConfigRev: 5, UpdatedAt: timestamppb.New(testNow),
		Limits: []*eventsv1.LimitBalance{{Metric: id.Metric, Interval: id.Interval, Level: 7, At: timestamppb.New(testNow)}}}
	r.ApplyBalance(ahead, "edge-1", 1)
	if st := state(); st.Used != 10 || st.Level != 0 {
		t.Fatalf("state %+v after a balance ahead of the key, want the calendar day's 10 used, untouched", st)
	}
	k2 := proto.Clone(k).(*eventsv1.Key)
	k2.Limits = rule(eventsv1.Window_WINDOW_ROLLING)
	k2.UpdatedAt = timestamppb.New(testNow)
	r.ApplyAt(k2, 5)
	if st := state(); st.Level != 7 {
		t.Fatalf("state %+v once the key event came, want the held balance's level 7", st)
	}
}

// requestsPerDay is the limit ID of 10 requests a day, and its rule in a
// window of the given kind.
func requestsPerDay() (limits.ID, func(eventsv1.Window) []*eventsv1.Limit) {
	id := limits.ID{Metric: eventsv1.Metric_METRIC_REQUESTS, Interval: eventsv1.Interval_INTERVAL_DAY}
	return id, func(w eventsv1.Window) []*eventsv1.Limit {
		return []*eventsv1.Limit{{Metric: id.Metric, Interval: id.Interval, Amount: 10, Window: w}}
	}
}

// requestsPerDayRing is a ring holding key k1 with 10 requests a day in a
// window of kind w, applied at KEYS sequence seq.
func requestsPerDayRing(t *testing.T, w eventsv1.Window, seq uint64) (*Ring, *eventsv1.Key) {
	_, rule := requestsPerDay()
	k := testKey(t, "k1")
	k.Limits = rule(w)
	r := New(testPepper, slog.New(slog.DiscardHandler))
	r.ApplyAt(k, seq)
	return r, k
}
