package h1

import (
	"io"
	"strings"
	"testing"
)

// arrivedBody is a body whose Arrived answers what the test says.
type arrivedBody struct {
	io.Reader
	arrived bool
	asked   int
}

func (b *arrivedBody) Arrived() bool { b.asked++; return b.arrived }

func TestCoalesce(t *testing.T) {
	t.Run("a body that cannot tell: every read is flushed", func(t *testing.T) {
		c := NewCoalesce(strings.NewReader("x"))
		for range 3 {
			c.Wrote(10)
			if !c.FlushNow() {
				t.Fatal("held back a read with no way to know whether more came")
			}
		}
	})
	t.Run("nothing written: nothing to flush, and no peek", func(t *testing.T) {
		b := &arrivedBody{}
		c := NewCoalesce(b)
		c.Wrote(0) // a read the usage filter held back whole
		if c.FlushNow() || b.asked != 0 {
			t.Fatalf("flush %v after nothing was written, %d peeks", c.FlushNow(), b.asked)
		}
	})
	t.Run("held while more has arrived, flushed when nothing has", func(t *testing.T) {
		b := &arrivedBody{arrived: true}
		c := NewCoalesce(b)
		c.Wrote(100)
		if c.FlushNow() {
			t.Fatal("flushed though more had already arrived")
		}
		c.Wrote(100)
		b.arrived = false
		if !c.FlushNow() {
			t.Fatal("held back with nothing more arrived")
		}
		if c.FlushNow() {
			t.Fatal("flushed again with nothing new written")
		}
	})
	limits := []struct {
		name         string
		n, wantReads int
	}{
		{"at most MaxReads reads", 1, MaxReads},
		{"at most MaxBytes bytes", MaxBytes / 4, 4},
		{"a read over MaxBytes alone", MaxBytes + 1, 1},
	}
	for _, tc := range limits {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCoalesce(&arrivedBody{arrived: true})
			for reads := 1; ; reads++ {
				c.Wrote(tc.n)
				if c.FlushNow() {
					if reads != tc.wantReads {
						t.Fatalf("flushed after %d reads of %d bytes, want %d", reads, tc.n, tc.wantReads)
					}
					return
				}
				if reads > MaxReads {
					t.Fatal("never flushed while more kept arriving")
				}
			}
		})
	}
}
