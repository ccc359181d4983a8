package keyring

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/tollgate/tollgate/gen/tollgate/events/v1"
	"github.com/tollgate/tollgate/pkg/bus"
	"github.com/tollgate/tollgate/pkg/limits"
)

// An edge's view of a key's limits is "the authoritative balance from
// metering, minus what this edge spent that metering has not folded yet"
// (DESIGN.md section 5). pending holds that unfolded spend.

type pendingUsage struct {
	seq   uint64
	at    time.Time
	usage limits.Usage
}

// Spent records usage this edge settled and published as seq, so that it
// can be subtracted from authoritative balances until metering folds it.
// Call it with st.Mu held.
func (st *KeyState) Spent(seq uint64, at time.Time, u limits.Usage) {
	if st.folded.Seen(seq) {
		return // metering was faster than us
	}
	st.pending = append(st.pending, pendingUsage{seq: seq, at: at, usage: u})
}

// Folded reports whether metering's last balance applied here already
// holds this edge's event seq; st.Mu is held.
func (st *KeyState) Folded(seq uint64) bool { return st.folded.Seen(seq) }

// progress mirrors metering's fold.Progress for this edge's partition.
type progress struct {
	watermark uint64
	above     []uint64
}

func (p *progress) Seen(seq uint64) bool {
	if seq <= p.watermark {
		return true
	}
	_, ok := slices.BinarySearch(p.above, seq)
	return ok
}

// ApplyBalance replaces a key's limit states with metering's and subtracts
// this edge's (instance's) usage that the balance does not include yet.
// Reservations of requests in flight are kept.
//
// A balance that arrives before its key (KEYS and BALANCES are read side by
// side at start) is kept and applied when the key arrives: dropped, the key
// would start this edge with full limits, whatever it had spent.
//
// rev is the balance's revision in the BALANCES bucket, which orders one
// key's balances whichever metering worker wrote them; their UpdatedAt is
// that worker's clock, and clocks of two workers (a partition that moved)
// can disagree.
func (r *Ring) ApplyBalance(kb *eventsv1.KeyBalance, instance string, rev uint64) {
	r.mu.Lock()
	e, ok := r.byID[kb.GetKeyId()]
	if !ok {
		if prev, had := r.early[kb.GetKeyId()]; !had || rev > prev.rev {
			r.early[kb.GetKeyId()] = earlyBalance{kb: kb, instance: instance, rev: rev}
		}
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	applyBalance(e.State, kb, instance, rev)
}

// earlyBalance is a balance that came before its key (Ring.early).
type earlyBalance struct {
	kb       *eventsv1.KeyBalance
	instance string
	rev      uint64
}

func applyBalance(st *KeyState, kb *eventsv1.KeyBalance, instance string, rev uint64) {
	st.Mu.Lock()
	defer st.Mu.Unlock()
	if rev <= st.balanceRev {
		return // this balance, or an older one than one already applied
	}
	if st.keyRev != 0 && kb.GetConfigRev() > st.keyRev {
		if st.ahead == nil || rev > st.ahead.rev {
			st.ahead = &earlyBalance{kb: kb, instance: instance, rev: rev}
		}
		return // until this edge has the key event it was folded under (ApplyAt)
	}
	if st.ahead != nil && st.ahead.rev < rev {
		st.ahead = nil // this one is newer
	}
	st.balanceRev = rev
	for _, f := range kb.GetFolded() {
		if f.GetEdgeInstance() == instance && f.GetWatermark() >= st.folded.watermark {
			st.folded = progress{watermark: f.GetWatermark(), above: f.GetAbove()}
		}
	}
	// Folded under the limits this edge has: its states replace the local
	// ones, and this edge's usage it does not include is charged again on
	// them. Folded under limits changed since: the local states stay (they
	// hold this edge's usage already) until a balance of the current limits
	// comes, and only the folded usage leaves pending. Likewise a limit the
	// balance lacks (metering has not seen the key, or the limit is newer)
	// keeps its state and is not charged again.
	var replaced []limits.ID
	if kb.GetConfigRev() >= st.limitsRev {
		for _, lb := range kb.GetLimits() {
			id := limits.ID{Metric: lb.GetMetric(), Interval: lb.GetInterval()}
			if st.Limits.SetState(id, limits.State{Level: lb.GetLevel(), Used: lb.GetUsed(), At: lb.GetAt().AsTime()}) {
				replaced = append(replaced, id)
			}
		}
	}
	keep := st.pending[:0]
	for _, p := range st.pending {
		if st.folded.Seen(p.seq) {
			continue
		}
		keep = append(keep, p)
		for _, id := range replaced {
			st.Limits.DebitLimit(id, p.usage, p.at)
		}
	}
	clear(st.pending[len(keep):])
	st.pending = keep
}

// WatchBalances applies every balance metering publishes until ctx ends.
func (r *Ring) WatchBalances(ctx context.Context, js jetstream.JetStream, instance string) error {
	kv, err := bus.EnsureBalances(ctx, js, bus.StreamOptions{})
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", bus.BalancesBucket, err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watch %s: closed", bus.BalancesBucket)
			}
			if e == nil { // the balances that existed at start are all in
				closeOnce(r.balancesReady)
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				continue
			}
			kb := new(eventsv1.KeyBalance)
			if err := proto.Unmarshal(e.Value(), kb); err != nil {
				r.log.Error("balances: undecodable balance skipped", "key", e.Key(), "err", err)
				continue
			}
			r.ApplyBalance(kb, instance, e.Revision())
		}
	}
}
