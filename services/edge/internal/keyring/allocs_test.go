//go:build !race

// Under the race detector sync.Pool drops some of what is put back, on
// purpose, so a pooled hasher is sometimes allocated anew: allocation counts
// are measured without it.

package keyring

import (
	"testing"
	"time"
)

func TestLookupDoesNotAllocate(t *testing.T) {
	r := testRing(t, testKey(t, "k1", testNow.Add(time.Minute)))
	for _, secret := range []string{"en_k1", "en_k1_old0", "en_nope"} {
		if n := testing.AllocsPerRun(1000, func() { r.Lookup(secret, testNow) }); n != 0 {
			t.Errorf("Lookup(%q): %v allocations", secret, n)
		}
	}
}
