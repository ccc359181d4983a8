package h1

import "io"

// Coalesce decides when a proxy that copies a streamed answer, read by read,
// flushes what it has written to its client: after every read, unless more
// of the answer has already arrived from the upstream (the body's Arrived,
// which this package's Transport gives). What came in together then goes out
// together, in one write instead of one per read: on loopback or a fast
// network each write costs the proxy about as much as the rest of its work
// on the read.
//
// Nothing is held waiting for bytes that have not arrived, and at most
// MaxReads reads or MaxBytes bytes are held back at a time. With a body that
// cannot tell (another transport's), every read is flushed.
type Coalesce struct {
	more  interface{ Arrived() bool }
	held  int // bytes written and not flushed
	reads int // reads in them
}

// The most that Coalesce holds back before it flushes anyway.
const (
	MaxReads = 16
	MaxBytes = 32 << 10
)

// NewCoalesce returns the rule for copying body, an upstream's answer.
func NewCoalesce(body io.Reader) Coalesce {
	more, _ := body.(interface{ Arrived() bool })
	return Coalesce{more: more}
}

// Wrote records that n bytes of one read were written to the client.
func (c *Coalesce) Wrote(n int) {
	if n > 0 {
		c.held += n
		c.reads++
	}
}

// FlushNow reports whether what was written should be flushed now, before
// the next read; when it says so, the bytes count as flushed. It costs at
// most one non-blocking peek at the upstream's socket.
func (c *Coalesce) FlushNow() bool {
	if c.held == 0 {
		return false
	}
	if c.more != nil && c.reads < MaxReads && c.held < MaxBytes && c.more.Arrived() {
		return false
	}
	c.held, c.reads = 0, 0
	return true
}
